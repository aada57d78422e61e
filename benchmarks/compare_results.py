"""Compare finished runs against a baseline run: a Markdown table with paired t-tests over test users.

    python benchmarks/compare_results.py BASELINE.json RUN.json [RUN.json ...]
    python benchmarks/compare_results.py --pool SASRec-seed*.json.gz LPO4Rec-seed*.json.gz

Reads result JSONs (``run_recbole_lpo``'s, with per-user ranks; ``.json.gz`` too). For each run:
epochs trained (best; † when the epoch cap stopped it), the valid scores the
selection rule reads (NDCG@10, tail NDCG@10), the test HR/NDCG@10 overall and
on tail-target users, each with its ratio to the baseline, and the two-sided
paired t-test over test users against the baseline (recbole_lpo.reproduce.stats).

``--pool``: one row per setting (the runs' seeds pooled; the baseline is the
setting of the first file): mean ± std over seeds, and ratio and paired
t-test of the per-user values averaged over seeds, as the grid's report.
"""

import argparse
import gzip
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_lpo.reproduce.stats import mean_std, mean_std_text, paired_ttest, per_user_values, seed_mean  # noqa: E402

SETTING_KEYS = ("preference_loss", "lpo_lambda", "lpo_tau", "neg_count", "neg_sampler", "neg_pool", "reweight",
                "alpha_tail", "alpha_head", "pref_warmup_epochs", "tail_score_bonus")
TEST = ("hit@10", "ndcg@10", "tailhit@10", "tailndcg@10")


def setting(record):
    config = record["config"]
    if not config.get("preference_loss"):
        bonus = config.get("tail_score_bonus") or 0
        return record["model"] + (f" tail_score_bonus={bonus}" if bonus else "")
    return record["model"] + " " + " ".join(f"{k}={config[k]}" for k in SETTING_KEYS[1:] if k in config)


def pooled_table(records):
    """One row per setting over its seeds, against the first record's setting."""
    groups = {}
    for record in records:
        groups.setdefault(setting(record), []).append(record)
    base = next(iter(groups.values()))
    base_users = {m: seed_mean(base, m) for m in TEST}
    print("| setting | seeds | epochs (best) | valid NDCG@10 | valid tail NDCG@10 | "
          + " | ".join(f"test {m} (ratio, p)" for m in TEST) + " |")
    print("|---|---|---|---|---|" + "---|" * len(TEST))
    for label, runs in groups.items():
        cells = []
        for metric in TEST:
            mean, std = mean_std([r["test_result"][metric] for r in runs])
            users = seed_mean(runs, metric)
            reference = sum(base_users[metric].values()) / len(base_users[metric])
            _, _, _, p = paired_ttest(users, base_users[metric])
            ratio = (sum(users.values()) / len(users)) / reference if reference else math.nan
            cells.append(f"{mean_std_text(mean, std, len(runs))} ({ratio:.2f}x, p={p:.2g})")
        epochs = ", ".join(f"{r['epochs_trained']} ({r['best_epoch']})" for r in runs)
        valid = [mean_std([r["best_valid_result"][m] for r in runs])[0] for m in ("ndcg@10", "tailndcg@10")]
        print(f"| {label} | {', '.join(str(r['seed']) for r in runs)} | {epochs} | {valid[0]:.4f} | {valid[1]:.4f} | "
              + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="result JSONs; the first is the baseline")
    parser.add_argument("--pool", action="store_true", help="one row per setting, seeds pooled")
    args = parser.parse_args(argv)
    records = [json.loads(gzip.decompress(Path(p).read_bytes()) if p.endswith(".gz") else Path(p).read_text())
               for p in args.results]
    if args.pool:
        pooled_table(records)
        return
    base = records[0]
    print("| run | epochs (best) | valid NDCG@10 | valid tail NDCG@10 | "
          + " | ".join(f"test {m} (ratio, p)" for m in TEST) + " |")
    print("|---|---|---|---|" + "---|" * len(TEST))
    for record in records:
        capped = "†" if record["epochs_trained"] >= record["config"]["epochs"] else ""
        valid = record["best_valid_result"]
        cells = []
        for metric in TEST:
            value, reference = record["test_result"][metric], base["test_result"][metric]
            if record is base:
                cells.append(f"{value:.4f}")
                continue
            _, _, _, p = paired_ttest(per_user_values(record, metric), per_user_values(base, metric))
            ratio = value / reference if reference else math.nan
            cells.append(f"{value:.4f} ({ratio:.2f}x, p={p:.2g})")
        print(f"| {setting(record)} | {record['epochs_trained']} ({record['best_epoch']}){capped} | "
              f"{valid['ndcg@10']:.4f} | {valid['tailndcg@10']:.4f} | " + " | ".join(cells) + " |")
    machines = sorted({f"{r['machine']['processor']} x{r['machine']['cpu_count']}, {r['machine']['device']}, "
                       f"{r['machine']['torch_threads']} thread(s)" for r in records})
    print(f"\nBaseline: {setting(base)}. Machines: {'; '.join(machines)}. "
          f"Commits: {', '.join(sorted({(r['git_commit'] or 'unknown')[:12] for r in records}))}.")


if __name__ == "__main__":
    main()
