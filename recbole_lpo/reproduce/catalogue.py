"""What ``python -m recbole_lpo.reproduce`` runs: profiles, experiments and the grid.

An *experiment* is a named setting (label -> model + config overrides, plus
the frozen checkpoints it loads from other experiments). The paper's figures
and tables are groups of experiment labels:

- ``table``: paper Table I rows (built-ins, rivals, tail baselines, LPO4Rec);
- ``tuning``: the same small grid budget for LPO4Rec and every rival; defaults
  are selected from it on validation only (``selection.py``);
- ``ablation``: paper Table II;
- ``sensitivity``: paper Fig. 4, one key swept at a time around the paper's values;
- ``screen``: candidates for a no-regret default (tail accuracy up, overall
  accuracy not down), beyond the paper; not in the default groups.

A *run* is one experiment on one data set with one seed under one profile.
"""

from dataclasses import dataclass, field

import yaml

from recbole_lpo.errors import UserInputError
from recbole_lpo.paths import PROPERTIES_DIR

PROFILE_DIR = PROPERTIES_DIR / "reproduce"
DATASETS = ("amazon-beauty", "amazon-sports-outdoors", "amazon-toys-games")
SEEDS = (2020, 2021, 2022)
GROUPS = ("table", "tuning", "ablation", "sensitivity", "screen")
DEFAULT_GROUPS = ("table", "tuning", "ablation", "sensitivity")

# the paper's LPO4Rec values (Sec. V-B; METHOD.md), from their own file so the row never moves with the
# defaults in LPO4Rec.yaml
LPO_PAPER_FILE = PROPERTIES_DIR / "model" / "LPO4Rec-paper.yaml"
with open(LPO_PAPER_FILE, encoding="utf-8") as _f:
    LPO_PAPER = yaml.safe_load(_f)
_LPO_DEFAULTS = {}
for _name in ("overall.yaml", "model/LPO4Rec.yaml"):  # the files Config reads the LPO keys from, in order
    with open(PROPERTIES_DIR / _name, encoding="utf-8") as _f:
        _LPO_DEFAULTS.update(yaml.safe_load(_f) or {})


def defaults_are(values):
    """Whether --model=LPO4Rec (its YAML defaults) trains with every key of ``values`` as given."""
    return all(_LPO_DEFAULTS.get(key) == value for key, value in values.items())


# whether --model=LPO4Rec trains the paper's values: then its row is the paper's
DEFAULTS_ARE_PAPER = defaults_are(LPO_PAPER)
LPO_ON_BUILTIN = dict(LPO_PAPER, preference_loss="lpo")
REFERENCE = {"ref_model_path": "SASRec"}  # config key -> label of the run whose best checkpoint it loads


@dataclass(frozen=True)
class Experiment:
    label: str
    model: str
    overrides: dict = field(default_factory=dict)
    needs: dict = field(default_factory=dict)  # config key -> label of a run (same data set, seed, profile)
    family: str = ""  # models tuned together share a family (selection); "" = not tuned


def _experiments():
    exps = [
        Experiment("SASRec", "SASRec"),
        Experiment("GRU4Rec", "GRU4Rec"),
        Experiment("Caser", "Caser"),
        Experiment("R2Rec", "R2Rec"),
        Experiment("MELT", "MELT", needs={"pretrained_model_path": "SASRec"}),  # the paper's two steps
        Experiment("CITIES", "CITIES", needs={"base_model_path": "SASRec"}),
        Experiment("LPO4Rec (paper)", "LPO4Rec", LPO_PAPER, family="LPO4Rec"),
        # the current YAML defaults (properties/model/LPO4Rec.yaml): the selected setting
        Experiment("LPO4Rec", "LPO4Rec"),
        # ablations (paper Table II)
        Experiment("LPO4Rec w/o LPO term", "LPO4Rec", dict(LPO_PAPER, lpo_lambda=0.0)),
        Experiment("LPO4Rec w/o reweighting", "LPO4Rec", dict(LPO_PAPER, reweight=False)),
        Experiment("LPO4Rec top-K sampling", "LPO4Rec", dict(LPO_PAPER, neg_sampler="topk")),
        Experiment("LPO4Rec uniform sampling", "LPO4Rec", dict(LPO_PAPER, neg_sampler="uniform")),
        Experiment("GRU4Rec + LPO", "GRU4Rec", LPO_ON_BUILTIN),
        Experiment("Caser + LPO", "Caser", LPO_ON_BUILTIN),
    ]
    # tuning grid: three settings per model (the first is each model's default / the paper's values)
    for lam, tau in ((0.5, 1.0), (0.1, 1.0)):
        exps.append(Experiment(f"LPO4Rec lambda={lam} tau={tau}", "LPO4Rec",
                               dict(LPO_PAPER, lpo_lambda=lam, lpo_tau=tau), family="LPO4Rec"))
    rivals = {"DPO": ("DPO4Rec", "beta", (1.0, 0.1, 5.0)), "S-DPO": ("SDPO4Rec", "beta", (1.0, 0.1, 5.0)),
              "ORPO": ("ORPO4Rec", "orpo_weight", (0.5, 0.1, 1.0))}
    for label, (model, key, values) in rivals.items():
        needs = REFERENCE if model in ("DPO4Rec", "SDPO4Rec") else {}
        exps.append(Experiment(label, model, {key: values[0]}, needs, family=label))
        exps += [Experiment(f"{label} {key}={v}", model, {key: v}, needs, family=label) for v in values[1:]]
    simpo = ((1.0, 0.5), (5.0, 0.5), (5.0, 2.0))
    exps.append(Experiment("SimPO", "SimPO4Rec", {"beta": 1.0, "gamma": 0.5}, family="SimPO"))
    exps += [Experiment(f"SimPO beta={b} gamma={g}", "SimPO4Rec", {"beta": b, "gamma": g}, family="SimPO")
             for b, g in simpo[1:]]
    exps += [Experiment(screen_label(overrides), "LPO4Rec", dict(LPO_PAPER, **overrides)) for overrides in SCREEN]
    # sensitivity (paper Fig. 4): one key at a time around the paper's values
    for key, values in SWEEPS.items():
        for value in values:
            label = sweep_label(key, value)
            if value != LPO_PAPER[key] and label not in {e.label for e in exps}:
                exps.append(Experiment(label, "LPO4Rec", dict(LPO_PAPER, **{key: value})))
    return {e.label: e for e in exps}


SWEEPS = {"lpo_lambda": (0.1, 0.3, 0.5, 1.0), "lpo_tau": (0.1, 0.5, 1.0), "neg_count": (2, 10, 20),
          "alpha_tail": (0.0, 1.0, 2.0)}


# no-regret candidates (changes to the paper's values): a gentler term (lambda 0.1, tau 1), negatives
# from all items, weaker or no reweighting (alpha_tail 0.5, reweight False), a warm-up of the weight
# (pref_warmup_epochs); benchmarks/tail_bonus_sweep.py adds a ranking-time tail bonus to their checkpoints
SCREEN = (
    {"lpo_lambda": 0.1, "lpo_tau": 1.0, "reweight": False},
    {"lpo_lambda": 0.1, "lpo_tau": 1.0, "neg_pool": "all", "alpha_tail": 0.5},
    {"lpo_lambda": 0.1, "lpo_tau": 1.0, "alpha_tail": 0.5},
    {"lpo_lambda": 0.0, "alpha_tail": 0.5},
    {"lpo_lambda": 0.1, "lpo_tau": 0.5, "neg_pool": "all", "alpha_tail": 0.5},
    {"lpo_lambda": 0.1, "lpo_tau": 1.0, "neg_pool": "all", "alpha_tail": 0.5, "pref_warmup_epochs": 10},
)


def screen_label(overrides):
    return "LPO4Rec screen: " + " ".join(f"{k}={v}" for k, v in overrides.items())


def sweep_label(key, value):
    """The experiment label of one sensitivity point (the paper's values map to the paper row)."""
    if value == LPO_PAPER[key]:
        return "LPO4Rec (paper)"
    if key in ("lpo_lambda", "lpo_tau"):
        lam = value if key == "lpo_lambda" else LPO_PAPER["lpo_lambda"]
        tau = value if key == "lpo_tau" else LPO_PAPER["lpo_tau"]
        return f"LPO4Rec lambda={lam} tau={tau}"
    return f"LPO4Rec {key}={value}"


EXPERIMENTS = _experiments()
RIVALS = ("DPO", "S-DPO", "SimPO", "ORPO")
TABLE_ROWS = ("SASRec", "GRU4Rec", "Caser", *RIVALS, "R2Rec", "MELT", "CITIES", "LPO4Rec (paper)", "LPO4Rec")
ABLATION_ROWS = ("SASRec", "LPO4Rec (paper)", "LPO4Rec w/o LPO term", "LPO4Rec w/o reweighting",
                 "LPO4Rec top-K sampling", "LPO4Rec uniform sampling", "GRU4Rec", "GRU4Rec + LPO", "Caser",
                 "Caser + LPO")
TUNING_FAMILIES = ("LPO4Rec", *RIVALS)
# the rows run with every seed: the baseline, LPO4Rec's two rows and the strongest tail baselines (README
# headline table); the others run with the first
MULTI_SEED = ("SASRec", "LPO4Rec (paper)", "LPO4Rec", "R2Rec", "CITIES")
TAIL_BASELINES = ("R2Rec", "CITIES")  # the headline table shows the one selected on validation
# the converged profile whose reports are the repository's result tables: <out>/<dataset>.md; every other
# profile writes <out>/<dataset>-<profile>.md beside them
PRIMARY_PROFILE = "cpu"


def report_stem(dataset, profile):
    """File name stem of ``dataset``'s report under ``profile``."""
    return dataset if profile == PRIMARY_PROFILE else f"{dataset}-{profile}"


def tuning_labels(family):
    return [e.label for e in EXPERIMENTS.values() if e.family == family]


def selection_candidates(family):
    """The settings a family's default is selected from, its default first: its tuning grid (the same
    budget for every family), and for LPO4Rec also the screened no-regret candidates (beyond the
    paper's budget), so that ``--model=LPO4Rec`` can be any setting the search measured."""
    labels = tuning_labels(family)
    if family == "LPO4Rec":
        labels += [screen_label(overrides) for overrides in SCREEN]
    return labels


def sensitivity_labels():
    return list(dict.fromkeys(sweep_label(k, v) for k, values in SWEEPS.items() for v in values))


def group_labels(group):
    if group == "table":
        return list(TABLE_ROWS)
    if group == "tuning":
        return [label for family in TUNING_FAMILIES for label in tuning_labels(family)]
    if group == "ablation":
        return list(ABLATION_ROWS)
    if group == "sensitivity":
        return sensitivity_labels()
    if group == "screen":
        return ["SASRec", "LPO4Rec (paper)", *(screen_label(overrides) for overrides in SCREEN)]
    raise UserInputError(f"unknown group '{group}': valid groups are {', '.join(GROUPS)}")


def load_profile(name):
    """The config overrides of profile ``name`` (``properties/reproduce/<name>.yaml``)."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise UserInputError(f"unknown profile '{name}': valid profiles are {', '.join(valid)}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@dataclass(frozen=True)
class Run:
    label: str
    dataset: str
    seed: int
    profile: str

    @property
    def experiment(self):
        return EXPERIMENTS[self.label]

    def dependencies(self):
        return [Run(label, self.dataset, self.seed, self.profile) for label in self.experiment.needs.values()]


def _priority(label):
    """Training order: multi-seed rows, the rivals, the other Table I rows, the tuning grid,
    ablations, then sensitivity points."""
    if label in MULTI_SEED:
        return 0
    if label in RIVALS:
        return 1
    if label in TABLE_ROWS:
        return 2
    if label in group_labels("tuning"):
        return 3
    return 4 if label in ABLATION_ROWS else 5


def plan(datasets, groups, seeds, profile, labels=None):
    """The runs for ``groups`` (or explicit ``labels``), dependencies first, without repeats.

    Rows in ``MULTI_SEED`` run with every seed, the others with the first.
    """
    unknown = [label for label in labels or () if label not in EXPERIMENTS]
    if unknown:
        raise UserInputError(f"unknown experiment {unknown[0]!r}: valid labels are {', '.join(EXPERIMENTS)}")
    wanted = list(labels) if labels else [label for g in groups for label in group_labels(g)]
    wanted = sorted(dict.fromkeys(wanted), key=_priority)
    runs = []
    for dataset in datasets:
        for label in dict.fromkeys(wanted):
            for seed in (seeds if label in MULTI_SEED else seeds[:1]):
                runs.append(Run(label, dataset, seed, profile))
    ordered, seen = [], set()

    def visit(run):
        if run in seen:
            return
        seen.add(run)
        for dep in run.dependencies():
            visit(dep)
        ordered.append(run)

    for run in runs:
        visit(run)
    return ordered
