"""PNG figures of a grid (matplotlib, an optional extra: ``pip install -e .[plots]``).

- sensitivity (paper Fig. 4): test HR/NDCG@10, overall and tail, per swept key;
- frontier: tail HR@10 against overall HR@10, one point per setting (mean over its seeds),
  SASRec and every rival marked, the Pareto front of those trained settings
  dashed (at bonus 0: the bonus curves may dominate it), and the tail score
  bonus sweep's curves (seed means, the selected bonus ringed);
- tail probability (paper Fig. 5): per test user, mean softmax probability of a
  tail item minus that of an item overall, SASRec vs LPO4Rec and the rivals;
- efficiency (paper Fig. 3): epoch time and peak memory of the six losses.
"""

import json
import statistics

from recbole_lpo.reproduce import catalogue as cat


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dataset_figures(grid, out, stem, bonus_sweep=None):
    """[(name, path)] of the figures drawn for ``grid``; None without matplotlib.

    ``bonus_sweep``: ``recbole_lpo.reproduce.bonus.sweep_table``'s result, drawn on the frontier."""
    plt = _pyplot()
    if plt is None:
        return None
    figures = []
    for name, draw in (("sensitivity", sensitivity), ("frontier", lambda plt, grid: frontier(plt, grid, bonus_sweep)),
                       ("tail-probability", tail_probability)):
        fig = draw(plt, grid)
        if fig is None:
            continue
        path = f"{out}/{stem}-{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figures.append((name, path))
    return figures


def sensitivity(plt, grid):
    keys = [k for k, values in cat.SWEEPS.items() if sum(grid.has(cat.sweep_label(k, v)) for v in values) >= 2]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(v, grid.first_seed(cat.sweep_label(key, v))) for v in cat.SWEEPS[key]]
        points = [(v, r["test_result"]) for v, r in points if r is not None]
        xs = [v for v, _ in points]
        for metric, style in (("hit@10", "o-"), ("ndcg@10", "s-"), ("tailhit@10", "o--"), ("tailndcg@10", "s--")):
            ax.plot(xs, [t[metric] for _, t in points], style, label=metric.replace("tail", "tail "))
        ax.axvline(cat.LPO_PAPER[key], color="grey", lw=0.8, ls=":")
        ax.set_xlabel(key + " (dotted: paper)")
        ax.set_title(f"LPO4Rec: {key}")
    axes[0][0].set_ylabel("test metric")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{grid.dataset}: sensitivity (seed {grid.first_seed('LPO4Rec (paper)')['seed']})"
                 if grid.has("LPO4Rec (paper)") else grid.dataset, fontsize=9)
    return fig


def _kind(label):
    model = cat.EXPERIMENTS[label].model
    if label == "SASRec":
        return "SASRec", "k", "*", 160
    for rival, model_name in (("DPO", "DPO4Rec"), ("S-DPO", "SDPO4Rec"), ("SimPO", "SimPO4Rec"),
                              ("ORPO", "ORPO4Rec")):
        if model == model_name:
            return rival, {"DPO": "tab:red", "S-DPO": "tab:orange", "SimPO": "tab:green",
                           "ORPO": "tab:purple"}[rival], "^", 60
    if model == "LPO4Rec":
        return "LPO4Rec settings", "tab:blue", "o", 45
    return "other baselines", "tab:grey", "s", 45


def frontier_points(grid):
    """[(label, overall HR@10, tail HR@10)] of every finished setting, means over its seeds (the
    multi-seed rows; others ran one seed), so that SASRec's point is where its bonus curve starts."""
    def mean(records, metric):
        return statistics.fmean(r["test_result"][metric] for r in records)
    return [(label, mean(records, "hit@10"), mean(records, "tailhit@10")) for label, records in grid.rows.items()
            if records]


def pareto_front(points):
    """Points not dominated in (overall, tail), sorted by overall."""
    front = [p for p in points if not any(q[1] >= p[1] and q[2] >= p[2] and (q[1], q[2]) != (p[1], p[2])
                                          for q in points)]
    return sorted(front, key=lambda p: p[1])


def bonus_curves(bonus_sweep):
    """{setting: [(bonus, test HR@10, test tail HR@10)]} (seed means), and the selected (setting, bonus)."""
    if bonus_sweep is None:
        return {}, None
    rows, _, selected = bonus_sweep
    curves = {}
    for row in rows:
        curves.setdefault(row["setting"], []).append(
            (row["tail_score_bonus"], row["test"]["hit@10"]["mean_std"][0], row["test"]["tailhit@10"]["mean_std"][0]))
    return curves, None if selected is None else (selected["setting"], selected["tail_score_bonus"])


def frontier(plt, grid, bonus_sweep=None):
    points = frontier_points(grid)
    curves, selected = bonus_curves(bonus_sweep)
    if len(points) < 2 and not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for setting, curve in curves.items():
        ax.plot([c[1] for c in curve], [c[2] for c in curve], marker=".", lw=1, ms=4,
                label=f"{setting} + tail bonus 0-{curve[-1][0]:g} (seed mean)")
        for bonus, x, y in curve:
            if (setting, bonus) == selected:
                ax.scatter(x, y, s=140, facecolors="none", edgecolors="k", zorder=4,
                           label=f"selected on validation: {setting} + bonus {bonus:g}")
    seen = set()
    for label, x, y in points:
        kind, color, marker, size = _kind(label)
        ax.scatter(x, y, c=color, marker=marker, s=size, label=None if kind in seen else kind, zorder=3)
        seen.add(kind)
        ax.annotate(label.replace("LPO4Rec ", ""), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    ax.plot([p[1] for p in front], [p[2] for p in front], color="tab:blue", lw=0.8, ls="--", label="Pareto front of the trained settings (bonus 0)")
    ax.set_xlabel("overall HR@10 (test)")
    ax.set_ylabel("tail HR@10 (test)")
    ax.set_title(f"{grid.dataset}: tail vs overall accuracy, every setting and tail bonus curve (seed means)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return fig


def tail_probability_labels(grid):
    labels = ["SASRec", "LPO4Rec (paper)"]
    if grid.has("LPO4Rec"):  # not an alias of the paper row
        labels.append("LPO4Rec")
    labels += [grid.table_label(r) for r in cat.RIVALS]
    return [label for label in labels if grid.has(label) and "tail_prob_gap" in grid.first_seed(label)["per_user"]]


def tail_probability(plt, grid):
    labels = tail_probability_labels(grid)
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    values = {label: [1e4 * g for g in grid.first_seed(label)["per_user"]["tail_prob_gap"]] for label in labels}
    lo = min(min(v) for v in values.values())
    hi = max(max(v) for v in values.values())
    bins = [lo + (hi - lo) * i / 60 for i in range(61)] if hi > lo else 10
    for label in labels:
        ax.hist(values[label], bins=bins, histtype="step", lw=1.4 if label.startswith(("SASRec", "LPO")) else 0.9,
                label=label)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("mean softmax prob. of a tail item minus of any item (x 1e-4), per test user")
    ax.set_ylabel("test users")
    ax.set_yscale("log")
    ax.set_title(f"{grid.dataset}: tail probability (first seed)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def tail_probability_summary(grid):
    labels = tail_probability_labels(grid)
    if not labels:
        return []
    lines = ["Tail probability (paper Fig. 5), per test user: mean softmax probability of a tail item minus "
             "that of any item (x 1e-4; first seed).", "",
             "| model | mean | median | users with gap > 0 |", "|---|---|---|---|"]
    for label in labels:
        gaps = grid.first_seed(label)["per_user"]["tail_prob_gap"]
        lines.append(f"| {label} | {1e4 * statistics.fmean(gaps):+.3f} | {1e4 * statistics.median(gaps):+.3f} | "
                     f"{100 * sum(g > 0 for g in gaps) / len(gaps):.1f} % |")
    return lines


def efficiency(epoch_cost_json, path):
    """Bar chart of ``benchmarks/epoch_cost.py --json`` output; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    with open(epoch_cost_json, encoding="utf-8") as f:
        results = json.load(f)
    mem_key = "cuda_peak_mb" if "cuda_peak_mb" in results[0] else "peak_rss_mb"
    models = [r["model"] for r in results]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_t.bar(models, [r["median_s"] for r in results], color="tab:blue")
    ax_t.set_ylabel("s / epoch (median)")
    ax_m.bar(models, [r[mem_key] for r in results], color="tab:orange")
    ax_m.set_ylabel("peak GPU memory (MB)" if mem_key == "cuda_peak_mb" else "peak RSS (MB)")
    for ax in (ax_t, ax_m):
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    device = results[0].get("gpu") or results[0].get("device", "cpu")
    fig.suptitle(f"Epoch cost, {results[0]['batches']} batches/epoch, {device}", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
