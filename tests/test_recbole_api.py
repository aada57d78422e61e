"""RecBole's own API is untouched by ``import recbole_lpo``: its metric registry, its popularity
metrics' numbers, the collector resources they read; RecBole's own Config works with the plugin's metrics."""

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from recbole.evaluator import Collector, Evaluator, register
from recbole.evaluator import metrics as recbole_metrics
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

from recbole_lpo.data.head_tail import default_tail_ratio, head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.evaluation import metrics as lpo_metrics

from conftest import TINY_YAML

TOPK = [1, 3, 5]
# hand-made evaluation: 6 users' top-5 lists over items 1..9; RecBole's item_counter leaves
# out never-seen items (7, 9), which its TailPercentage therefore never counts as tail
REC_ITEMS = [[1, 2, 3, 4, 5], [9, 7, 5, 3, 1], [2, 4, 6, 8, 1], [8, 6, 3, 9, 2], [5, 6, 1, 7, 4], [3, 8, 2, 6, 9]]
COUNT_ITEMS = {1: 12, 2: 7, 3: 1, 4: 4, 5: 2, 6: 1, 8: 3}

# RecBole's TailPercentage and AveragePopularity computed by RecBole alone: no recbole_lpo imported
RECBOLE_ALONE = """
import json, sys
from collections import Counter
import torch
from recbole.evaluator import metrics
from recbole.evaluator.collector import DataStruct

items, counts, topk, tail_ratios = json.loads(sys.argv[1])
data = DataStruct()
data.set("rec.items", torch.tensor(items))
data.set("data.count_items", Counter({int(i): c for i, c in counts.items()}))
results = []
for tail_ratio in tail_ratios:
    config = {"topk": topk, "metric_decimal_place": 12, "tail_ratio": tail_ratio}
    results.append({})
    for metric in (metrics.TailPercentage, metrics.AveragePopularity):
        results[-1].update({key: float(value) for key, value in metric(config).calculate_metric(data).items()})
assert "recbole_lpo" not in sys.modules
print(json.dumps(results))
"""
TAIL_RATIOS = [0.3, 3, None]  # a share, RecBole's count threshold, RecBole's default (0.1)


@pytest.fixture(scope="module")
def recbole_alone():
    """{tail_ratio: RecBole's own results} on the hand-made evaluation, from a process without the plugin."""
    arg = json.dumps([REC_ITEMS, COUNT_ITEMS, TOPK, TAIL_RATIOS])
    out = subprocess.run([sys.executable, "-c", RECBOLE_ALONE, arg], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(zip(TAIL_RATIOS, json.loads(out.stdout)))


class _TrainData:
    """What RecBole's ``Collector.data_collect`` reads of a training loader."""

    class dataset:
        item_counter = Counter(COUNT_ITEMS)


def _scores_ranking(items, n_items=10):
    """Scores whose top-k lists are ``items``."""
    scores = torch.zeros(len(items), n_items)
    for u, row in enumerate(items):
        scores[u, row] = 100.0 - torch.arange(len(row), dtype=torch.float)
    return scores


def test_recbole_registry_holds_recbole_classes():
    smaller, info, types, classes = register.cluster_info(recbole_metrics.__name__)
    for name, metric_class in classes.items():  # every RecBole metric, exactly as RecBole registers it
        assert register.metrics_dict[name] is metric_class, name
        assert register.metric_information[name] == metric_class.metric_need, name
        assert register.metric_types[name] == metric_class.metric_type, name
    assert set(smaller) <= set(register.smaller_metrics)
    assert register.metrics_dict["tailpercentage"] is recbole_metrics.TailPercentage
    assert register.metrics_dict["averagepopularity"] is recbole_metrics.AveragePopularity
    assert register.metric_information["averagepopularity"] == ["rec.items", "data.count_items"]
    # the plugin's metrics are new names only
    ours = {cls.__name__.lower() for cls in lpo_metrics.PLUGIN_METRICS}
    assert ours == {"tailhit", "tailndcg", "tailrecall", "tailmrr", "tailprecision", "tailitemshare",
                    "avgtrainpopularity"}
    assert not ours & set(classes)
    assert all(register.metrics_dict[name] in lpo_metrics.PLUGIN_METRICS for name in ours)
    assert "avgtrainpopularity" in register.smaller_metrics


def test_registering_over_a_recbole_name_is_refused(monkeypatch):
    class Hit(AbstractMetric):
        metric_type = EvaluatorType.RANKING
        metric_need = ["rec.items"]

    monkeypatch.setattr(lpo_metrics, "PLUGIN_METRICS", (Hit,))
    with pytest.raises(RuntimeError, match="'hit' is RecBole's own"):
        lpo_metrics.register_metrics()
    assert register.metrics_dict["hit"] is recbole_metrics.Hit


@pytest.mark.parametrize("tail_ratio", TAIL_RATIOS)
def test_recbole_popularity_metrics_give_recbole_numbers(tail_ratio, recbole_alone):
    """Through the plugin's collector (data_collect, one-top-k batches, get_data_struct) and RecBole's
    Evaluator, RecBole's TailPercentage and AveragePopularity equal RecBole's classes run without the plugin."""
    config = {"metrics": ["TailPercentage", "AveragePopularity", "Hit"], "topk": TOPK, "device": torch.device("cpu"),
              "tail_ratio": tail_ratio, "eval_args": {"mode": {"valid": "full", "test": "full"}},
              "metric_decimal_place": 12}
    collector = Collector(config)
    collector.data_collect(_TrainData())
    assert collector.data_struct.get("data.count_items") == Counter(COUNT_ITEMS)  # RecBole's own resource
    scores = _scores_ranking(REC_ITEMS)
    for rows in (slice(0, 4), slice(4, 6)):  # two batches
        n = rows.stop - rows.start
        collector.eval_batch_collect(scores[rows], None, torch.arange(n), torch.ones(n, dtype=torch.long))
    struct = collector.get_data_struct()  # RecBole 1.2.1 alone crashes here (Counter.cpu())
    assert struct.get("rec.items").tolist() == REC_ITEMS
    result = Evaluator(config).evaluate(struct)
    expected = recbole_alone[tail_ratio]
    for key, value in expected.items():
        assert float(result[key]) == value, key
    # not vacuous: a hand check of AveragePopularity@3, and the tail rule in force changes the shares
    hand = np.mean([np.mean([COUNT_ITEMS.get(i, 0) for i in row[:3]]) for row in REC_ITEMS])
    assert float(result["averagepopularity@3"]) == pytest.approx(hand, abs=1e-12)
    assert 0 < expected["tailpercentage@5"] < 1


def test_recbole_tail_rules_differ_as_recbole_defines_them(recbole_alone):
    shares = {ratio: result["tailpercentage@5"] for ratio, result in recbole_alone.items()}
    assert len(set(shares.values())) == 3, shares


def _recbole_config(tiny_config, **overrides):
    from recbole.config import Config
    from recbole.model.sequential_recommender import GRU4Rec

    metrics = ["Hit", "NDCG", "TailHit", "TailItemShare", "AvgTrainPopularity", "TailPercentage", "AveragePopularity"]
    return Config(model=GRU4Rec, dataset="tiny", config_file_list=[TINY_YAML],
                  config_dict=tiny_config(metrics=metrics, **overrides))


def _fit_and_test(config):
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import GRU4Rec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    trainer = Trainer(config, GRU4Rec(config, train_data.dataset))
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    return trainer, train_data, trainer.evaluate(test_data, load_best_model=False, show_progress=False)


def test_recbole_config_without_tail_ratio_gets_the_plugin_default(workdir, tiny_config):
    config = _recbole_config(tiny_config)
    assert config["tail_ratio"] is None  # RecBole's Config reads none of the plugin's YAML
    trainer, train_data, result = _fit_and_test(config)
    assert {"tailhit@10", "tailitemshare@10", "avgtrainpopularity@10", "tailpercentage@10",
            "averagepopularity@10"} <= set(result)
    assert default_tail_ratio() == 0.2
    split = head_tail_split(train_data.dataset)
    assert split.tail_ratio == 0.2 and split.n_tail == 12  # floor(0.2 * 60)
    # the collector holds RecBole's item_counter for RecBole's metrics and the plugin's counts for its own
    data = trainer.eval_collector.data_struct
    assert data.get("data.count_items") == train_data.dataset.item_counter
    assert np.array_equal(data.get("data.train_item_counts").numpy(), split.item_counts)
    assert torch.equal(data.get("data.tail_items"), split.tail_mask)
    # the two counts differ (item_counter misses each user's first item), and so do the two popularities
    recbole_counts = np.zeros_like(split.item_counts)
    for item, count in train_data.dataset.item_counter.items():
        recbole_counts[item] = count
    assert split.item_counts.sum() == recbole_counts.sum() + 120
    assert result["averagepopularity@10"] != result["avgtrainpopularity@10"]


def test_recbole_count_threshold_is_refused_by_plugin_metrics_in_one_line(workdir, tiny_config):
    config = _recbole_config(tiny_config, tail_ratio=3)
    with pytest.raises(UserInputError, match=r"tail_ratio=3: .*count threshold") as error:
        _fit_and_test(config)
    assert "\n" not in str(error.value)
