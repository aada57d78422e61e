"""Tables of a grid from its cached runs: ``<out>/<dataset>.md`` (the converged profile,
``catalogue.PRIMARY_PROFILE``) or ``<out>/<dataset>-<profile>.md``, and the plots.

Cells are RecBole's test metrics (best valid checkpoint), mean +- sample std
over the seeds a row ran with. The best accuracy value per column is bold.
p-values: paired t-test over TEST USERS (per-user values from the result
JSONs, averaged over seeds per user) of each LPO4Rec row against the best
other Table I row of that column.
"""

import json
import math
import os
from collections import defaultdict
from pathlib import Path

from recbole_lpo.reproduce import catalogue as cat
from recbole_lpo.reproduce import plots
from recbole_lpo.reproduce import bonus
from recbole_lpo.reproduce.cache import RunCache
from recbole_lpo.reproduce.runner import check_comparable, load_records
from recbole_lpo.reproduce.stats import (TARGET_METRICS, TARGET_RATIO, baseline_means, compare, mean_std,
                                         mean_std_text, meets_target, paired_ttest, seed_mean, select_default)

OVERALL = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
TAIL = ["tail" + m for m in OVERALL]
BIAS = ["tailitemshare@10", "itemcoverage@10", "avgtrainpopularity@10"]
SHORT = ["hit@10", "ndcg@10", "tailhit@10", "tailndcg@10", *BIAS]
NAMES = {"hit": "HR", "ndcg": "NDCG", "tailhit": "tail HR", "tailndcg": "tail NDCG",
         "tailitemshare": "TailShare", "itemcoverage": "Cov", "avgtrainpopularity": "TrainPop"}
LPO_ROWS = ("LPO4Rec (paper)", "LPO4Rec")


def header(metric):
    name, _, k = metric.partition("@")
    return f"{NAMES.get(name, name)}@{k}"


class Grid:
    """The finished runs of one data set: label -> records over seeds, keys, selection."""

    def __init__(self, dataset, resolved, records):
        self.dataset = dataset
        self.rows = defaultdict(list)
        self.keys = defaultdict(list)
        self.code = {}  # model -> code version its runs' keys were made with
        for item in resolved:
            if item.run.dataset == dataset and item.run in records:
                self.rows[item.run.label].append(records[item.run])
                self.keys[item.run.label].append(item.key)
                self.code[item.run.experiment.model] = item.code
        # "LPO4Rec" (the YAML defaults) is the paper row when the defaults are the paper's values
        # (from the keys when both ran, else from the YAML files)
        self.aliases = {}
        both = self.has("LPO4Rec") and self.has("LPO4Rec (paper)")
        if (self.keys["LPO4Rec"] == self.keys["LPO4Rec (paper)"]) if both else cat.DEFAULTS_ARE_PAPER:
            self.aliases["LPO4Rec"] = "LPO4Rec (paper)"
        for label, same in self.aliases.items():
            rows, keys = self.rows.pop(label, []), self.keys.pop(label, [])
            if rows and not self.has(same):
                self.rows[same], self.keys[same] = rows, keys
        self.selection = self._select()

    def has(self, label):
        return bool(self.rows.get(label))

    def first_seed(self, label):
        return self.rows[label][0] if self.has(label) else None

    def _select(self):
        """Per tuned family: the setting chosen on validation (see stats.select_default)."""
        out = {}
        if not self.has("SASRec"):
            return out
        baseline = [r["best_valid_result"]["ndcg@10"] for r in self.rows["SASRec"]]
        for family in cat.TUNING_FAMILIES:
            every = cat.selection_candidates(family)
            labels = [label for label in every if self.has(label)]
            if not labels:
                continue
            candidates = [(label, self.first_seed(label)["best_valid_result"]) for label in labels]
            chosen, threshold, qualifying = select_default(candidates, baseline)
            out[family] = {"selected": chosen, "threshold": threshold, "qualifying": qualifying,
                           "candidates": candidates, "complete": len(labels) == len(every)}
        return out

    def table_label(self, label):
        """Table I shows each rival at its selected setting."""
        if label in cat.RIVALS and label in self.selection:
            return self.selection[label]["selected"]
        return label

    def table_rows(self):
        rows = []
        for label in cat.TABLE_ROWS:
            shown = self.table_label(label)
            if label in self.aliases:
                continue  # e.g. the YAML defaults are the paper's values: one row
            rows.append((label, shown))
        return rows


def cell(records, metric):
    values = [r["test_result"].get(metric) for r in records]
    if any(v is None for v in values):
        return None, None, "n/a"
    mean, std = mean_std(values)
    text = f"{mean:.4f}" if metric != "avgtrainpopularity@10" else f"{mean:.2f}"
    if len(values) > 1:
        text += f" ± {std:.4f}" if metric != "avgtrainpopularity@10" else f" ± {std:.2f}"
    return mean, std, text


CAPPED = "†"
CAP_NOTE = "†: stopped by the epoch cap (`epochs`), not by early stopping: it may not have converged."


def stopped_by_cap(record):
    """Whether the run trained as many epochs as its ``epochs`` cap allowed."""
    cap = (record.get("config") or {}).get("epochs")
    return cap is not None and record["epochs_trained"] >= cap


def markdown_table(grid, rows, metrics, bold=True, name_setting=True):
    """rows: [(row name, label)] -> Markdown with the best accuracy mean per column in bold;
    ``name_setting``: a row named other than its label shows the label's setting beside the name."""
    lines = ["| model | seeds | epochs (best) | " + " | ".join(header(m) for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    best = {}
    if bold:
        for m in metrics:
            if m in BIAS:
                continue
            means = [cell(grid.rows[label], m)[0] for _, label in rows if grid.has(label)]
            means = [v for v in means if v is not None]
            best[m] = max(means) if means else None
    for name, label in rows:
        shown = name if name == label or not name_setting else f"{name} ({label.split(' ', 1)[1]})"
        if not grid.has(label):
            lines.append(f"| {shown} | not run | | " + " | ".join("—" for _ in metrics) + " |")
            continue
        records = grid.rows[label]
        epochs = ", ".join(f"{r['epochs_trained']} ({r['best_epoch']}){CAPPED if stopped_by_cap(r) else ''}"
                           for r in records)
        cells = []
        for m in metrics:
            mean, _, text = cell(records, m)
            cells.append(f"**{text}**" if mean is not None and best.get(m) is not None
                         and round(mean, 6) == round(best[m], 6) else text)
        lines.append(f"| {shown} | {len(records)} | {epochs} | " + " | ".join(cells) + " |")
    if any(stopped_by_cap(r) for _, label in rows if grid.has(label) for r in grid.rows[label]):
        lines += ["", CAP_NOTE]
    return "\n".join(lines)


def ttest_rows(grid, metrics):
    """Markdown rows: p of each LPO4Rec row against the best other Table I row per metric."""
    others = [(name, label) for name, label in grid.table_rows() if name not in LPO_ROWS and grid.has(label)]
    lines = []
    for name, label in grid.table_rows():
        if name not in LPO_ROWS or not grid.has(label):
            continue
        cells = []
        for m in metrics:
            ours = seed_mean(grid.rows[label], m)
            scored = [(cell(grid.rows[lab], m)[0], n, lab) for n, lab in others]
            scored = [s for s in scored if s[0] is not None]
            if ours is None or not scored:
                cells.append("n/a")
                continue
            _, rival_name, rival_label = max(scored)
            n, diff, t, p = paired_ttest(ours, seed_mean(grid.rows[rival_label], m))
            test = "no variance" if math.isnan(p) else f"p={p:.2g}"
            cells.append(f"{diff:+.4f} vs {rival_name}, {test} (n={n})")
        lines.append(f"| {name}: diff, paired t-test | | | " + " | ".join(cells) + " |")
    return lines


def unique_records(grid):
    """Every finished run once: two labels with the same resolved config (``--model=LPO4Rec`` and the
    screened setting it defaults to) share their runs' keys, and a run counts once."""
    by_key = {}
    for label, rows in grid.rows.items():
        for key, record in zip(grid.keys[label], rows):
            by_key.setdefault(key, record)
    return list(by_key.values())


def provenance(grid):
    records = unique_records(grid)
    commits = sorted({r["git_commit"] or "unknown" for r in records})
    machines = sorted({f"{r['machine']['processor']} x{r['machine']['cpu_count']}, "
                       f"{r['machine'].get('gpu') or r['machine']['device']}, torch {r['machine']['torch']}, "
                       f"{r['machine']['torch_threads']} threads" for r in records})
    first = records[0]
    code = defaultdict(list)
    for model, version in sorted(grid.code.items()):
        code[version[:12] + ("+uncommitted" if "+" in version else "")].append(model)
    adopted = sorted(r["adopted_from"] for r in records if r.get("adopted_from"))
    lines = [f"- adopted (`--adopt`; trained outside the grid with the same config and code): {len(adopted)} runs: "
             + ", ".join(adopted)] if adopted else []
    timed = [r["reproduce"] for r in records if "train_seconds" in r.get("reproduce", {})]
    if timed:
        hours = sum((t["train_seconds"] + t["bonus_seconds"] + t.get("earlier_attempts_seconds", 0)) * t["threads"]
                    for t in timed) / 3600
        resumed = sum("resumed_from" in t for t in timed)
        lines.append(f"- cost: {hours:.1f} thread-hours of wall time (training, test and the bonus ranking) over "
                     f"the {len(timed)} runs the grid timed" + (f"; {len(records) - len(timed)} runs untimed "
                                                                 "(adopted, or trained before timing)"
                                                                 if len(timed) < len(records) else "")
                     + (f"; {resumed} of them resumed after an interrupted attempt (counted)" if resumed else ""))
    dirty = any(c.endswith("-dirty") for c in commits)
    return lines + [f"- runs: {len(records)}; repository commits at run time: {', '.join(c[:12] + ('-dirty' if c.endswith('-dirty') else '') for c in commits)}"
            + (" (-dirty: uncommitted files elsewhere in the tree)" if dirty else ""),
            "- code of each model (last commit touching it, part of the cache key): "
            + "; ".join(f"{version} ({', '.join(models)})" for version, models in code.items()),
            f"- machines: {'; '.join(machines)}",
            f"- tail set: {first['n_tail_items']} tail items (tail_ratio {first['tail_ratio']}), hash "
            f"{first['tail_set_hash']}; {100 * first['tail_user_share']:.2f} % of test users have a tail target"]


def selection_section(grid):
    lines = ["## Tuning and selected defaults (validation only)", "",
             "Each model gets the same budget of settings (first = its default or the paper's values); "
             "LPO4Rec's default is also selected among the screened no-regret candidates (`--groups screen`, "
             "beyond the paper's budget; the rivals' Table I rows do not depend on them). "
             "Selected: the highest valid tail NDCG@10 among settings whose valid NDCG@10 is at least "
             "SASRec's mean minus one std over seeds (first seed of every candidate).", ""]
    if not grid.selection:
        return lines + ["Not available: SASRec or the tuning runs have not finished.", ""]
    lines += ["| family | setting | valid NDCG@10 | valid tail NDCG@10 | qualifies | selected | "
              "test HR@10 | test tail HR@10 |", "|---|---|---|---|---|---|---|---|"]
    for family, sel in grid.selection.items():
        for label, valid in sel["candidates"]:
            test = grid.first_seed(label)["test_result"]
            lines.append(f"| {family} | {label} | {valid['ndcg@10']:.4f} | {valid['tailndcg@10']:.4f} | "
                         f"{'yes' if label in sel['qualifying'] else 'no'} | "
                         f"{_selection_mark(label, sel)} | {test['hit@10']:.4f} | "
                         f"{test['tailhit@10']:.4f} |")
    lines.append("")
    for family, sel in grid.selection.items():
        incomplete = "" if sel["complete"] else " (grid incomplete)"
        if sel["qualifying"]:
            lines.append(f"- {family}: threshold {sel['threshold']:.4f}, selected **{sel['selected']}**{incomplete}")
        else:
            lines.append(f"- {family}: threshold {sel['threshold']:.4f}; no setting qualifies, so the rule falls "
                         f"back to its first, {sel['selected']}{incomplete}")
    lpo = grid.selection.get("LPO4Rec")
    if lpo and lpo["qualifying"]:
        lines += lpo_default_lines(cat.EXPERIMENTS[lpo["selected"]].overrides)
    elif lpo:
        lines.append("- `--model=LPO4Rec`: no LPO4Rec setting in this grid qualifies, so it gives no reason to "
                     "change the defaults (properties/model/LPO4Rec.yaml)")
    return lines + [""]


def _selection_mark(label, sel):
    if label != sel["selected"]:
        return ""
    return "**selected**" if sel["qualifying"] else "fallback (none qualifies)"


def lpo_default_lines(chosen):
    """What the LPO4Rec selection means for ``--model=LPO4Rec``: the selected values (those that differ
    from the paper's) and whether the YAML defaults are them."""
    changed = {k: v for k, v in chosen.items() if cat.LPO_PAPER.get(k) != v}
    values = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the paper's values"
    if cat.defaults_are(chosen):
        state = "`--model=LPO4Rec` trains them (properties/model/LPO4Rec.yaml)"
    else:
        state = ("`--model=LPO4Rec` does not train them yet: properties/model/LPO4Rec.yaml has other values "
                 "(this table's selection, from the runs so far, has not been made the default)")
    return [f"- LPO4Rec's selected values: {values}; {state}"]


def bonus_sweep(grid, cache_root):
    """SASRec's, the LPO4Rec rows' and the screened settings' runs ranked under tail score bonuses
    (``recbole_lpo.reproduce.bonus``): ``(rows, threshold, selected)``, or None without SASRec's."""
    cache = RunCache(cache_root)
    groups, seeds = {}, {}
    for label in dict.fromkeys(("SASRec", *LPO_ROWS, *cat.group_labels("screen"))):
        paths = [cache.bonus_path(key) for key in grid.keys.get(label, [])]
        if paths and all(path.is_file() for path in paths):  # every seed ranked
            groups[label] = [bonus.load_records(path)[1] for path in paths]
            seeds[label] = [record["seed"] for record in grid.rows[label]]
    if "SASRec" not in groups:
        return None
    return bonus.sweep_table(groups, "SASRec", seeds=seeds, min_runs=len(groups["SASRec"]))


def bonus_section(sweep):
    lines = ["## Tail score bonus (beyond the paper; ranking time, post hoc)", "",
             "`tail_score_bonus` adds a constant to every tail item's score when ranking (README, Tail score "
             "bonus). Each run's best checkpoint is ranked under the grid's bonuses; rows pool seeds; ratios "
             "and paired t-tests over test users against SASRec at bonus 0. Selected: the highest valid tail "
             "NDCG@10 among rows whose valid NDCG@10 is at least SASRec's mean minus one std (validation "
             "only) and that have as many seeds as SASRec (a row with fewer, a screen, is shown but not "
             "selected: 3 seeds for any claim); target: test HR@10 and NDCG@10 not significantly below "
             f"SASRec (p >= 0.05 or a higher mean) and tail HR@10 at least {TARGET_RATIO:g}x SASRec's. "
             "Caveat: the checkpoints were early-stopped without the extra bonus.", ""]
    if sweep is None:
        return lines + ["Not available: SASRec's runs have no tail-bonus records.", ""]
    rows, threshold, selected = sweep
    return lines + [f"Threshold (SASRec's valid NDCG@10 mean - std): {threshold:.4f}.", "",
                    *bonus.markdown_lines(rows, selected), ""]


def sensitivity_rows(grid):
    rows = []
    for key, values in cat.SWEEPS.items():
        for value in values:
            label = cat.sweep_label(key, value)
            rows.append((f"{key}={value}" + (" (paper)" if value == cat.LPO_PAPER[key] else ""), label))
    return rows


def best_tail_baseline(grid):
    """The tail baseline (``catalogue.TAIL_BASELINES``) with the highest valid tail NDCG@10 (seed mean),
    among those with as many seeds as SASRec (3 seeds for any claim: a baseline with fewer, still
    running, is not picked over one that has them all); among all that ran if none has them all."""
    ran = [label for label in cat.TAIL_BASELINES if grid.has(label)]
    seeds = len(grid.rows.get("SASRec", []))
    complete = [label for label in ran if len(grid.rows[label]) >= seeds]
    scored = [(mean_std([r["best_valid_result"]["tailndcg@10"] for r in grid.rows[label]])[0], label)
              for label in complete or ran]
    return max(scored)[1] if scored else None


def headline_rows(grid, sweep):
    """One data set's rows of the README headline table: SASRec, LPO4Rec's default (``--model=LPO4Rec``)
    and the paper's values, the best tail baseline (chosen on validation) and the tail score bonus the
    selection rule picks; each with its test comparison to SASRec and whether it meets the target."""
    if not grid.has("SASRec"):
        return []
    base = baseline_means(grid.rows["SASRec"])
    default = "LPO4Rec (default = paper values)" if "LPO4Rec" in grid.aliases else "LPO4Rec (default)"
    entries = [("SASRec", "SASRec"), (default, grid.aliases.get("LPO4Rec", "LPO4Rec"))]
    if "LPO4Rec" not in grid.aliases:
        entries.append(("LPO4Rec (paper values)", "LPO4Rec (paper)"))
    tail = best_tail_baseline(grid)
    entries.append((f"best tail baseline: {tail}" if tail else "best tail baseline (R2Rec, CITIES)", tail))
    rows = []
    for name, label in entries:
        row = {"dataset": grid.dataset, "row": name, "setting": label, "baseline": label == "SASRec",
               "seeds": [], "test": None, "meets_target": None, "epochs": []}
        if label and grid.has(label):
            records = grid.rows[label]
            row.update(seeds=[r["config"]["seed"] for r in records], test=compare(records, base),
                       epochs=[[r["epochs_trained"], r["best_epoch"], stopped_by_cap(r)] for r in records])
            row["meets_target"] = None if row["baseline"] else meets_target(row["test"])
        rows.append(row)
    if sweep is not None and sweep[2] is not None:
        chosen = sweep[2]
        rows.append({"dataset": grid.dataset, "row": f"{chosen['setting']} + tail_score_bonus "
                     f"{chosen['tail_score_bonus']:g} (selected on validation; post hoc)",
                     "setting": chosen["setting"], "baseline": False, "seeds": chosen["seeds"],
                     "test": {m: chosen["test"][m] for m in TARGET_METRICS}, "meets_target": chosen["meets_target"],
                     "epochs": []})
    return rows


def headline_cell(comparison, baseline, runs):
    text = mean_std_text(*comparison["mean_std"], runs)
    if baseline:
        return text
    p = "no variance" if comparison["p"] is None or math.isnan(comparison["p"]) else f"p={comparison['p']:.2g}"
    ratio = comparison["ratio"]  # None (NaN in a JSON file) when SASRec's mean is 0
    ratio = "—" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x"
    return text + f" ({ratio}, {p})"


def headline_markdown(rows, profile):
    """The headline table (markdown lines) from ``headline_rows`` of one or more data sets."""
    lines = [f"Test split, profile `{profile}`; mean ± std over seeds, ratio to SASRec and two-sided paired "
             "t-test over test users (per-user values averaged over seeds); target: HR@10 and NDCG@10 not "
             f"significantly below SASRec (p >= 0.05 or a higher mean) and tail HR@10 at least {TARGET_RATIO:g}x "
             "SASRec's.", "",
             "| data set | model | seeds | " + " | ".join(f"test {header(m)}" for m in TARGET_METRICS)
             + " | target |", "|---|---|---|" + "---|" * len(TARGET_METRICS) + "---|"]
    for row in rows:
        if row["test"] is None:
            lines.append(f"| {row['dataset']} | {row['row']} | not run | " + " | ".join("—" for _ in TARGET_METRICS)
                         + " | |")
            continue
        cells = [headline_cell(row["test"][m], row["baseline"], len(row["seeds"])) for m in TARGET_METRICS]
        capped = CAPPED if any(capped for *_, capped in row["epochs"]) else ""
        target = "" if row["meets_target"] is None else ("**met**" if row["meets_target"] else "not met")
        lines.append(f"| {row['dataset']} | {row['row']}{capped} | {len(row['seeds'])} | " + " | ".join(cells)
                     + f" | {target} |")
    if any(capped for row in rows for *_, capped in row["epochs"]):
        lines += ["", CAP_NOTE]
    return lines


def _plain(value):
    """JSON without NaN: NaN (a p-value without variance) as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_headline(out, profile):
    """``<out>/headline.md`` (``headline-<profile>.md`` for a profile other than the primary one) from
    every ``*-headline.json`` of ``profile`` in ``out``: a command covering one data set keeps the
    other data sets' rows."""
    by_dataset = {}
    for path in sorted(Path(out).glob("*-headline.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("profile") == profile:
            by_dataset[data["dataset"]] = data["rows"]
    order = sorted(by_dataset, key=lambda d: (cat.DATASETS.index(d) if d in cat.DATASETS else len(cat.DATASETS), d))
    rows = [row for dataset in order for row in by_dataset[dataset]]
    if not rows:
        return None
    stem = "headline" if profile == cat.PRIMARY_PROFILE else f"headline-{profile}"
    path = Path(out) / f"{stem}.md"
    path.write_text("\n".join([f"# Headline: SASRec, LPO4Rec and the best tail baseline (profile `{profile}`)", "",
                                f"Produced by `python -m recbole_lpo.reproduce --datasets <d> --profile {profile}` "
                                "(each data set's report rewrites its own rows; the data sets' reports have the "
                                "commands and provenance).", "", *headline_markdown(rows, profile)]) + "\n",
                    encoding="utf-8")
    return path


def adopt_argument(args):
    """`` --adopt <folder>/*`` per folder the command adopted from (relative paths only)."""
    folders = dict.fromkeys(os.path.relpath(os.path.dirname(os.path.abspath(p))) for p in getattr(args, "adopt", []))
    return "".join(f" --adopt {folder}/*" for folder in folders if not folder.startswith(".."))


def write_dataset_report(grid, args, user_overrides, out):
    lines = [f"# {grid.dataset}: profile `{args.profile}`", "",
             f"Produced by `python -m recbole_lpo.reproduce --datasets {grid.dataset} --profile {args.profile}"
             + (f" --set {' '.join(f'{k}={v}' for k, v in user_overrides.items())}" if user_overrides else "")
             + (" --labels " + " ".join(f'"{label}"' if " " in label else label for label in args.labels)
                if getattr(args, "labels", None) else "")
             + f" --seeds {' '.join(map(str, args.seeds))}{adopt_argument(args)}` (the tables regenerate from the run cache with "
             "`--tables-only`). Test split, best valid NDCG@10 checkpoint; mean ± sample std over seeds; "
             "epochs = trained (best). Bold: best accuracy per column (popularity-bias columns are not "
             "ranked: more tail items is not better in itself).", "", *provenance(grid), ""]
    if "LPO4Rec" in grid.aliases:
        lines += ["LPO4Rec's YAML defaults (`properties/model/LPO4Rec.yaml`) are the paper's values, so its "
                  "row is `LPO4Rec (paper)`.", ""]
    rows = grid.table_rows()
    for title, metrics in (("Table I: overall", OVERALL), ("Table I: tail (test users with a tail target)", TAIL),
                           ("Table I: popularity bias (top-10)", BIAS)):
        lines += [f"## {title}", "", markdown_table(grid, rows, metrics)]
        if metrics is not BIAS:
            lines += ttest_rows(grid, metrics)
        lines.append("")
    lines += ["p-values: paired t-test over test users (per-user values averaged over seeds) of the LPO4Rec row "
              "against the best other row of the column; diff = LPO4Rec minus that row.", ""]
    lines += selection_section(grid)
    sweep = bonus_sweep(grid, args.cache)
    lines += bonus_section(sweep)
    lines += ["## Ablations (paper Table II)", "",
              markdown_table(grid, [(label, label) for label in cat.ABLATION_ROWS], SHORT), ""]
    screen = cat.group_labels("screen")
    if any(grid.has(label) for label in screen[2:]):
        lines += ["## Screening for a no-regret default (beyond the paper; validation decides)", "",
                  markdown_table(grid, [(label, label) for label in screen], SHORT), ""]
    lines += ["## Sensitivity (paper Fig. 4; one key at a time around the paper's values)", "",
              markdown_table(grid, sensitivity_rows(grid), SHORT, bold=False, name_setting=False), "",
              "The paper's point shows its row's seeds; the other points, and the plot, one seed.", ""]
    written = []
    stem = cat.report_stem(grid.dataset, args.profile)
    figures = plots.dataset_figures(grid, out, stem, bonus_sweep=sweep)
    if figures is None:
        lines += ["Plots skipped: matplotlib is not installed (`pip install -e .[plots]`).", ""]
    else:
        lines += ["## Figures", ""] + [f"![{name}]({Path(path).name})" for name, path in figures]
        lines += ["", *plots.tail_probability_summary(grid), ""]
        written += [path for _, path in figures]
    path = Path(out) / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(Path(out) / f"{stem}-selection.json", "w", encoding="utf-8") as f:
        selection = {family: {k: v for k, v in sel.items() if k != "candidates"}
                     for family, sel in grid.selection.items()}
        if sweep is not None and sweep[2] is not None:
            chosen = sweep[2]
            selection["tail_score_bonus"] = {"selected": [chosen["setting"], chosen["tail_score_bonus"]],
                                             "threshold": sweep[1], "meets_target": chosen["meets_target"]}
        json.dump(selection, f, indent=1)
    headline = Path(out) / f"{stem}-headline.json"
    rows = headline_rows(grid, sweep)
    headline.write_text(json.dumps(_plain({"profile": args.profile, "dataset": grid.dataset, "rows": rows}),
                                   indent=1) + "\n", encoding="utf-8")
    return [str(path), str(headline)] + written


def write_reports(resolved, args, user_overrides):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = load_records(resolved, args.cache)
    check_comparable(records)
    written = []
    for dataset in dict.fromkeys(item.run.dataset for item in resolved):
        grid = Grid(dataset, resolved, records)
        if grid.rows:
            written += write_dataset_report(grid, args, user_overrides, out)
    headline = write_headline(out, args.profile)
    if headline:
        written.append(str(headline))
    if getattr(args, "epoch_cost", None):
        path = plots.efficiency(args.epoch_cost, out / "efficiency.png")
        if path:
            written.append(str(path))
    return written


