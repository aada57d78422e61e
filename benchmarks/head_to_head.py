"""Train several models to early stopping under one config and seed; print a table.

    python benchmarks/head_to_head.py --models SASRec LPO4Rec --dataset amazon-beauty \
        --set train_batch_size=256 --parallel

Each model runs through ``recbole_lpo.quick_start.run_recbole_lpo`` (best
validation checkpoint for test) in its own process; ``--parallel`` runs them
side by side with the threads split between them. The table holds overall
and tail HR/NDCG@10 and the popularity-bias metrics of the TEST split, read
from each run's result JSON (listed under the table).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["hit@10", "ndcg@10", "tailhit@10", "tailndcg@10", "tailitemshare@10", "itemcoverage@10",
           "avgtrainpopularity@10"]


def worker(model, dataset, config_dict, threads):
    import torch

    torch.set_num_threads(threads)
    from recbole_lpo.quick_start import run_recbole_lpo
    from recbole_lpo.runtime import keep_freed_memory

    keep_freed_memory()  # as the command line: faster CPU steps, same results

    result = run_recbole_lpo(model, dataset, config_dict=config_dict, saved=True)
    print("RESULT " + json.dumps({"model": model, "result_file": result["result_file"]}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["SASRec", "LPO4Rec"])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every model")
    parser.add_argument("--parallel", action="store_true", help="run the models side by side")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reuse", nargs="*", default=[], metavar="RESULT_JSON",
                        help="add finished runs (their result JSON) to the table instead of training them")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from recbole_lpo.utils import parse_overrides

    config_dict = {"show_progress": False, **parse_overrides(args.set)}
    if args.worker:
        return worker(args.worker, args.dataset, config_dict, args.threads)

    threads = max(1, args.threads // max(1, len(args.models))) if args.parallel else args.threads
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    commands = [[sys.executable, __file__, "--worker", m, "--dataset", args.dataset, "--threads", str(threads),
                 "--set", *args.set] for m in args.models]
    if args.parallel:
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for c in commands]
        outputs = [p.communicate() + (p.returncode,) for p in procs]
    else:
        outputs = []
        for c in commands:
            out = subprocess.run(c, capture_output=True, text=True, env=env)
            outputs.append((out.stdout, out.stderr, out.returncode))
    records = [(json.load(open(path))["model"], path, json.load(open(path))) for path in args.reuse]
    for model, (stdout, stderr, code) in zip(args.models, outputs):
        lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
        if code != 0 or not lines:
            sys.exit(f"{model} failed:\n{stderr[-3000:]}")
        path = json.loads(lines[-1][len("RESULT "):])["result_file"]
        records.append((model, path, json.load(open(path))))

    first = records[0][2]
    print(f"\nTest metrics on {args.dataset} (best valid {first['config']['valid_metric']} checkpoint), "
          f"seed {first['seed']}, overrides {config_dict}; "
          f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}, device {first['machine']['device']}; "
          f"tail-set hash {first['tail_set_hash']}, {100 * first['tail_user_share']:.2f} % tail test users\n")
    print("| model | epochs (best) | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for model, path, record in records:
        if record["tail_set_hash"] != first["tail_set_hash"]:
            sys.exit(f"{model} used another tail set ({record['tail_set_hash']}): not comparable")
        test = record["test_result"]
        print(f"| {model} | {record['epochs_trained']} ({record['best_epoch']}) | "
              + " | ".join(f"{test[c]:.4f}" for c in COLUMNS) + " |")
    print()
    for model, path, _ in records:
        print(f"{model}: {path}")


if __name__ == "__main__":
    main()
