"""One grid run in its own process: ``python -m recbole_lpo.reproduce.worker PAYLOAD_JSON``.

Trains through ``run_recbole_lpo``, then moves the result JSON into the cache
under the run's key with the grid spec added (``reproduce``).
"""

import json
import os
import shutil
import sys

import torch

from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.reproduce.cache import RunCache


def main(payload):
    torch.set_num_threads(payload["threads"])
    result = run_recbole_lpo(payload["model"], payload["dataset"], config_file_list=payload["config_files"] or None,
                             config_dict=payload["config_dict"], saved=True)
    with open(result["result_file"], encoding="utf-8") as f:
        record = json.load(f)
    record["reproduce"] = payload["spec"]
    cache = RunCache(payload["cache_root"])
    cache.put(payload["key"], record)
    shutil.rmtree(os.path.dirname(result["result_file"]), ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
