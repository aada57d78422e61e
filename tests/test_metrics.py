"""Tail metrics against a brute-force numpy reference on random scores."""

import math

import numpy as np
import pytest
import torch
from recbole.evaluator import Collector, Evaluator

TOPK = [1, 5, 10]
N_USERS, N_ITEMS = 300, 80


def _config(metrics):
    return {
        "metrics": metrics, "topk": TOPK, "device": torch.device("cpu"), "tail_ratio": 0.2,
        "eval_args": {"mode": {"valid": "full", "test": "full"}}, "metric_decimal_place": 12,
    }


def _collect(metrics, scores, positive_u, positive_i, tail_mask, train_counts=None):
    config = _config(metrics)
    collector = Collector(config)
    collector.tail_mask = tail_mask
    if train_counts is not None:
        collector.data_struct.set("data.train_item_counts", train_counts)
    collector.data_struct.set("data.tail_items", tail_mask)
    # two batches, as the trainer would feed them
    half = N_USERS // 2
    for rows in (slice(0, half), slice(half, N_USERS)):
        in_batch = (positive_u >= rows.start) & (positive_u < rows.stop)
        collector.eval_batch_collect(scores[rows], None, positive_u[in_batch] - rows.start, positive_i[in_batch])
    return Evaluator(config).evaluate(collector.get_data_struct())


def _random_case(seed, positives_per_user=1):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(N_USERS, N_ITEMS, generator=gen)
    scores[:, 0] = -math.inf
    tail_mask = torch.zeros(N_ITEMS, dtype=torch.bool)
    tail_mask[torch.randperm(N_ITEMS - 1, generator=gen)[:16] + 1] = True
    users, items = [], []
    for u in range(N_USERS):
        chosen = torch.randperm(N_ITEMS - 1, generator=gen)[:positives_per_user] + 1
        users += [u] * positives_per_user
        items += chosen.tolist()
    return scores, torch.tensor(users), torch.tensor(items), tail_mask


def _brute_force(scores, positive_u, positive_i, tail_mask):
    """Per-user tail Hit/NDCG/Recall/MRR@k by sorting each row in numpy."""
    values = {name: {k: [] for k in TOPK} for name in ("tailhit", "tailndcg", "tailrecall", "tailmrr")}
    s = scores.numpy()
    for u in range(N_USERS):
        tail_pos = [i for uu, i in zip(positive_u.tolist(), positive_i.tolist()) if uu == u and tail_mask[i]]
        if not tail_pos:
            continue
        ranking = list(np.argsort(-s[u], kind="stable"))
        ranks = sorted(ranking.index(i) + 1 for i in tail_pos)
        for k in TOPK:
            inside = [r for r in ranks if r <= k]
            values["tailhit"][k].append(1.0 if inside else 0.0)
            values["tailrecall"][k].append(len(inside) / len(tail_pos))
            values["tailmrr"][k].append(1.0 / inside[0] if inside else 0.0)
            dcg = sum(1 / math.log2(r + 1) for r in inside)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(tail_pos), k) + 1))
            values["tailndcg"][k].append(dcg / idcg)
    return {f"{name}@{k}": float(np.mean(v[k])) for name, v in values.items() for k in TOPK}


@pytest.mark.parametrize("seed,positives", [(0, 1), (1, 1), (2, 3)])
def test_tail_metrics_match_brute_force(seed, positives):
    scores, positive_u, positive_i, tail_mask = _random_case(seed, positives)
    result = _collect(["TailHit", "TailNDCG", "TailRecall", "TailMRR"], scores, positive_u, positive_i, tail_mask)
    expected = _brute_force(scores, positive_u, positive_i, tail_mask)
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    # not a vacuous comparison: some tail users hit, some miss
    assert 0 < result["tailhit@10"] < 1


def test_tail_metrics_equal_overall_metrics_on_tail_users():
    scores, positive_u, positive_i, tail_mask = _random_case(3)
    tail = tail_mask[positive_i]
    tail_result = _collect(["TailHit", "TailNDCG"], scores, positive_u, positive_i, tail_mask)
    rows = positive_u[tail]
    assert 10 < len(rows) < N_USERS
    config = _config(["Hit", "NDCG"])
    collector = Collector(config)
    collector.eval_batch_collect(scores[rows], None, torch.arange(len(rows)), positive_i[tail])
    overall = Evaluator(config).evaluate(collector.get_data_struct())
    for k in TOPK:
        assert tail_result[f"tailhit@{k}"] == pytest.approx(overall[f"hit@{k}"], abs=1e-12)
        assert tail_result[f"tailndcg@{k}"] == pytest.approx(overall[f"ndcg@{k}"], abs=1e-12)


def test_no_tail_user_gives_zero_not_nan():
    scores, positive_u, positive_i, tail_mask = _random_case(4)
    result = _collect(["TailHit"], scores, positive_u, positive_i, torch.zeros_like(tail_mask))
    assert result == {f"tailhit@{k}": 0.0 for k in TOPK}


def test_tail_item_share_and_train_popularity_brute_force():
    scores, positive_u, positive_i, tail_mask = _random_case(5)
    counts = torch.tensor([0] + [(i * 7) % 23 for i in range(1, N_ITEMS)])
    result = _collect(["TailItemShare", "AvgTrainPopularity"], scores, positive_u, positive_i, tail_mask, counts)
    top = torch.topk(scores, max(TOPK), dim=1).indices.numpy()
    assert set(result) == {f"{name}@{k}" for name in ("tailitemshare", "avgtrainpopularity") for k in TOPK}
    for k in TOPK:
        share = np.mean([np.mean([bool(tail_mask[i]) for i in top[u, :k]]) for u in range(N_USERS)])
        pop = np.mean([np.mean([int(counts[i]) for i in top[u, :k]]) for u in range(N_USERS)])
        assert result[f"tailitemshare@{k}"] == pytest.approx(share, abs=1e-9)
        assert result[f"avgtrainpopularity@{k}"] == pytest.approx(pop, abs=1e-9)
    assert 0 < result["tailitemshare@10"] < 1 and result["avgtrainpopularity@10"] > 0


def test_counter_resource_no_longer_crashes_collector():
    from collections import Counter

    collector = Collector(_config(["AveragePopularity"]))
    collector.data_struct.set("data.count_items", Counter({1: 3, 2: 1}))
    struct = collector.get_data_struct()  # RecBole 1.2.1: 'Counter' object has no attribute 'cpu'
    assert struct.get("data.count_items")[1] == 3
