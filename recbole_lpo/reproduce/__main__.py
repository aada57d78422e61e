"""Reproduce the paper's experiments: ``python -m recbole_lpo.reproduce`` (or benchmarks/reproduce.py).

    python -m recbole_lpo.reproduce --datasets amazon-beauty --profile fast --jobs 2
    python -m recbole_lpo.reproduce --groups table --seeds 2020 --tables-only
    python -m recbole_lpo.reproduce --profile cpu --labels SASRec --adopt results/runs/*.json.gz --tables-only
    python -m recbole_lpo.reproduce --profile cpu --labels SASRec --tables-only --export results/runs

Trains the grid (models x data sets x seeds, see ``catalogue.py``) that is not
cached yet (``--adopt``: first add runs trained elsewhere with the same
config and code, e.g. the result JSONs kept in ``results/``), then writes
under ``--out`` (default ``results/``):
``<dataset>.md`` under the converged profile ``cpu``, else
``<dataset>-<profile>.md`` (Table I, ablations, tuning and selection, tail
score bonus, p-values), beside it ``-*.png`` (sensitivity, frontier,
tail-probability histogram), ``-selection.json`` and ``-headline.json`` (the
data set's rows of ``headline.md``, the README table: SASRec, LPO4Rec's
default and paper values, the best tail baseline, the selected tail score
bonus; ``headline-<profile>.md`` for other profiles), and ``efficiency.png``
when ``--epoch-cost`` JSON is given. ``--export`` copies finished runs out
of the cache for ``--adopt``.
"""

import argparse
import sys
from collections import Counter

from recbole_lpo.errors import UserInputError, run_cli
from recbole_lpo.reproduce.cache import RunCache
from recbole_lpo.reproduce.catalogue import DATASETS, DEFAULT_GROUPS, GROUPS, SEEDS, plan
from recbole_lpo.reproduce.report import write_reports
from recbole_lpo.reproduce.runner import adopt, execute, export, resolve, run_state
from recbole_lpo.utils import parse_overrides


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_lpo.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[DATASETS[0]], help="data sets (default: amazon-beauty)")
    parser.add_argument("--groups", nargs="+", default=list(DEFAULT_GROUPS), choices=GROUPS,
                        help="experiment groups (default: the paper's four; screen: no-regret candidates)")
    parser.add_argument("--labels", nargs="+", help="run only these experiments (labels from catalogue.py)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS),
                        help="seeds of the multi-seed rows (SASRec, LPO4Rec, R2Rec, CITIES); other rows use the first")
    parser.add_argument("--profile", default="fast", help="properties/reproduce/<profile>.yaml: fast (smoke), cpu (converged on a CPU) or paper")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every run (part of each run's cache key)")
    parser.add_argument("--config_files", nargs="*", default=[], help="YAML files under the profile")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cache", default="saved/reproduce", help="cache of finished runs and checkpoints")
    parser.add_argument("--out", default="results", help="folder of the tables and plots")
    parser.add_argument("--adopt", nargs="+", default=[], metavar="RESULT_JSON",
                        help="runs trained outside the grid (result JSONs, .json or .json.gz) to add to the cache "
                             "where a planned run has the same resolved config and code version")
    parser.add_argument("--export", metavar="FOLDER",
                        help="copy the planned runs' cached results (machine paths removed) and tail-bonus records "
                             "to FOLDER/<dataset>/ for --adopt; existing files are kept")
    parser.add_argument("--tables-only", action="store_true", help="train nothing; tables from cached runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their cache state")
    parser.add_argument("--epoch-cost", help="JSON of benchmarks/epoch_cost.py --json: efficiency bar chart")
    return parser


def check_cached(resolved, cache_root):
    """``--tables-only``: one line per data set with planned runs missing from the cache (their
    rows are left out); an error when none of the planned runs is cached (no table to write)."""
    cache = RunCache(cache_root)
    planned = Counter(item.run.dataset for item in resolved)
    missing = Counter(item.run.dataset for item in resolved if not cache.get(item.key))
    if missing and missing == planned:
        raise UserInputError(f"none of the {sum(planned.values())} planned runs is in the cache {cache_root} "
                             "(train them without --tables-only, or add result JSONs with --adopt)")
    for dataset, count in missing.items():
        print(f"{dataset}: {count} of {planned[dataset]} planned runs not in the cache {cache_root}; "
              "their rows are left out (train them without --tables-only, or --adopt their result JSONs)",
              file=sys.stderr, flush=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    user_overrides = parse_overrides(args.set)
    runs = plan(args.datasets, args.groups, args.seeds, args.profile, args.labels)
    resolved = resolve(runs, user_overrides, args.config_files)
    if args.adopt:
        adopt(args.adopt, resolved, args.cache, log=lambda msg: print(msg, flush=True), dry_run=args.dry_run)
    if args.dry_run:
        for item in resolved:
            state = run_state(args.cache, item.key)
            print(f"{item.key}  {state:8}  {item.run.dataset}  seed {item.run.seed}  {item.run.label}")
        return
    failed = {}
    if args.tables_only:
        check_cached(resolved, args.cache)
    else:
        failed = execute(resolved, args.cache, jobs=args.jobs, threads=args.threads,
                         log=lambda msg: print(msg, flush=True))
    for path in write_reports(resolved, args, user_overrides):
        print(f"wrote {path}")
    if args.export:
        export(resolved, args.cache, args.export, log=lambda msg: print(msg, flush=True))
    if failed:
        print(f"{len(failed)} runs failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(run_cli(main))
