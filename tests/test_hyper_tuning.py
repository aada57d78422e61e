"""Hyper-parameter search: real trials on the tiny fixture, selection on valid only, clear errors."""

import json
import sys
from pathlib import Path

import pytest

from conftest import TINY_YAML

pytest.importorskip("hyperopt")
from recbole_lpo import hyper_tuning  # noqa: E402


def _cli(monkeypatch, capsys, *args):
    argv = ["hyper_tuning.py", *args]
    code = hyper_tuning.main(argv[1:])
    out, err = capsys.readouterr()
    return code, out, err


def _table_rows(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_two_trials_on_fixture(workdir, tiny_config, monkeypatch, capsys):
    params_file = workdir / "lambda.hyper"
    params_file.write_text("# two trials\nlpo_lambda choice [0.0,2.0]   # CE only, then a strong LPO term\n")
    table = workdir / "table.md"
    table.write_text("an earlier search\n")  # never overwritten
    overrides = [f"--{key}={value}" for key, value in tiny_config().items()]
    code, out, err = _cli(monkeypatch, capsys, "--model=LPO4Rec", "--dataset=tiny", f"--config_files={TINY_YAML}",
                          f"--params_file={params_file}", f"--output_file={table}", *overrides)
    assert code == 0, err
    assert table.read_text() == "an earlier search\n"
    written = workdir / "table-1.md"
    assert f"table written to {written}" in out

    rows = _table_rows(written)
    assert [float(row["lpo_lambda"]) for row in rows] == [0.0, 2.0]
    valid = [float(row["valid ndcg@10 (selection)"]) for row in rows]
    assert all(row["test ndcg@10"] for row in rows)  # test metrics recorded ...
    best = max(range(len(valid)), key=lambda i: (valid[i], -i))  # ... but the selection is argmax valid
    assert [row["selected"] for row in rows] == ["**yes**" if i == best else "" for i in range(len(rows))]

    # each trial's resolved config (its result JSON) holds its value and the fixed settings
    for row in rows:
        record = json.loads((workdir / "results" / row["result file"]).read_text())
        assert record["config"]["lpo_lambda"] == float(row["lpo_lambda"])
        assert (record["model"], record["dataset"], record["config"]["hidden_size"]) == ("LPO4Rec", "tiny", 16)
        assert record["best_valid_score"] == pytest.approx(float(row["valid ndcg@10 (selection)"]), abs=1e-4)


@pytest.mark.parametrize("bigger", [True, False])
def test_selection_reads_valid_never_test(bigger, workdir, tiny_config):
    # valid and test disagree on every pair; the first trial's valid score is 0.0
    valid = {0.1: 0.0, 0.3: 0.4, 0.5: 0.2, 1.0: 0.4}
    test = {0.1: 0.9, 0.3: 0.1, 0.5: 0.8, 1.0: 0.0}
    seen = []

    def objective(config_dict, config_file_list=None, saved=True):
        seen.append(config_dict)
        x = config_dict["lpo_lambda"]
        return {"model": config_dict["model"], "best_valid_score": valid[x], "valid_score_bigger": bigger,
                "best_valid_result": {"ndcg@10": valid[x]}, "test_result": {"ndcg@10": test[x]}}

    params_file = workdir / "lambda.hyper"
    params_file.write_text("lpo_lambda choice [0.1,0.3,0.5,1.0]\n")
    tuner, path = hyper_tuning.hyper_tune("LPO4Rec", "tiny", str(params_file), [TINY_YAML], tiny_config(),
                                          objective=objective)
    assert [c["lpo_lambda"] for c in seen] == [0.1, 0.3, 0.5, 1.0]  # the whole grid, in order
    assert all(c["model"] == "LPO4Rec" and c["dataset"] == "tiny" and "data_path" in c for c in seen)
    expected = 0.3 if bigger else 0.1  # the best valid (ties: the earlier), never the best test
    assert tuner.best_params == {"lpo_lambda": expected}
    assert Path(path).parent == workdir / "results"  # default: result_dir
    rows = _table_rows(Path(path))
    assert [row["selected"] == "**yes**" for row in rows] == [x == expected for x in valid]


def test_rivals_space_drops_what_the_model_does_not_read(workdir, tiny_config, capsys):
    from recbole_lpo.paths import PROPERTIES_DIR

    seen = []

    def objective(config_dict, config_file_list=None, saved=True):
        seen.append(config_dict)
        return {"model": config_dict["model"], "best_valid_score": config_dict["beta"], "valid_score_bigger": True,
                "best_valid_result": {}, "test_result": {}}

    tuner, _ = hyper_tuning.hyper_tune("DPO4Rec", "tiny", str(PROPERTIES_DIR / "hyper" / "rivals.hyper"),
                                       [TINY_YAML], tiny_config(), objective=objective)
    assert "note: gamma is not a setting of DPO4Rec; not searched" in capsys.readouterr().out
    assert len(seen) == 5 * 4 and not any("gamma" in c for c in seen)
    assert tuner.best_params == {"beta": 20.0, "pref_weight": 0.1}


@pytest.mark.parametrize(
    "space,args,needle",
    [
        (None, [], "params file 'missing.hyper' does not exist"),
        ("lpo_lambda choise [0.1,0.3]", [], "line 2: unknown parameter type 'choise'"),
        ("lpo_lambda choice [0.1,0.3", [], "line 2: choice needs a non-empty list"),
        ("lpo_tau uniform 1", [], "line 2: uniform needs numbers low,high"),
        ("lpo_lamda choice [0.1,0.3]", [], "'lpo_lamda' is not a config key of LPO4Rec; did you mean lpo_lambda?"),
        ("lpo_lambda choice [0.1,0.3]", ["--algo=grid"], "unknown algo 'grid'; valid: exhaustive, random, bayes"),
        ("lpo_tau loguniform -3,0", [], "exhaustive search needs 'choice' parameters only"),
        ("lpo_lambda choice [0.1,0.3]", ["--lpo_lambda=0.5"], "--lpo_lambda is searched by"),
    ],
)
def test_bad_input(space, args, needle, workdir, tiny_config, monkeypatch, capsys):
    params_file = workdir / "missing.hyper"
    if space is not None:
        params_file.write_text("# search space\n" + space + "\n")
    overrides = [f"--{key}={value}" for key, value in tiny_config().items()]
    code, out, err = _cli(monkeypatch, capsys, "--model=LPO4Rec", "--dataset=tiny", f"--config_files={TINY_YAML}",
                          "--params_file=missing.hyper", *args, *overrides)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and "trial 1" not in out


def test_shipped_spaces_parse():
    from recbole_lpo.paths import PROPERTIES_DIR

    spaces = {p.stem: hyper_tuning.read_params_file(str(p)) for p in (PROPERTIES_DIR / "hyper").glob("*.hyper")}
    assert set(spaces["LPO4Rec"]) == {"lpo_lambda", "lpo_tau", "neg_count", "alpha_tail"}
    assert set(spaces["rivals"]) == {"beta", "gamma", "pref_weight"}
    assert set(spaces["ORPO4Rec"]) == {"orpo_weight"}
    assert all(kind == "choice" for space in spaces.values() for kind, _ in space.values())  # exhaustive works
