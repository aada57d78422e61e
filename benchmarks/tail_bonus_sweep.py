"""Rank trained checkpoints under many tail score bonuses; select one on validation; print a table.

    python benchmarks/tail_bonus_sweep.py saved/SASRec-*.pth saved/LPO4Rec-*.pth \
        --bonus 0 0.5 1 1.5 2 --json sweep.json --save-records results/tail-bonus/records
    python benchmarks/tail_bonus_sweep.py results/tail-bonus/records/*.bonus.json.gz

The command line of ``recbole_lpo.reproduce.bonus`` (its docstring has the
method and the caveat): each checkpoint's valid and test users are scored
once and ranked under every bonus; checkpoints are grouped by setting (model
and objective keys; seeds pooled); the baseline is the group of
``--baseline`` (default SASRec) at bonus 0. ``--save-records DIR`` keeps what
the table needs of each checkpoint (``DIR/<checkpoint name>.bonus.json.gz``),
so a later sweep pools seeds without the checkpoints; inputs may be
checkpoints (``.pth``) or such records, mixed.
"""

import argparse
import json
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_lpo.errors import run_cli  # noqa: E402
from recbole_lpo.reproduce.bonus import (BONUSES, RECORDS_SUFFIX, TARGET_RATIO, load_records,  # noqa: E402
                                         markdown_lines, save_records, score_checkpoint, sweep_table)
from recbole_lpo.runtime import keep_freed_memory  # noqa: E402


def records_path(folder, checkpoint):
    return Path(folder) / (Path(checkpoint).name.removesuffix(".pth") + RECORDS_SUFFIX)


def sweep_input(path, bonuses):
    """A checkpoint is scored; a records file is read (the bonuses it holds)."""
    return load_records(path) if str(path).endswith(RECORDS_SUFFIX) else score_checkpoint(path, bonuses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+",
                        help=f".pth files written by run_recbole_lpo (seeds of settings), or *{RECORDS_SUFFIX} records")
    parser.add_argument("--bonus", nargs="+", type=float, default=list(BONUSES),
                        help="extra tail score bonuses to rank with (0 is always included)")
    parser.add_argument("--baseline", default="SASRec", help="setting label of the baseline group (bonus 0)")
    parser.add_argument("--target-ratio", type=float, default=TARGET_RATIO, help="tail HR@10 the target asks, x baseline")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write every row's numbers here (a new file)")
    parser.add_argument("--save-records", metavar="DIR", help=f"write each checkpoint's *{RECORDS_SUFFIX} here")
    args = parser.parse_args(argv)
    if args.json and os.path.exists(args.json):
        parser.error(f"{args.json} exists; a saved sweep is never overwritten")
    for path in args.checkpoints:
        if not os.path.isfile(path):
            parser.error(f"no such checkpoint or records file: {path}")
        if args.save_records and path.endswith(".pth") and records_path(args.save_records, path).exists():
            parser.error(f"{records_path(args.save_records, path)} exists; saved records are never overwritten")
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
            print(f"  records: {save_records(records_path(args.save_records, path), info, records)}",
                  file=sys.stderr)
    if len(datasets) != 1:
        parser.error(f"checkpoints of one data set please, got {sorted(datasets)}")
    if args.baseline not in groups:
        parser.error(f"no checkpoint of the baseline '{args.baseline}'; settings: {sorted(groups)}")
    rows, threshold, selected = sweep_table(groups, args.baseline, args.target_ratio, seeds)

    n_seeds = sorted({len(s) for s in seeds.values()})
    print(f"Data set {datasets.pop()}; seeds per setting {n_seeds}; baseline {args.baseline} at bonus 0; "
          f"threshold (baseline valid NDCG@10 mean - std) {threshold:.4f}.\n")
    print("\n".join(markdown_lines(rows, selected)))
    if args.json:
        with open(args.json, "x", encoding="utf-8") as f:  # never overwrite a saved sweep
            json.dump({"threshold": threshold, "rows": rows,
                       "selected": None if selected is None else [selected["setting"], selected["tail_score_bonus"]],
                       "checkpoints": [os.path.basename(p) for p in args.checkpoints]}, f, indent=1)


if __name__ == "__main__":
    sys.exit(run_cli(main))
