"""Bad input: one clear `error:` line, exit status 2, no traceback."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, TINY_YAML

sys.path.insert(0, str(ROOT))
import run_recbole_lpo  # noqa: E402


def _files(folder):
    """Every file and folder under ``folder`` (an empty folder left behind counts)."""
    return set(Path(folder).rglob("*"))


def _cli(monkeypatch, capsys, *args):
    """Run the CLI in-process; bad input must leave no file behind (log, checkpoint, result)."""
    before = _files(os.getcwd())
    argv = ["run_recbole_lpo.py", *args]
    code = run_recbole_lpo.main(argv[1:])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert _files(os.getcwd()) == before, "bad input left files behind"
    if code == 2:
        assert err.strip().splitlines()[-1].startswith("error:"), "the error line must be the last one"
    return code, lines, err


def _broken_dataset(workdir, header, row):
    folder = workdir / "broken"
    folder.mkdir()
    (folder / "broken.inter").write_text(header + "\n" + row + "\n")
    return ["--dataset=broken", f"--data_path={workdir}", f"--config_files={TINY_YAML}"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model=SASRek", "--dataset=tiny"], "unknown model 'SASRek'; did you mean SASRec"),
        (["--model=SASRec", "--dataset=no-such-data"], "dataset 'no-such-data' not found"),
        (["--model=SASRec", "--dataset=tiny", "--tail_ratio=1.5"], "tail_ratio must be a number in (0, 1)"),
        (["--model=SASRec", "--dataset=tiny", "--tail_ratio=0"], "tail_ratio must be a number in (0, 1)"),
        (["--model=SASRec", "--dataset=tiny", "--eval_args={'mode':'uni100'}"], "need full ranking"),
        (["--model=SASRec", "--dataset=tiny", "--metrics=['Hit','Bogus']"], "no metric named 'Bogus'"),
    ],
)
def test_config_errors(args, needle, workdir, monkeypatch, capsys):
    code, lines, err = _cli(monkeypatch, capsys, *args, f"--data_path={FIXTURES}", f"--config_files={TINY_YAML}")
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "header,row,needle",
    [
        ("user_id:token\titem_id:tokn\ttimestamp:float", "u1\ti1\t1", "column 'item_id' has unknown type 'tokn'"),
        ("user_id:token\titem_id\ttimestamp:float", "u1\ti1\t1", "'item_id' is not 'name:type'"),
        ("user_id:token\titem_id:token\ttimestamp:float", "u1\ti1\tyesterday",
         "broken.inter, line 2: column 'timestamp' (float) has non-numeric value 'yesterday'"),
    ],
)
def test_malformed_inter_file(header, row, needle, workdir, monkeypatch, capsys):
    code, lines, err = _cli(monkeypatch, capsys, "--model=SASRec", *_broken_dataset(workdir, header, row))
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_missing_dataset_lists_available_ones(workdir, monkeypatch, capsys):
    shutil.copytree(FIXTURES / "tiny", workdir / "tiny")
    code, lines, _ = _cli(monkeypatch, capsys, "--model=SASRec", "--dataset=tinny", f"--data_path={workdir}",
                          f"--config_files={TINY_YAML}")
    assert code == 2 and "tiny" in lines[0].split("data sets in")[1]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--neg_count=0"], "neg_count must be >= 1"),
        (["--neg_count=48"], "neg_count=48 exceeds the 47 head items available as negatives"),
        (["--lpo_tau=0"], "lpo_tau must be > 0"),
        (["--lpo_lambda=-1"], "lpo_lambda must be >= 0"),
        (["--neg_sampler=softmax"], "unknown neg_sampler 'softmax'; valid: gumbel, topk, uniform"),
        (["--tail_ratio=0.01"], "gives 0 tail and 60 head items"),
        (["--preference_loss=dpo"], "LPO4Rec always trains with preference_loss lpo"),
    ],
)
def test_lpo4rec_hyper_parameters(args, needle, workdir, monkeypatch, capsys):
    code, lines, err = _cli(monkeypatch, capsys, "--model=LPO4Rec", "--dataset=tiny", f"--data_path={FIXTURES}",
                            f"--config_files={TINY_YAML}", *args)
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def _assert_one_error(code, lines, err, needle):
    assert code == 2
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "yaml_text,needle",
    [
        ("epochs: ten\n", "epochs must be of type int, got 'ten'"),
        ("learning_rate: [0.1]\n", "learning_rate must be of type float"),
        ("hidden_size: 1.5\n", "hidden_size must be of type int, got 1.5"),
        ("topk: best\n", "topk must be of type list or int or None"),
        ("reweight: maybe\n", "reweight must be of type bool"),
        ("metrics: 3\n", "metrics must be of type list or str"),
        ("epochs: [1,\n", "invalid YAML"),
    ],
)
def test_yaml_with_wrong_types(yaml_text, needle, workdir, monkeypatch, capsys):
    (workdir / "mine.yaml").write_text(yaml_text)
    code, lines, err = _cli(monkeypatch, capsys, "--model=LPO4Rec", "--dataset=tiny", f"--data_path={FIXTURES}",
                            f"--config_files={TINY_YAML} {workdir / 'mine.yaml'}")
    _assert_one_error(code, lines, err, needle)


def test_users_with_too_few_interactions(workdir, monkeypatch, capsys):
    folder = workdir / "short"
    folder.mkdir()
    rows = (FIXTURES / "tiny" / "tiny.inter").read_text().splitlines()
    rows += ["newcomer\ti001\t9999990", "newcomer\ti002\t9999991"]  # two interactions only
    (folder / "short.inter").write_text("\n".join(rows) + "\n")
    code, lines, err = _cli(monkeypatch, capsys, "--model=SASRec", "--dataset=short", f"--data_path={workdir}",
                            f"--config_files={TINY_YAML}")
    _assert_one_error(code, lines, err, "1 users have fewer than 3 interactions after filtering")
    assert 'user_inter_num_interval: "[3,inf)"' in lines[0]


@pytest.mark.parametrize(
    "model,args,needle",
    [
        ("LPO4Rec", ["--lpo_tau=-1"], "lpo_tau must be > 0"),
        ("LPO4Rec", ["--neg_count=2.5"], "neg_count must be of type int"),
        ("LPO4Rec", ["--neg_pool=tail"], "unknown neg_pool 'tail'; valid: head, all"),
        ("LPO4Rec", ["--alpha_tail=high"], "alpha_tail must be of type float"),
        ("LPO4Rec", ["--alpha_head=[1]"], "alpha_head must be of type float"),
        ("LPO4Rec", ["--sampler_seed=1.5"], "sampler_seed must be of type int"),
        ("DPO4Rec", ["--beta=0"], "beta must be > 0"),
        ("DPO4Rec", ["--pref_weight=-1"], "pref_weight must be >= 0"),
        ("SDPO4Rec", ["--beta=-2"], "beta must be > 0"),
        ("SDPO4Rec", ["--neg_count=0"], "neg_count must be >= 1"),
        ("SimPO4Rec", ["--gamma=wide"], "gamma must be of type float"),
        ("SimPO4Rec", ["--beta=0"], "beta must be > 0"),
        ("ORPO4Rec", ["--orpo_weight=-0.1"], "orpo_weight must be >= 0"),
        ("ORPO4Rec", ["--neg_sampler=hard"], "unknown neg_sampler 'hard'"),
        ("GRU4Rec", ["--preference_loss=kto"], "unknown preference_loss 'kto'; valid: lpo, dpo, sdpo, simpo, orpo"),
        ("Caser", ["--preference_loss=lpo", "--loss_type=BPR", "--train_neg_sample_args={'distribution':'uniform'}"],
         "needs a backbone trained with loss_type CE"),
        ("DPO4Rec", [], "DPO4Rec needs ref_model_path"),
    ],
)
def test_invalid_hyper_parameters_of_every_model(model, args, needle, workdir, monkeypatch, capsys):
    code, lines, err = _cli(monkeypatch, capsys, f"--model={model}", "--dataset=tiny", f"--data_path={FIXTURES}",
                            f"--config_files={TINY_YAML}", *args)
    _assert_one_error(code, lines, err, needle)
