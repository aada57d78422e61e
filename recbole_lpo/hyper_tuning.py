"""Hyper-parameter search with RecBole's ``HyperTuning`` (hyperopt), without ray.

hyperopt is an optional extra (``pip install -e .[hyper]``), imported only
when a search runs.

    python -m recbole_lpo.hyper_tuning --model=LPO4Rec --dataset=amazon-beauty \\
        --params_file=properties/hyper/LPO4Rec.hyper
    python -m recbole_lpo.hyper_tuning --model=SimPO4Rec --dataset=amazon-beauty \\
        --params_file=properties/hyper/rivals.hyper --algo=bayes --max_evals=30 --epochs=50

Flags: ``--config_files="a.yaml b.yaml"``, ``--algo=exhaustive|random|bayes``
(default exhaustive: the whole grid, every parameter a ``choice``),
``--max_evals=N`` (default: the grid size, or 20 for random/bayes),
``--early_stop=N`` (stop after N trials without a better valid score;
default off for exhaustive, 10 for random/bayes as in RecBole),
``--output_file=PATH`` (default ``<result_dir>/hyper-<model>-<dataset>-<time>.md``).
Any other ``--key=value`` is a fixed config override for every trial, and
must not name a searched parameter (the command line would beat the trial's
value).

Each trial is one ``recbole_lpo.quick_start.run_recbole_lpo`` run (its own
checkpoint, log and result JSON) with the trial's values as ``config_dict``
on top of the fixed model, data set, config files and overrides.

Selection rule: the trial with the best ``best_valid_score`` (the config's
``valid_metric`` on the validation split, higher or lower as
``valid_metric_bigger`` says; ties go to the earlier trial). Test metrics
are recorded in the table and never read by the selection.

Search-space file: RecBole's hyper format, one parameter a line,
``name type values`` (``lpo_lambda choice [0.1,0.3]``, ``beta uniform 1,20``,
``neg_count quniform 2,50,2``, ``lpo_tau loguniform -4.6,0``; loguniform
bounds are natural logs, as in hyperopt), plus ``#`` comments and blank
lines, checked line by line. A parameter that some plugin model reads but
this model does not (``gamma`` for DPO4Rec) is dropped with a note; an
unknown one is an error.

Against RecBole's own ``HyperTuning`` (``LPOHyperTuning`` below): the
exhaustive search walks the grid in order (RecBole's samples it with a
``numpy.random.RandomState``, which hyperopt >= 0.2.7 cannot use); the best
trial is kept by index (RecBole's ``if not self.best_score`` forgets a best
score of 0.0); the search is seeded with the config's ``seed``; a trial
that fails on its own values (bad value, diverged training) is recorded and
the search goes on; results are a Markdown table that never overwrites a
file. RecBole's plotly plot (``np.str``, gone in numpy 2) is not used.
"""

import argparse
import ast
import datetime
import difflib
import functools
import itertools
import os
import sys

import numpy as np
import yaml
from recbole.trainer.hyper_tuning import HyperTuning

from recbole_lpo.config import Config
from recbole_lpo.errors import TrainingDiverged, UserInputError, run_cli
from recbole_lpo.paths import PROPERTIES_DIR
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.records import unused_path

ALGOS = ("exhaustive", "random", "bayes")
PARAM_TYPES = {"choice": None, "uniform": 2, "quniform": 3, "loguniform": 2}  # type -> number of bounds
DEFAULT_MAX_EVALS = 20  # random / bayes
DEFAULT_EARLY_STOP = 10  # random / bayes (RecBole's default)


def objective_function(config_dict=None, config_file_list=None, saved=True, cmd_args=None):
    """RecBole's objective (same signature and result keys), run by ``run_recbole_lpo``.

    Model and data set come from ``config_dict`` / the config files / the
    command line (``cmd_args``), resolved by ``Config`` as RecBole's objective does. Also
    returns ``run_recbole_lpo``'s extra keys (``result_file``, ...).
    """
    config = Config(config_dict=config_dict, config_file_list=config_file_list, cmd_args=cmd_args)
    # each trial logs to its own file (run_recbole_lpo's start_logging)
    result = run_recbole_lpo(config["model"], config["dataset"], config_file_list, config_dict, saved,
                             cmd_args=cmd_args)
    return dict(result, model=config["model"])


def read_params_file(path):
    """``{name: (type, values)}`` from a hyper file; ``UserInputError`` naming the line otherwise."""
    if not os.path.isfile(path):
        raise UserInputError(f"params file '{path}' does not exist")
    params = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{path}, line {number}"
            if len(fields) < 3:
                raise UserInputError(f"{where}: expected 'name type values', got '{line.strip()}'")
            name, kind, text = fields[0], fields[1], "".join(fields[2:])
            if kind not in PARAM_TYPES:
                raise UserInputError(f"{where}: unknown parameter type '{kind}'; valid: {', '.join(PARAM_TYPES)}")
            if name in params:
                raise UserInputError(f"{where}: parameter '{name}' given twice")
            try:
                values = ast.literal_eval(text if kind == "choice" else f"[{text}]")
            except (SyntaxError, ValueError):
                values = None
            if kind == "choice":
                if not isinstance(values, (list, tuple)) or not values:
                    raise UserInputError(f"{where}: choice needs a non-empty list like [0.1,0.3], got '{text}'")
            elif (not isinstance(values, list) or len(values) != PARAM_TYPES[kind]
                  or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                  or values[0] >= values[1] or (kind == "quniform" and values[2] <= 0)):
                bounds = "low,high,q (q > 0)" if kind == "quniform" else "low,high"
                raise UserInputError(f"{where}: {kind} needs numbers {bounds} with low < high, got '{text}'")
            params[name] = (kind, list(values))
    if not params:
        raise UserInputError(f"params file '{path}' defines no parameter")
    return params


def build_space(params):
    from hyperopt import hp

    make = {"choice": hp.choice, "uniform": hp.uniform, "quniform": hp.quniform, "loguniform": hp.loguniform}
    return {name: make[kind](name, *([values] if kind == "choice" else values))
            for name, (kind, values) in params.items()}


def grid_search(new_ids, domain, trials, seed, grid):
    """hyperopt ``algo``: the next untried points of the ``choice`` grid, in order.

    ``grid`` is ``{name: number of values}``; a point is one index per name.
    """
    from hyperopt.base import miscs_update_idxs_vals

    names = list(grid)
    tried = {tuple(trial["misc"]["vals"][name][0] for name in names) for trial in trials.trials}
    untried = (p for p in itertools.product(*(range(grid[n]) for n in names)) if p not in tried)
    docs = []
    for new_id, point in zip(new_ids, untried):
        misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
        miscs_update_idxs_vals([misc], {n: [new_id] for n in names}, dict(zip(names, ([i] for i in point))))
        docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
    return docs


def no_progress(patience):
    """hyperopt ``early_stop_fn``: stop after ``patience`` trials without a better (finished) one."""

    def stop(trials, best=None, waited=0):
        loss = trials.trials[-1]["result"].get("loss")
        if loss is not None and (best is None or loss < best):
            return False, [loss, 0]
        return waited + 1 >= patience, [best, waited + 1]

    return stop


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


class LPOHyperTuning(HyperTuning):
    """RecBole's ``HyperTuning`` with the fixes listed in the module docstring.

    ``trials`` lists every trial as ``{"params", "status", "result", "error"}``;
    ``selected`` is the index of the chosen one (None until one finished).
    """

    def __init__(self, objective_function, params, fixed_config_dict=None, fixed_config_file_list=None,
                 algo="exhaustive", max_evals=None, early_stop=None, seed=2020):
        if algo not in ALGOS:
            raise UserInputError(f"unknown algo '{algo}'; valid: {', '.join(ALGOS)}")
        not_choice = [name for name, (kind, _) in params.items() if kind != "choice"]
        if algo == "exhaustive" and not_choice:
            raise UserInputError(f"exhaustive search needs 'choice' parameters only, got {', '.join(not_choice)}; "
                                 "use --algo=random or --algo=bayes")
        if max_evals is not None and max_evals < 1:
            raise UserInputError(f"max_evals must be at least 1, got {max_evals}")
        if algo == "exhaustive":
            grid = {name: len(values) for name, (_, values) in params.items()}
            size = int(np.prod(list(grid.values())))
            algo_fn = functools.partial(grid_search, grid=grid)
            max_evals = size if max_evals is None else min(max_evals, size)
        else:
            algo_fn, max_evals = algo, max_evals or DEFAULT_MAX_EVALS
        super().__init__(objective_function, space=build_space(params), fixed_config_file_list=fixed_config_file_list,
                         algo=algo_fn, max_evals=max_evals)
        if early_stop is None:
            early_stop = 0 if algo == "exhaustive" else DEFAULT_EARLY_STOP
        self.early_stop_fn = no_progress(early_stop) if early_stop > 0 else None
        self.fixed_config_dict = dict(fixed_config_dict or {})
        self.seed = seed
        self.trials, self.selected = [], None

    def trial(self, params):
        import hyperopt

        params = {name: _plain(params[name]) for name in self.space if name in params}  # file order
        record = {"params": params, "status": "ok", "result": None, "error": None}
        self.trials.append(record)
        print(f"trial {len(self.trials)}/{self.max_evals}: {self.params2str(params)}", flush=True)
        try:
            result = self.objective_function({**self.fixed_config_dict, **params}, self.fixed_config_file_list)
        except (UserInputError, TrainingDiverged) as error:  # this trial's values: record, go on
            record.update(status="failed", error=str(error))
            print(f"trial {len(self.trials)} failed: {error}", flush=True)
            return {"status": hyperopt.STATUS_FAIL, "loss": None}
        record["result"] = result
        score, bigger = float(result["best_valid_score"]), result["valid_score_bigger"]
        # RecBole's bookkeeping, for code that reads it
        self.model = result["model"]
        self.params_list.append(self.params2str(params))
        self.score_list.append(score)
        self.params2result[self.params2str(params)] = result
        best = None if self.selected is None else self.best_score
        if best is None or (score > best if bigger else score < best):  # valid score only; ties keep the earlier
            self.selected = len(self.trials) - 1
            self.best_score, self.best_params = score, params
            self.best_test_result = result["test_result"]
        print(f"trial {len(self.trials)} valid score {score:.4f}"
              f" (best so far: trial {self.selected + 1}, {self.best_score:.4f})", flush=True)
        return {"loss": -score if bigger else score, "status": hyperopt.STATUS_OK}

    def run(self):
        from hyperopt import fmin

        fmin(self.trial, self.space, algo=self.algo, max_evals=self.max_evals, early_stop_fn=self.early_stop_fn,
             rstate=np.random.default_rng(self.seed), show_progressbar=False, return_argmin=False)

    def table(self, valid_metric, title=None, notes=()):
        """The trials as Markdown: one row each, the selected one marked."""
        finished = [t["result"] for t in self.trials if t["result"] is not None]
        valid_metric = valid_metric.lower()
        names = list(dict.fromkeys(k for r in finished for k in r["best_valid_result"]))
        cut = valid_metric.split("@")[1] if "@" in valid_metric else None
        keys = [valid_metric] + [k for k in names if k != valid_metric and (cut is None or k.endswith("@" + cut))]
        params = list(dict.fromkeys(p for t in self.trials for p in t["params"]))
        header = (["trial", "selected"] + params + [f"valid {valid_metric} (selection)"]
                  + [f"valid {k}" for k in keys[1:]] + [f"test {k}" for k in keys] + ["result file"])
        rows = []
        for i, t in enumerate(self.trials):
            result = t["result"] or {}
            valid, test = result.get("best_valid_result", {}), result.get("test_result", {})
            if t["result"]:
                metrics = [result["best_valid_score"]] + [valid.get(k) for k in keys[1:]] + [test.get(k) for k in keys]
            else:
                metrics = [f"failed: {t['error']}"] + [""] * (2 * len(keys) - 1)
            rows.append([str(i + 1), "**yes**" if i == self.selected else ""]
                        + [_cell(t["params"].get(p), "{:.4g}") for p in params]
                        + [_cell(m) for m in metrics] + [os.path.basename(result.get("result_file") or "")])
        lines = [f"# {title}", ""] if title else []
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"

    def export_result(self, output_file=None, valid_metric="", title=None, notes=()):
        """Write ``table`` to ``output_file`` (a free name: never overwrites) and return the path."""
        path = unused_path(output_file)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.table(valid_metric, title, notes))
        return path


def _cell(value, float_format="{:.4f}"):
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return float_format.format(float(value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _plugin_keys():
    keys = set()
    for path in (PROPERTIES_DIR / "model").glob("*.yaml"):
        keys.update(yaml.safe_load(path.read_text()) or {})
    return keys


def check_params(params, config, source):
    """Drop parameters this model does not read (with a note); refuse unknown or overridden ones."""
    known, kept = set(config.final_config_dict), {}
    for name, spec in params.items():
        if name in config.cmd_config_dict:
            raise UserInputError(f"--{name} is searched by {source}; remove it from the command line")
        if name in known:
            kept[name] = spec
        elif name in _plugin_keys():
            print(f"note: {name} is not a setting of {config['model']}; not searched")
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserInputError(f"{source}: '{name}' is not a config key of {config['model']}{hint}")
    if not kept:
        raise UserInputError(f"{source}: no parameter of {config['model']} to search")
    return kept


def hyper_tune(model, dataset, params_file, config_file_list=None, config_dict=None, algo="exhaustive",
               max_evals=None, early_stop=None, output_file=None, objective=objective_function, cmd_args=None):
    """Run the search; write and print the table. Returns ``(tuner, table_path)``.

    ``cmd_args``: ``["--key=value", ...]`` fixed for every trial, above the search's values.
    """
    shipped = PROPERTIES_DIR.parent / params_file  # properties/hyper/... of the checkout or the installed package
    if not os.path.isfile(params_file) and shipped.is_file():
        params_file = str(shipped)  # the shipped properties/hyper/ from any folder
    params = read_params_file(params_file)
    fixed = dict(config_dict or {}, model=model, dataset=dataset)
    config = Config(model, dataset, config_file_list, fixed, cmd_args=cmd_args)  # fail before the first trial
    params = check_params(params, config, params_file)
    if cmd_args:
        objective = functools.partial(objective, cmd_args=cmd_args)
    tuner = LPOHyperTuning(objective, params, fixed, config_file_list, algo=algo, max_evals=max_evals,
                           early_stop=early_stop, seed=config["seed"])
    tuner.run()
    if output_file is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        output_file = os.path.join(config["result_dir"] or "saved", f"hyper-{model}-{dataset}-{stamp}.md")
    done = sum(t["result"] is not None for t in tuner.trials)
    bigger = "higher" if config["valid_metric_bigger"] else "lower"
    notes = [f"params file: `{params_file}`; algo: {algo}; {len(tuner.trials)} trials, {done} finished",
             f"selection: best valid {config['valid_metric']} ({bigger} is better); test metrics are not used",
             f"selected: trial {tuner.selected + 1}, {tuner.params2str(tuner.best_params)}"
             if tuner.selected is not None else "selected: none (no trial finished)"]
    path = tuner.export_result(output_file, config["valid_metric"], f"Hyper-parameter search: {model} on {dataset}",
                               notes)
    print(tuner.table(config["valid_metric"], notes=notes))
    print(f"table written to {path}")
    if tuner.selected is None:
        first = tuner.trials[0]["error"] if tuner.trials else "none ran"
        raise UserInputError(f"no trial finished (first failure: {first}); table: {path}")
    return tuner, path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", type=str, default="LPO4Rec", help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", type=str, default="amazon-beauty", help="data set name")
    parser.add_argument("--config_files", type=str, default=None, help="fixed config files, space separated")
    parser.add_argument("--params_file", type=str, required=True, help="search space (properties/hyper/*.hyper)")
    parser.add_argument("--algo", type=str, default="exhaustive", help="exhaustive, random or bayes")
    parser.add_argument("--max_evals", type=int, default=None, help="most trials (default: grid size, or 20)")
    parser.add_argument("--early_stop", type=int, default=None,
                        help="stop after N trials without a better valid score (0 = never)")
    parser.add_argument("--output_file", type=str, default=None, help="Markdown table (never overwritten)")
    args, overrides = parser.parse_known_args(argv)  # the rest: --key=value settings
    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    return run_cli(lambda: hyper_tune(args.model, args.dataset, args.params_file, config_file_list, algo=args.algo,
                                      max_evals=args.max_evals, early_stop=args.early_stop,
                                      output_file=args.output_file, cmd_args=overrides))


if __name__ == "__main__":
    sys.exit(main())
