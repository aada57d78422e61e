"""Tail score bonuses swept post hoc over trained checkpoints (beyond the paper).

``tail_score_bonus`` (``recbole_lpo.rescoring``) adds a constant to every tail
item's score when ranking. Here a checkpoint's valid and test users are
scored ONCE (full sort, history masked as RecBole's evaluator does) and each
target is ranked under many bonuses from those scores, so a sweep costs one
evaluation per checkpoint instead of one training run per bonus. The bonus
is added to the one the checkpoint's run already used (rows show the total).

- ``score_checkpoint``: a checkpoint's setting, data set and seed, and per
  (split, bonus) a result-like record of per-user ranks and top-10 tail
  shares (``recbole_lpo.reproduce.stats`` reads it);
- ``save_records`` / ``load_records``: what the table needs of one
  checkpoint, as ``<name>.bonus.json.gz`` (ranks past 10 stored as 11:
  HR@10 and NDCG@10 stay exact; tail items in the top 10 as counts), so
  seeds pool without their checkpoints;
- ``sweep_table``: per (setting, bonus), over seeds, the valid scores the
  selection rule reads, test HR/NDCG@10 overall and on tail-target users
  with the ratio to the baseline (its bonus-0 row) and the two-sided paired
  t-test over test users of the per-user values averaged over seeds, the
  row the selection rule picks (highest valid tail NDCG@10 among rows whose
  valid NDCG@10 is at least the baseline's mean minus one std) and the
  no-regret target (test HR and NDCG@10 not significantly below the
  baseline, p >= 0.05 or a higher mean; tail HR@10 at least ``target_ratio``
  times the baseline's); ``markdown_lines`` prints it.

Post-hoc caveat: each checkpoint is the epoch early stopping chose WITHOUT the
extra bonus; a run trained with the bonus set selects its epoch with it.
"""

import gzip
import json
import math
from pathlib import Path

import torch

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.inference import load_data_and_model
from recbole_lpo.reproduce.stats import (TARGET_METRICS, TARGET_RATIO, baseline_means, compare, mean_std,
                                         mean_std_text, meets_target, per_user_values)
from recbole_lpo.rescoring import ranks_under_bonuses, tail_share_under_bonuses

BONUSES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)  # the grid's; 0 is always added
SETTING_KEYS = ("lpo_lambda", "lpo_tau", "neg_count", "neg_sampler", "neg_pool", "reweight", "alpha_tail",
                "alpha_head", "pref_warmup_epochs", "pref_weight", "beta", "gamma", "orpo_weight")
TEST = TARGET_METRICS
TOP_K = 10
SHARE = f"tailitemshare@{TOP_K}"
RECORDS_FORMAT = "recbole_lpo tail-bonus records v2"
RECORDS_SUFFIX = ".bonus.json.gz"
RANK_CAP = 11  # ranks past 10 only ever count as a miss at 10


def setting_label(config):
    """The checkpoint's model and objective keys, and the bonus it was trained with (seed left out)."""
    label = config["model"]
    if config["preference_loss"]:
        keys = [k for k in SETTING_KEYS if k in config and config[k] is not None]
        label += " " + " ".join(f"{k}={config[k]}" for k in keys)
    if config["tail_score_bonus"]:
        label += f" (trained with tail_score_bonus={config['tail_score_bonus']:g})"
    return label


@torch.no_grad()
def split_ranks(model, eval_data, tail_mask, bonuses, device):
    """Per target of ``eval_data``: user token, tail flag, and its rank and top-10 tail share under each bonus."""
    dataset = eval_data.dataset
    users, tails, ranks, shares = [], [], [], []
    n_items = dataset.item_num
    for interaction, history_index, positive_u, positive_i in eval_data:
        scores = model.full_sort_predict(interaction.to(device)).view(-1, n_items)  # [B N]
        scores[:, 0] = -math.inf
        if history_index is not None:
            scores[history_index] = -math.inf
        scores = scores[positive_u]  # [P N], one row per target
        ranks.append(ranks_under_bonuses(scores, positive_i, tail_mask, bonuses))  # [nb P]
        shares.append(tail_share_under_bonuses(scores, tail_mask, bonuses, TOP_K))  # [nb P]
        users.append(interaction[dataset.uid_field][positive_u])
        tails.append(tail_mask[positive_i])
    users = dataset.id2token(dataset.uid_field, torch.cat(users).numpy()).tolist()
    return users, torch.cat(tails).tolist(), torch.cat(ranks, dim=1), torch.cat(shares, dim=1)


def record(users, tails, ranks, shares):
    """A result-like record for ``recbole_lpo.reproduce.stats`` (per-user ranks, top-10 tail shares)."""
    return {"model": "sweep", "per_user": {"user": users, "tail": tails, "rank": list(ranks), SHARE: list(shares)}}


def score_checkpoint(path, bonuses=BONUSES):
    """``(info, ranked)``: the run's setting label, data set and seed, and {(split, bonus): record}."""
    bonuses = sorted({0.0, *map(float, bonuses)})
    config, model, _dataset, train_data, valid_data, test_data = load_data_and_model(path)
    tail_mask = head_tail_split(train_data._dataset, config["tail_ratio"]).tail_mask
    base_bonus = getattr(model, "tail_score_bonus", 0.0)
    ranked = {}
    for split, data in (("valid", valid_data), ("test", test_data)):
        users, tails, ranks, shares = split_ranks(model, data, tail_mask, bonuses, config["device"])
        for i, bonus in enumerate(bonuses):
            ranked[(split, round(base_bonus + bonus, 6))] = record(users, tails, ranks[i].tolist(),
                                                                   shares[i].tolist())
    info = {"setting": setting_label(config), "dataset": config["dataset"], "seed": config["seed"],
            "checkpoint": Path(path).name}
    return info, ranked


def save_records(path, info, ranked):
    """Write one checkpoint's ``(info, ranked)`` to ``path`` (a new file: never overwritten)."""
    splits = {}
    for (split, bonus), rec in sorted(ranked.items()):
        per_user = rec["per_user"]
        entry = splits.setdefault(split, {"user": per_user["user"], "tail": per_user["tail"], "bonus": [],
                                          "rank": [], "tail_in_top": []})
        entry["bonus"].append(bonus)
        entry["rank"].append([min(r, RANK_CAP) for r in per_user["rank"]])
        entry["tail_in_top"].append([round(v * TOP_K) for v in per_user[SHARE]])  # shares are counts / k
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "xt", encoding="utf-8") as f:  # mode x: never overwrite
        json.dump({"format": RECORDS_FORMAT, **info, "splits": splits}, f)
    return path


def load_records(path):
    """``(info, ranked)`` from a file ``save_records`` wrote."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, EOFError) as error:
        raise UserInputError(f"cannot read the tail-bonus records {path}: {error}") from None
    if not isinstance(data, dict) or data.get("format") != RECORDS_FORMAT:
        raise UserInputError(f"{path} is not a tail-bonus records file ({RECORDS_FORMAT})")
    ranked = {}
    for split, entry in data["splits"].items():
        for bonus, ranks, counts in zip(entry["bonus"], entry["rank"], entry["tail_in_top"]):
            shares = (torch.tensor(counts, dtype=torch.float32) / TOP_K).tolist()  # as tail_share_under_bonuses
            ranked[(split, bonus)] = record(entry["user"], entry["tail"], ranks, shares)
    return {k: data.get(k) for k in ("setting", "dataset", "seed", "checkpoint")}, ranked


def metric_mean(rec, metric):
    values = per_user_values(rec, metric)
    return sum(values.values()) / len(values) if values else math.nan


def sweep_table(groups, baseline, target_ratio=TARGET_RATIO, seeds=None, min_runs=1):
    """Rows of (setting, bonus) over seeds, the validation threshold and the selected row.

    ``groups``: {setting: [ranked per seed]} (``score_checkpoint``'s second
    value); ``seeds``: {setting: [seed per run]}, recorded in the rows. A setting with fewer than
    ``min_runs`` runs (a one-seed screen beside three-seed rows) is shown but not selectable: its
    row's ``screen_only`` is True. Returns ``(rows, threshold, selected)``; ``selected`` is None when
    no selectable row reaches the threshold.
    """
    if baseline not in groups:
        raise UserInputError(f"no run of the baseline '{baseline}'; settings: {sorted(groups)}")
    base = groups[baseline]
    base_mean, base_std = mean_std([metric_mean(runs[("valid", 0.0)], "ndcg@10") for runs in base])
    threshold = base_mean - base_std
    base_test = baseline_means([runs[("test", 0.0)] for runs in base], TEST)
    rows = []
    for label, runs in sorted(groups.items(), key=lambda item: item[0] != baseline):  # baseline first
        for bonus in sorted(b for split, b in runs[0] if split == "valid"):
            if any(("valid", bonus) not in r for r in runs):
                continue  # rows only where every seed was ranked with this bonus
            valid = [r[("valid", bonus)] for r in runs]
            test = [r[("test", bonus)] for r in runs]
            row = {"setting": label, "tail_score_bonus": bonus, "seeds": sorted((seeds or {}).get(label, [])),
                   "runs": len(runs),
                   "valid_ndcg@10": mean_std([metric_mean(v, "ndcg@10") for v in valid]),
                   "valid_tailndcg@10": mean_std([metric_mean(v, "tailndcg@10") for v in valid]),
                   "test": compare(test, base_test, TEST)}
            row["test"][SHARE] = {"mean_std": mean_std([metric_mean(t, SHARE) for t in test])}
            row["qualifies"] = row["valid_ndcg@10"][0] >= threshold
            row["screen_only"] = len(runs) < min_runs
            row["meets_target"] = meets_target(row["test"], target_ratio)
            rows.append(row)
    qualifying = [r for r in rows if r["qualifies"] and not r["screen_only"]]
    selected = max(qualifying, key=lambda r: r["valid_tailndcg@10"][0]) if qualifying else None
    return rows, threshold, selected


def qualifies_cell(row):
    if not row["qualifies"]:
        return "no"
    n = row["runs"]
    return f"yes (screen: {n} seed{'' if n == 1 else 's'}, not selectable)" if row["screen_only"] else "yes"


def markdown_lines(rows, selected):
    """The sweep's table and the selection's verdict, as markdown lines."""
    lines = ["| setting | tail_score_bonus | valid NDCG@10 | valid tail NDCG@10 | "
             + " | ".join(f"test {m} (ratio, p)" for m in TEST) + f" | test {SHARE} | qualifies | target |",
             "|---|---|---|---|" + "---|" * len(TEST) + "---|---|---|"]
    for row in rows:
        cells = [f"{mean_std_text(*t['mean_std'], row['runs'])} ({t['ratio']:.2f}x, "
                 + ("—)" if math.isnan(t["p"]) else f"p={t['p']:.2g})") for t in (row["test"][m] for m in TEST)]
        mark = " **selected**" if row is selected else ""
        lines.append(f"| {row['setting']}{mark} | {row['tail_score_bonus']:g} | {row['valid_ndcg@10'][0]:.4f} | "
                     f"{row['valid_tailndcg@10'][0]:.4f} | " + " | ".join(cells)
                     + f" | {row['test'][SHARE]['mean_std'][0]:.3f} | {qualifies_cell(row)} | "
                     f"{'met' if row['meets_target'] else '-'} |")
    lines.append("")
    if selected:
        lines.append(f"Selected on validation: {selected['setting']} with tail_score_bonus "
                     f"{selected['tail_score_bonus']:g}; target {'met' if selected['meets_target'] else 'NOT met'} "
                     "on test.")
    else:
        lines.append("No selectable row reaches the validation threshold.")
    return lines
