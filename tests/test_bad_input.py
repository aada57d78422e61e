"""Bad input: one clear `error:` line, exit status 2, no traceback."""

import shutil
import sys

import pytest

from conftest import FIXTURES, ROOT, TINY_YAML

sys.path.insert(0, str(ROOT))
import run_recbole_lpo  # noqa: E402


def _cli(monkeypatch, capsys, *args):
    argv = ["run_recbole_lpo.py", *args]
    monkeypatch.setattr(sys, "argv", argv)  # RecBole's Config reads sys.argv itself
    code = run_recbole_lpo.main(argv[1:])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
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
         "column 'timestamp' (float) has non-numeric value 'yesterday' on line 2"),
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
