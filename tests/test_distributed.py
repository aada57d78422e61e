"""RecBole's DDP path on CPU (gloo): two processes against one."""

import json
import socket

import pytest

from recbole_lpo.quick_start import run, run_recbole_lpo

from conftest import TINY_YAML


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("model", ["LPO4Rec"])
def test_two_cpu_processes_match_one(model, workdir, tiny_config):
    config = tiny_config(epochs=2, train_batch_size=32)
    single = run_recbole_lpo(model, "tiny", [TINY_YAML], dict(config), saved=True)
    double = run(model, "tiny", [TINY_YAML], dict(config), saved=True, nproc=2, port=_free_port())
    assert double is not None, "rank 0 returned no result"
    record = json.load(open(double["result_file"]))
    # every test user evaluated exactly once, whatever process held them
    assert len(record["per_user"]["user"]) == len(set(record["per_user"]["user"])) == 120
    ranks = record["per_user"]["rank"]
    assert sum(r <= 10 for r in ranks) / 120 == pytest.approx(double["test_result"]["hit@10"], abs=1e-4)
    # two processes of batch 32 take the same number of optimizer steps' worth of data as
    # one process of batch 32 -- not the same trajectory, so compare within noise
    for key in ("hit@10", "ndcg@10"):
        assert abs(double["test_result"][key] - single["test_result"][key]) < 0.1, key
