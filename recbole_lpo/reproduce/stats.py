"""Per-user metrics from result JSONs, the paired t-test over test users, the comparison with a
baseline and the no-regret target, default selection."""

import math
import statistics

import numpy as np
from scipy import stats

from recbole_lpo.errors import UserInputError


def per_user_values(record, metric):
    """{user token: value} of ``metric`` ('hit@10', 'tailndcg@5', 'tailitemshare@10', ...) for the
    run's test users; tail metrics only over users whose test item is tail. Their mean over users is
    RecBole's reported value. None for metrics that are not a mean over users (ItemCoverage)."""
    per_user = record.get("per_user")
    if per_user is None:
        raise UserInputError(f"result of {record['model']} has no per-user ranks (save_per_user_ranks: False)")
    name, _, k = metric.partition("@")
    users = per_user["user"]
    if name in ("tailitemshare", "avgtrainpopularity"):
        values = per_user.get(metric)
        return None if values is None else dict(zip(users, values))
    if name not in ("hit", "ndcg", "tailhit", "tailndcg"):
        return None
    k = int(k)
    keep = per_user["tail"] if name.startswith("tail") else [True] * len(users)
    out = {}
    for user, rank, kept in zip(users, per_user["rank"], keep):
        if kept:
            hit = rank <= k
            out[user] = float(hit) if name.endswith("hit") else (1.0 / math.log2(rank + 1) if hit else 0.0)
    return out


def seed_mean(records, metric):
    """Per-user values averaged over the records (seeds) of one row; users present in all of them."""
    maps = [per_user_values(r, metric) for r in records]
    if any(m is None for m in maps):
        return None
    users = sorted(set(maps[0]).intersection(*maps[1:]))  # a fixed order: sums do not vary with the hash seed
    return {u: sum(m[u] for m in maps) / len(maps) for u in users}


def paired_ttest(a, b):
    """Paired t-test of {user: value} maps ``a`` and ``b`` over their common users.

    Returns (n users, mean of a - b, t, two-sided p); t and p are NaN when the
    differences are all equal (no variance) or fewer than two users pair up.
    """
    users = sorted(set(a) & set(b))
    x = np.array([a[u] for u in users], dtype=float)
    y = np.array([b[u] for u in users], dtype=float)
    if len(users) < 2 or np.all(x - y == (x - y)[0]):
        return len(users), float(np.mean(x - y)) if len(users) else math.nan, math.nan, math.nan
    t, p = stats.ttest_rel(x, y)
    return len(users), float(np.mean(x - y)), float(t), float(p)


def mean_std(values):
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_text(mean, std, runs, digits=4):
    """``mean ± std`` over ``runs`` seeds; the mean alone for one seed (no spread was measured)."""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if runs > 1 else "")


def select_default(candidates, baseline_valid, metric="ndcg@10", target="tailndcg@10"):
    """The candidate with the highest valid ``target`` among those whose valid ``metric`` is at
    least mean - std of ``baseline_valid`` (SASRec over seeds).

    ``candidates``: [(label, best_valid_result)] with the family's default first. Returns
    (selected label, threshold, qualifying labels); with none qualifying, the default.
    """
    mean, std = mean_std(baseline_valid)
    threshold = mean - std
    qualifying = [(label, result) for label, result in candidates if result[metric] >= threshold]
    if not qualifying:
        return candidates[0][0], threshold, []
    best = max(qualifying, key=lambda item: item[1][target])
    return best[0], threshold, [label for label, _ in qualifying]


TARGET_RATIO = 1.5  # the no-regret target: tail HR@10 at least this times the baseline's
TARGET_METRICS = ("hit@10", "ndcg@10", "tailhit@10", "tailndcg@10")
NO_REGRET = ("hit@10", "ndcg@10")  # the overall metrics the target forbids a significant drop of


def baseline_means(records, metrics=TARGET_METRICS):
    """{metric: {user: value averaged over the baseline's seeds}}, for ``compare``."""
    return {metric: seed_mean(records, metric) for metric in metrics}


def compare(records, baseline, metrics=TARGET_METRICS):
    """Test ``metrics`` of one row (``records``: its seeds) against ``baseline`` (``baseline_means``):
    {metric: {"mean_std": over seeds, "ratio": of the means over users, "diff", "p": two-sided paired
    t-test over test users of the per-user values averaged over seeds}}."""
    out = {}
    for metric in metrics:
        per_user, reference = seed_mean(records, metric), baseline[metric]
        value = sum(per_user.values()) / len(per_user)
        base_value = sum(reference.values()) / len(reference)
        _, diff, _, p = paired_ttest(per_user, reference)
        runs = [per_user_values(record, metric) for record in records]
        out[metric] = {"mean_std": mean_std([sum(run.values()) / len(run) for run in runs]),
                       "ratio": value / base_value if base_value else math.nan, "diff": diff, "p": p}
    return out


def meets_target(comparison, target_ratio=TARGET_RATIO):
    """The no-regret target: HR@10 and NDCG@10 not significantly below the baseline (p >= 0.05 or a
    higher mean) and tail HR@10 at least ``target_ratio`` times the baseline's."""
    overall_ok = all(comparison[m]["diff"] >= 0 or not comparison[m]["p"] < 0.05 for m in NO_REGRET)
    return overall_ok and comparison["tailhit@10"]["ratio"] >= target_ratio
