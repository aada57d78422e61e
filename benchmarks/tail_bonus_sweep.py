"""Rank trained checkpoints under many tail score bonuses; select one on validation; print a table.

    python benchmarks/tail_bonus_sweep.py saved/SASRec-*.pth saved/LPO4Rec-*.pth \
        --bonus 0 0.5 1 1.5 2 --json sweep.json --save-records results/tail-bonus/records
    python benchmarks/tail_bonus_sweep.py results/tail-bonus/records/*.bonus.json.gz

``tail_score_bonus`` (``recbole_lpo.rescoring``, beyond the paper) adds a
constant to every tail item's score when ranking. This script scores each
checkpoint's valid and test users ONCE (full sort, history masked as
RecBole's evaluator does) and ranks every target under each bonus from those
scores, so a sweep costs one evaluation per checkpoint instead of one
training run per bonus. The bonus is added to the one the checkpoint's run
already used (the table shows the total).

``--save-records DIR`` keeps what the table needs of each checkpoint, so a
later sweep pools seeds without the checkpoints (which stay in ``saved/``):
``DIR/<checkpoint name>.bonus.json.gz`` holds the setting, data set and seed
and, per split and bonus, each target user's rank (ranks past 10 stored as
11: HR@10 and NDCG@10 stay exact) and top-10 tail share. Inputs may be
checkpoints (``.pth``) or such records, mixed.

Checkpoints are grouped by setting (model and objective keys; seeds pooled);
the baseline is the group of ``--baseline`` (default SASRec) at bonus 0.
Per (setting, bonus), over seeds: valid NDCG@10 and tail NDCG@10 (what the
selection rule reads), test HR/NDCG@10 overall and on tail-target users with
the ratio to the baseline and the two-sided paired t-test over test users of
the per-user values averaged over seeds (``recbole_lpo.reproduce.stats``, as
the grid's report). Then the selection rule (highest valid tail NDCG@10 among
rows whose valid NDCG@10 is at least the baseline's mean minus one std) and
the no-regret target (test HR and NDCG@10 not significantly below the
baseline, p >= 0.05 or a higher mean; tail HR@10 at least ``--target-ratio``
times the baseline's). Post-hoc caveat: each checkpoint is the epoch early
stopping chose WITHOUT this sweep's extra bonus; a run trained with the bonus
set selects its epoch with it.
"""

import argparse
import gzip
import json
import math
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_lpo.data.head_tail import head_tail_split  # noqa: E402
from recbole_lpo.errors import UserInputError, run_cli  # noqa: E402
from recbole_lpo.inference import load_data_and_model  # noqa: E402
from recbole_lpo.reproduce.stats import mean_std, paired_ttest, per_user_values, seed_mean  # noqa: E402
from recbole_lpo.rescoring import ranks_under_bonuses, tail_share_under_bonuses  # noqa: E402
from recbole_lpo.runtime import keep_freed_memory  # noqa: E402

SETTING_KEYS = ("lpo_lambda", "lpo_tau", "neg_count", "neg_sampler", "neg_pool", "reweight", "alpha_tail",
                "alpha_head", "pref_warmup_epochs", "pref_weight", "beta", "gamma", "orpo_weight")
TEST = ("hit@10", "ndcg@10", "tailhit@10", "tailndcg@10")
SHARE = "tailitemshare@10"


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
    """Per target of ``eval_data``: user token, tail flag, and its rank under each bonus."""
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
        shares.append(tail_share_under_bonuses(scores, tail_mask, bonuses, 10))  # [nb P]
        users.append(interaction[dataset.uid_field][positive_u])
        tails.append(tail_mask[positive_i])
    users = dataset.id2token(dataset.uid_field, torch.cat(users).numpy()).tolist()
    return users, torch.cat(tails).tolist(), torch.cat(ranks, dim=1), torch.cat(shares, dim=1)


def record(users, tails, ranks, shares):
    """A result-like record for ``recbole_lpo.reproduce.stats`` (per-user ranks, top-10 tail shares)."""
    return {"model": "sweep", "per_user": {"user": users, "tail": tails, "rank": ranks.tolist(),
                                           "tailitemshare@10": shares.tolist()}}


def metric_mean(rec, metric):
    values = per_user_values(rec, metric)
    return sum(values.values()) / len(values) if values else math.nan


def sweep_checkpoint(path, bonuses):
    """The run's setting label, data set and seed, and {(split, bonus): record} for one checkpoint."""
    config, model, _dataset, train_data, valid_data, test_data = load_data_and_model(path)
    tail_mask = head_tail_split(train_data._dataset, config["tail_ratio"]).tail_mask
    base_bonus = getattr(model, "tail_score_bonus", 0.0)
    out = {}
    for split, data in (("valid", valid_data), ("test", test_data)):
        users, tails, ranks, shares = split_ranks(model, data, tail_mask, bonuses, config["device"])
        for i, bonus in enumerate(bonuses):
            out[(split, round(base_bonus + bonus, 6))] = record(users, tails, ranks[i], shares[i])
    info = {"setting": setting_label(config), "dataset": config["dataset"], "seed": config["seed"]}
    return info, out


RECORDS_FORMAT = "recbole_lpo tail-bonus records v1"
RECORDS_SUFFIX = ".bonus.json.gz"
RANK_CAP = 11  # ranks past 10 only ever count as a miss at 10


def save_records(folder, checkpoint, info, out):
    """Write one checkpoint's records to ``folder/<checkpoint name>.bonus.json.gz``; never overwrite."""
    splits = {}
    for (split, bonus), rec in sorted(out.items()):
        per_user = rec["per_user"]
        entry = splits.setdefault(split, {"user": per_user["user"], "tail": per_user["tail"], "bonus": [],
                                          "rank": [], SHARE: []})
        entry["bonus"].append(bonus)
        entry["rank"].append([min(r, RANK_CAP) for r in per_user["rank"]])
        entry[SHARE].append(per_user[SHARE])
    path = Path(folder) / (Path(checkpoint).name.removesuffix(".pth") + RECORDS_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "xt", encoding="utf-8") as f:  # mode x: never overwrite
        json.dump({"format": RECORDS_FORMAT, "checkpoint": Path(checkpoint).name, **info, "splits": splits}, f)
    return path


def load_records(path):
    """(info, {(split, bonus): record}) from a file ``save_records`` wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != RECORDS_FORMAT:
        raise UserInputError(f"{path}: not a tail-bonus records file of this script")
    out = {}
    for split, entry in data["splits"].items():
        for bonus, ranks, shares in zip(entry["bonus"], entry["rank"], entry[SHARE]):
            out[(split, bonus)] = record(entry["user"], entry["tail"], torch.tensor(ranks), torch.tensor(shares))
    return {k: data[k] for k in ("setting", "dataset", "seed")}, out


def sweep_input(path, bonuses):
    """A checkpoint is scored; a records file is read (the bonuses it holds)."""
    return load_records(path) if str(path).endswith(RECORDS_SUFFIX) else sweep_checkpoint(path, bonuses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+",
                        help=f".pth files written by run_recbole_lpo (seeds of settings), or *{RECORDS_SUFFIX} records")
    parser.add_argument("--bonus", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                        help="extra tail score bonuses to rank with (0 is always included)")
    parser.add_argument("--baseline", default="SASRec", help="setting label of the baseline group (bonus 0)")
    parser.add_argument("--target-ratio", type=float, default=1.5, help="tail HR@10 the target asks, x baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write every row's numbers here (a new file)")
    parser.add_argument("--save-records", metavar="DIR", help=f"write each checkpoint's *{RECORDS_SUFFIX} here")
    args = parser.parse_args(argv)
    if args.json and os.path.exists(args.json):
        parser.error(f"{args.json} exists; a saved sweep is never overwritten")
    for path in args.checkpoints:
        if not os.path.isfile(path):
            parser.error(f"no such checkpoint or records file: {path}")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the command line: fewer page faults on the large score matrices
    warnings.filterwarnings("ignore", category=FutureWarning)  # RecBole's pandas idioms, once per data load
    bonuses = sorted(set([0.0] + args.bonus))

    groups = defaultdict(list)  # setting -> [per checkpoint {(split, bonus): record}]
    datasets, seeds = set(), defaultdict(list)
    for path in args.checkpoints:
        info, records = sweep_input(path, bonuses)
        label = info["setting"]
        groups[label].append(records)
        seeds[label].append(info["seed"])
        datasets.add(info["dataset"])
        print(f"scored {os.path.basename(path)}: {label}, seed {info['seed']}", file=sys.stderr)
        if args.save_records and path.endswith(".pth"):
            print(f"  records: {save_records(args.save_records, path, info, records)}", file=sys.stderr)
    if len(datasets) != 1:
        parser.error(f"checkpoints of one data set please, got {sorted(datasets)}")
    if args.baseline not in groups:
        parser.error(f"no checkpoint of the baseline '{args.baseline}'; settings: {sorted(groups)}")

    base = groups[args.baseline]
    base_valid = [metric_mean(runs[("valid", 0.0)], "ndcg@10") for runs in base]
    base_mean, base_std = mean_std(base_valid)
    threshold = base_mean - base_std
    base_test = {m: seed_mean([runs[("test", 0.0)] for runs in base], m) for m in TEST}
    rows = []
    for label, runs in sorted(groups.items(), key=lambda item: item[0] != args.baseline):  # baseline first
        for key in sorted(k for k in runs[0] if k[0] == "valid"):
            bonus = key[1]
            if any(("valid", bonus) not in r for r in runs):
                continue
            valid = [r[("valid", bonus)] for r in runs]
            test = [r[("test", bonus)] for r in runs]
            row = {"setting": label, "tail_score_bonus": bonus, "seeds": sorted(seeds[label]),
                   "valid_ndcg@10": mean_std([metric_mean(v, "ndcg@10") for v in valid]),
                   "valid_tailndcg@10": mean_std([metric_mean(v, "tailndcg@10") for v in valid]), "test": {}}
            for metric in TEST:
                per_user = seed_mean(test, metric)
                value = sum(per_user.values()) / len(per_user)
                reference = sum(base_test[metric].values()) / len(base_test[metric])
                _, diff, _, p = paired_ttest(per_user, base_test[metric])
                row["test"][metric] = {"mean_std": mean_std([metric_mean(t, metric) for t in test]),
                                       "ratio": value / reference if reference else math.nan, "p": p,
                                       "diff": diff}
            row["test"][SHARE] = {"mean_std": mean_std([metric_mean(t, SHARE) for t in test])}
            row["qualifies"] = row["valid_ndcg@10"][0] >= threshold
            overall_ok = all(row["test"][m]["diff"] >= 0 or not row["test"][m]["p"] < 0.05
                             for m in ("hit@10", "ndcg@10"))
            row["meets_target"] = overall_ok and row["test"]["tailhit@10"]["ratio"] >= args.target_ratio
            rows.append(row)
    qualifying = [r for r in rows if r["qualifies"]]
    selected = max(qualifying, key=lambda r: r["valid_tailndcg@10"][0]) if qualifying else None

    n_seeds = sorted({len(s) for s in seeds.values()})
    print(f"Data set {datasets.pop()}; seeds per setting {n_seeds}; baseline {args.baseline} at bonus 0; "
          f"threshold (baseline valid NDCG@10 mean - std) {threshold:.4f}.\n")
    print("| setting | tail_score_bonus | valid NDCG@10 | valid tail NDCG@10 | "
          + " | ".join(f"test {m} (ratio, p)" for m in TEST) + f" | test {SHARE} | qualifies | target |")
    print("|---|---|---|---|" + "---|" * len(TEST) + "---|---|---|")
    for row in rows:
        cells = [f"{t['mean_std'][0]:.4f} ± {t['mean_std'][1]:.4f} ({t['ratio']:.2f}x, p={t['p']:.2g})"
                 for t in (row["test"][m] for m in TEST)]
        mark = " **selected**" if row is selected else ""
        print(f"| {row['setting']}{mark} | {row['tail_score_bonus']:g} | {row['valid_ndcg@10'][0]:.4f} | "
              f"{row['valid_tailndcg@10'][0]:.4f} | " + " | ".join(cells)
              + f" | {row['test'][SHARE]['mean_std'][0]:.3f} | {'yes' if row['qualifies'] else 'no'} | {'met' if row['meets_target'] else '-'} |")
    if selected:
        print(f"\nSelected on validation: {selected['setting']} with tail_score_bonus "
              f"{selected['tail_score_bonus']:g}; target {'met' if selected['meets_target'] else 'NOT met'} on test.")
    else:
        print("\nNo row reaches the validation threshold.")
    if args.json:
        with open(args.json, "x", encoding="utf-8") as f:  # never overwrite a saved sweep
            json.dump({"threshold": threshold, "rows": rows,
                       "selected": None if selected is None else [selected["setting"], selected["tail_score_bonus"]],
                       "checkpoints": [os.path.basename(p) for p in args.checkpoints]}, f, indent=1)


if __name__ == "__main__":
    sys.exit(run_cli(main))
