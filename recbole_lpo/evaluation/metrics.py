"""Tail-item metrics as real RecBole metrics, under names of their own.

``TailHit``, ``TailNDCG``, ``TailRecall``, ``TailMRR`` and ``TailPrecision``
are RecBole's Hit/NDCG/Recall/MRR/Precision computed over the users whose
target is a tail item (METHOD.md "tail item performance"); with several
positives per user, only tail positives count as relevant and users without
one are left out. They read the collector resource ``rec.tail_topk`` (same
layout as RecBole's ``rec.topk``: top-k hit flags, then the number of
positives, both restricted to tail positives), so each equals its overall
twin evaluated on those users alone. Keys: ``tailhit@10``, ``tailndcg@10``...,
usable in ``metrics`` and as ``valid_metric``.

``TailItemShare`` (share of tail items in the top-k lists, on the shared
head/tail split, ``data.tail_items``) and ``AvgTrainPopularity`` (mean
training-split count of the top-k items, ``data.train_item_counts``) are the
plugin's counterparts of RecBole's ``TailPercentage`` and
``AveragePopularity``, which stay RecBole's: their own tail rule and
``item_counter`` counts (the augmented training targets, without each user's
first item). Registration only ADDS names to RecBole's metric registry, so
RecBole's Config, Evaluator and Trainer see them and RecBole's own metrics
are untouched.
"""

import numpy as np
import torch
from recbole.evaluator import metrics as recbole_metrics
from recbole.evaluator import register
from recbole.evaluator.base_metric import AbstractMetric, TopkMetric
from recbole.utils import EvaluatorType

from recbole_lpo.errors import UserInputError


class _TailTopkMetric(TopkMetric):
    metric_need = ["rec.tail_topk"]
    overall_metric = None  # RecBole metric whose ``metric_info`` is reused

    def __init__(self, config):
        super().__init__(config)
        self._overall = self.overall_metric(config)

    def used_info(self, dataobject):
        rec_mat = dataobject.get("rec.tail_topk")
        hits, n_tail_pos = torch.split(rec_mat, [max(self.topk), 1], dim=1)
        n_tail_pos = n_tail_pos.squeeze(-1)
        tail_users = n_tail_pos > 0
        return hits[tail_users].to(torch.bool).numpy(), n_tail_pos[tail_users].numpy()

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)
        name = type(self).__name__.lower()
        if len(pos_index) == 0:  # no user has a tail target
            return {f"{name}@{k}": 0.0 for k in self.topk}
        if self.overall_metric in (recbole_metrics.Recall, recbole_metrics.NDCG, recbole_metrics.MAP):
            result = self._overall.metric_info(pos_index, pos_len)
        else:
            result = self._overall.metric_info(pos_index)
        return self.topk_result(name, result)


class TailHit(_TailTopkMetric):
    """Hit@k over users whose target is a tail item."""

    overall_metric = recbole_metrics.Hit


class TailNDCG(_TailTopkMetric):
    """NDCG@k over users whose target is a tail item."""

    overall_metric = recbole_metrics.NDCG


class TailRecall(_TailTopkMetric):
    """Recall@k over users with a tail target (tail positives only)."""

    overall_metric = recbole_metrics.Recall


class TailMRR(_TailTopkMetric):
    """MRR@k over users whose target is a tail item."""

    overall_metric = recbole_metrics.MRR


class TailPrecision(_TailTopkMetric):
    """Precision@k over users whose target is a tail item."""

    overall_metric = recbole_metrics.Precision


class _TopkItemValueMetric(AbstractMetric):
    """Mean over users of the mean of an item value over each top-k list; the value per item
    (a [n_items] array) is the collector resource ``item_values``."""

    metric_type = EvaluatorType.RANKING
    item_values = None  # collector resource of the per-item values

    def __init__(self, config):
        super().__init__(config)
        self.topk = config["topk"]

    def calculate_metric(self, dataobject):
        item_matrix = dataobject.get("rec.items").numpy()
        values = dataobject.get(self.item_values).numpy()
        return _mean_at_k(type(self).__name__.lower(), values[item_matrix], self.topk, self.decimal_place)


class TailItemShare(_TopkItemValueMetric):
    """Share of tail items in the top-k lists, tail = the shared head/tail split.

    RecBole's TailPercentage formula (mean over users of the tail share of
    each top-k list) with the plugin's tail set (``tail_ratio`` share of items
    by training-split count, METHOD.md) instead of RecBole's own, vectorised.
    """

    item_values = "data.tail_items"
    metric_need = ["rec.items", item_values]


class AvgTrainPopularity(_TopkItemValueMetric):
    """Mean training-split count of the top-k items (RecBole's AveragePopularity formula).

    Counts are the shared split's (each user's interactions minus valid and
    test targets, first items included); RecBole's AveragePopularity reads
    ``item_counter``, which misses each user's first item.
    """

    smaller = True
    item_values = "data.train_item_counts"
    metric_need = ["rec.items", item_values]


def _mean_at_k(name, values, topk, decimal_place):
    """``{name@k: mean over users of the mean of the first k values}`` of a [users, max_k] array."""
    values = values.astype(np.float64)
    running_mean = values.cumsum(axis=1) / np.arange(1, values.shape[1] + 1)
    mean = running_mean.mean(axis=0)
    return {f"{name}@{k}": round(float(mean[k - 1]), decimal_place) for k in topk}


TAIL_METRICS = (TailHit, TailNDCG, TailRecall, TailMRR, TailPrecision)
PLUGIN_METRICS = TAIL_METRICS + (TailItemShare, AvgTrainPopularity)
_NEEDS_FULL_RANKING = {cls.__name__.lower() for cls in TAIL_METRICS} | {"tailitemshare"}


def check_tail_metric_config(config):
    """Tail metrics are defined on full ranking only (never sampled candidates)."""
    requested = [m for m in config["metrics"] if m.lower() in _NEEDS_FULL_RANKING]
    valid_metric = str(config.get("valid_metric", "")).split("@")[0].lower()
    if valid_metric in _NEEDS_FULL_RANKING:
        requested.append(config["valid_metric"])
    if not requested:
        return
    modes = config["eval_args"]["mode"]
    modes = modes if isinstance(modes, dict) else {"valid": modes, "test": modes}
    partial = {phase: mode for phase, mode in modes.items() if mode != "full"}
    if partial:
        raise UserInputError(
            f"tail metrics {sorted(set(requested))} need full ranking, but eval_args mode is {partial}; "
            "set eval_args: {mode: full}"
        )
    if valid_metric in _NEEDS_FULL_RANKING and config["valid_metric"] not in config["metrics"] and not any(
        m.lower() == valid_metric for m in config["metrics"]
    ):
        raise UserInputError(
            f"valid_metric {config['valid_metric']} is not computed: add {valid_metric} to metrics"
        )


def register_metrics():
    """Add the plugin's metrics to RecBole's registry under new names; RecBole's metrics and results unchanged."""
    for metric_class in PLUGIN_METRICS:
        name = metric_class.__name__.lower()
        if getattr(register.metrics_dict.get(name), "__module__", None) == recbole_metrics.__name__:
            raise RuntimeError(f"metric name '{name}' is RecBole's own: the plugin must not replace it")
        register.metrics_dict[name] = metric_class
        register.metric_information[name] = metric_class.metric_need
        register.metric_types[name] = metric_class.metric_type
        if metric_class.smaller and name not in register.smaller_metrics:
            register.smaller_metrics.append(name)
