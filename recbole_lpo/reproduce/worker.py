"""One grid run in its own process: ``python -m recbole_lpo.reproduce.worker PAYLOAD_JSON``.

Trains through ``run_recbole_lpo``, ranks the best checkpoint's valid and test
users under the grid's tail score bonuses (``recbole_lpo.reproduce.bonus``,
one scoring pass), then moves the result JSON into the cache under the run's
key with the grid spec added (``reproduce``, with the wall seconds of the
training and of the ranking, and the torch threads: the cost the report sums).
A run with interrupted attempts before it also records their wall seconds, and
the checkpoint it resumed from (``runner.interrupted_checkpoint``) if any.
"""

import json
import os
import shutil
import sys
import time

import torch

from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.reproduce.bonus import save_records, score_checkpoint
from recbole_lpo.reproduce.cache import RunCache


def main(payload):
    torch.set_num_threads(payload["threads"])
    started = time.monotonic()
    result = run_recbole_lpo(payload["model"], payload["dataset"], config_file_list=payload["config_files"] or None,
                             config_dict=payload["config_dict"], saved=True, resume=payload.get("resume"))
    with open(result["result_file"], encoding="utf-8") as f:
        record = json.load(f)
    trained = time.monotonic()
    cache = RunCache(payload["cache_root"])
    bonus_path = cache.bonus_path(payload["key"])
    bonus_path.unlink(missing_ok=True)  # left by a worker killed before its run was cached
    save_records(bonus_path, *score_checkpoint(result["checkpoint"]))
    record["reproduce"] = dict(payload["spec"], threads=payload["threads"], train_seconds=round(trained - started, 1),
                               bonus_seconds=round(time.monotonic() - trained, 1))
    if payload.get("earlier_attempts_seconds"):  # interrupted attempts, resumed from or (no checkpoint yet) not
        record["reproduce"]["earlier_attempts_seconds"] = payload["earlier_attempts_seconds"]
    if payload.get("resume"):
        record["reproduce"]["resumed_from"] = os.path.basename(payload["resume"])
    cache.put(payload["key"], record)
    shutil.rmtree(os.path.dirname(result["result_file"]), ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
