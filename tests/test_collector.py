"""The collector's one-top-k path gives RecBole's own rec.items and rec.topk, tensor for tensor."""

import pytest
import torch
from recbole.evaluator import Collector

from recbole_lpo.evaluation.collector import _ORIGINAL


def _config(metrics):
    return {"metrics": metrics, "topk": [1, 5, 10], "device": torch.device("cpu"), "tail_ratio": 0.2,
            "eval_args": {"mode": {"valid": "full", "test": "full"}}, "metric_decimal_place": 12}


def _case(seed, n_users=60, n_items=40):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (n_users, n_items), generator=gen).float()  # many ties
    scores[:, 0] = -torch.inf
    users = torch.randint(0, n_users, (150,), generator=gen)  # 0 to several positives per user
    items = torch.randint(1, n_items, (150,), generator=gen)
    users, items = torch.cat([users, users[:10]]), torch.cat([items, items[:10]])  # repeated pairs
    return scores, users, items


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_topk_path_equals_recbole(seed):
    scores, users, items = _case(seed)
    ours = Collector(_config(["Hit", "NDCG", "ItemCoverage", "TailHit"]))
    ours.tail_mask = torch.zeros(scores.shape[1], dtype=torch.bool)
    ours.tail_mask[-8:] = True
    ours.eval_batch_collect(scores, None, users, items)
    theirs = Collector(_config(["Hit", "NDCG", "ItemCoverage"]))
    _ORIGINAL["eval_batch_collect"](theirs, scores, None, users, items)
    for key in ("rec.items", "rec.topk"):
        mine, reference = ours.data_struct.get(key), theirs.data_struct.get(key)
        assert mine.dtype == reference.dtype and torch.equal(mine, reference), key
    tail = ours.data_struct.get("rec.tail_topk")
    assert tail.shape == (scores.shape[0], 11) and tail[:, -1].sum() > 0


def test_other_keys_still_use_recbole():
    scores, users, items = _case(3)
    collector = Collector(_config(["Hit", "GAUC"]))  # GAUC needs rec.meanrank
    collector.eval_batch_collect(scores, None, users, items)
    assert collector.data_struct.get("rec.meanrank").shape == (scores.shape[0], 3)
    assert collector.data_struct.get("rec.topk").shape == (scores.shape[0], 11)
