"""Nothing lost, nothing silent: unknown keys, ranges, safe resume, unique run files, Ctrl-C.

Each case runs the command line from a scratch folder and asserts the exit
status, the one ``error:`` line (the last line printed) and the files left.
"""

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, ROOT, TINY_YAML, cli_on_fixture
from recbole_lpo.errors import UserInputError
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.records import claim_path

sys.path.insert(0, str(ROOT))
import run_recbole_lpo as cli  # noqa: E402


def _tree(folder):
    return set(Path(folder).rglob("*"))


def _cli(workdir, capsys, *args, module=cli):
    """The command line in-process from ``workdir``: (exit status, stderr lines, paths created)."""
    before = _tree(workdir)
    code = module.main([*args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, _tree(workdir) - before


def _tiny(*args):
    return ["--dataset=tiny", f"--data_path={FIXTURES}", f"--config_files={TINY_YAML}", *args]


# --- unknown keys -------------------------------------------------------------

@pytest.mark.parametrize("where", ["command line", "config file", "grid --set", "tuner"])
def test_misspelt_key_is_refused_with_a_suggestion(where, workdir, capsys):
    if where == "command line":
        code, err, created = _cli(workdir, capsys, "--model=LPO4Rec", *_tiny("--lpo_lamda=0.5"))
    elif where == "config file":
        (workdir / "mine.yaml").write_text("lpo_lamda: 0.5\n")
        code, err, created = _cli(workdir, capsys, "--model=LPO4Rec", "--dataset=tiny", f"--data_path={FIXTURES}",
                                  f"--config_files={TINY_YAML} {workdir / 'mine.yaml'}")
        created -= {workdir / "mine.yaml"}
    elif where == "grid --set":
        from recbole_lpo.errors import run_cli
        from recbole_lpo.reproduce import __main__ as grid

        before = _tree(workdir)
        code = run_cli(lambda: grid.main(["--datasets", "amazon-beauty", "--labels", "SASRec", "--seeds", "2020",
                                          "--set", "lpo_lamda=0.5", "--dry-run"]))
        err, created = capsys.readouterr().err.strip().splitlines(), _tree(workdir) - before
    else:
        pytest.importorskip("hyperopt")
        from recbole_lpo import hyper_tuning

        (workdir / "space.hyper").write_text("lpo_tau choice [0.5, 1.0]\n")
        code, err, created = _cli(workdir, capsys, "--model=LPO4Rec", *_tiny("--lpo_lamda=0.5"),
                                  f"--params_file={workdir / 'space.hyper'}", module=hyper_tuning)
        created -= {workdir / "space.hyper"}
    assert code == 2
    assert err[-1].startswith("error: unknown config key 'lpo_lamda'"), err[-3:]
    assert "did you mean lpo_lambda?" in err[-1] and "extra_keys" in err[-1]
    assert not created


def test_a_declared_key_of_your_own_is_accepted(workdir):
    from recbole_lpo.config import Config

    config = Config("SASRec", "tiny", [TINY_YAML], {"data_path": str(FIXTURES), "extra_keys": ["my_note"]},
                    cmd_args=["--my_note=42"])
    assert config["my_note"] == 42
    with pytest.raises(UserInputError, match="unknown config key 'my_note'"):
        Config("SASRec", "tiny", [TINY_YAML], {"data_path": str(FIXTURES)}, cmd_args=["--my_note=42"])


# --- ranges -----------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--train_batch_size=0"], "train_batch_size must be an integer >= 1, got 0"),
    (["--eval_batch_size=-5"], "eval_batch_size must be an integer >= 1, got -5"),
    (["--learning_rate=-0.001"], "learning_rate must be a number > 0, got -0.001"),
    (["--epochs=0"], "epochs must be an integer >= 1, got 0"),
    (["--stopping_step=0"], "stopping_step must be an integer >= 1, got 0"),
    (["--MAX_ITEM_LIST_LENGTH=0"], "MAX_ITEM_LIST_LENGTH must be an integer >= 1"),
    (["--hidden_dropout_prob=1.0"], "hidden_dropout_prob must be a number >= 0 and < 1"),
    (["--nproc=0"], "--nproc must be an integer >= 1, got 0"),
    (["--valid_metric=MRR@10"], "valid_metric MRR@10 is not computed"),
    (["--valid_metric=NDCG@20"], "valid_metric NDCG@20: the cut-off must be one of topk [5, 10]"),
    (["--checkpoint_dir=PLACEHOLDER/ckpt"], "checkpoint_dir"),
    (["--result_dir=PLACEHOLDER/results"], "result_dir"),
])
def test_out_of_range_settings_fail_before_anything_runs(args, needle, workdir, capsys):
    blocker = workdir / "a_file"
    blocker.write_text("")
    args = [a.replace("PLACEHOLDER", str(blocker)) for a in args]
    code, err, created = _cli(workdir, capsys, "--model=SASRec", *_tiny(*args))
    assert code == 2
    assert err[-1].startswith("error:") and needle in err[-1], err[-3:]
    assert not created  # no log/, log_tensorboard/, saved/ (not even empty)


# --- resume --------------------------------------------------------------------------

def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def unfinished(workdir, tiny_config):
    """A checkpoint of a 3-epoch run killed after epoch 0 (its 'finished' mark removed)."""
    result = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=1), saved=True)
    path = json.load(open(result["result_file"]))["checkpoint"]
    state = torch.load(path, weights_only=False)
    assert state.pop("finished") == {"epochs_trained": 1}
    state["config"]["epochs"] = 3  # as if the run had been started with epochs=3
    torch.save(state, path)
    return path


@pytest.mark.parametrize("change,needle", [
    ({"learning_rate": 0.05}, "with other settings: learning_rate 0.001 -> 0.05"),
    ({"seed": 7}, "with other settings: seed 2020 -> 7"),
    ({"model": "GRU4Rec"}, "it is a SASRec checkpoint, not GRU4Rec"),
    ({"dataset": "tiny2"}, "it was trained on data set tiny, not tiny2"),
    ({"items": "renamed"}, "it was trained on other items"),
])
def test_resume_refuses_another_run_and_never_writes_its_file(change, needle, unfinished, workdir, tiny_config):
    before = _digest(unfinished)
    config, model, dataset = tiny_config(epochs=3), change.get("model", "SASRec"), change.get("dataset", "tiny")
    if "dataset" in change or "items" in change:
        folder = workdir / "data" / dataset
        folder.mkdir(parents=True)
        text = (FIXTURES / "tiny" / "tiny.inter").read_text()
        if "items" in change:  # one item token renamed: same item count, other vocabulary
            lines = text.splitlines()
            token = lines[1].split("\t")[1]
            text = "\n".join([lines[0]] + [line.replace(f"\t{token}\t", f"\t{token}x\t") for line in lines[1:]]) + "\n"
        (folder / f"{dataset}.inter").write_text(text)
        config["data_path"] = str(workdir / "data")
    config.update({k: v for k, v in change.items() if k in ("learning_rate", "seed")})
    with pytest.raises(UserInputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        run_recbole_lpo(model, dataset, [TINY_YAML], config, saved=True, resume=unfinished)
    assert _digest(unfinished) == before


def test_resume_writes_a_new_checkpoint_and_refuses_a_finished_run(unfinished, workdir, tiny_config):
    before = _digest(unfinished)
    resumed = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=3), saved=True, resume=unfinished)
    record = json.load(open(resumed["result_file"]))
    assert record["epochs_trained"] == 3  # epochs 1 and 2 trained after the resumed epoch 0
    assert record["checkpoint"] != unfinished and os.path.isfile(record["checkpoint"])
    assert _digest(unfinished) == before  # the file resumed from is never written
    # epochs may change on resume; a finished run is refused and trains nothing
    with pytest.raises(UserInputError, match="its run finished .3 epochs trained.; nothing to resume"):
        run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=5), saved=True,
                        resume=record["checkpoint"])


# --- unique run files --------------------------------------------------------------

def test_runs_started_in_the_same_second_never_share_a_file(workdir, tiny_config, monkeypatch):
    import datetime as real_datetime

    import recbole_lpo.records as records

    class FrozenDatetime(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 12, 0, 0)

    monkeypatch.setattr(records.datetime, "datetime", FrozenDatetime)
    first = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), saved=True)
    second = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), saved=True)
    checkpoints = [json.load(open(r["result_file"]))["checkpoint"] for r in (first, second)]
    assert first["result_file"] != second["result_file"]
    assert checkpoints[0] != checkpoints[1] and all(os.path.isfile(c) for c in checkpoints)
    assert all("Jan-01-2026_12-00-00" in c for c in checkpoints)
    logs = list((workdir / "log" / "SASRec").glob("*.log"))
    assert len(logs) == 2


def _claim(path, start, out):
    start.wait()  # all eight at once
    out.put(claim_path(path))


def test_eight_processes_claiming_one_name_get_eight_files(tmp_path):
    target = str(tmp_path / "result.json")
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_claim, args=(target, start, out)) for _ in range(8)]
    for process in processes:
        process.start()
    claimed = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join()
    assert len(set(claimed)) == 8 and all(os.path.isfile(p) for p in claimed)


def test_stale_partial_files_are_removed_on_the_next_start(workdir, tiny_config):
    saved = workdir / "saved"
    saved.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    stale = saved / f"SASRec-old.pth.{dead}.partial"
    live = saved / f"SASRec-other.pth.{os.getpid()}.partial"  # a run of a live process: kept
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), saved=True)
    assert not stale.exists() and live.exists()


# --- Ctrl-C ---------------------------------------------------------------------------

INTERRUPT_IN_EPOCH_1 = """
import sys
sys.path.insert(0, {root!r})
import recbole_lpo.trainer as trainer_module
import run_recbole_lpo
valid_epoch = trainer_module.Trainer._valid_epoch
calls = []
def valid_then_interrupt(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise KeyboardInterrupt  # Ctrl-C in epoch 1's validation
    return valid_epoch(self, *args, **kwargs)
trainer_module.Trainer._valid_epoch = valid_then_interrupt
sys.exit(run_recbole_lpo.main(sys.argv[1:]))
"""


def test_ctrl_c_names_the_last_checkpoint_and_how_to_resume(workdir):
    script = workdir / "interrupt.py"
    script.write_text(INTERRUPT_IN_EPOCH_1.format(root=str(ROOT)))
    args = ["--model=SASRec", "--dataset=tiny", f"--config_files={TINY_YAML}", f"--data_path={FIXTURES}",
            f"--checkpoint_dir={workdir / 'saved'}", f"--result_dir={workdir / 'results'}", "--epochs=3"]
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=workdir,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 130, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: last checkpoint ") and "Traceback" not in out.stderr
    checkpoint = last.split("last checkpoint ")[1].split()[0]
    assert os.path.isfile(checkpoint) and f"--resume={checkpoint}" in last
    assert not (workdir / "results").exists()  # no result for an unfinished run
    resumed = cli_on_fixture(workdir, "--model=SASRec", "--epochs=3", f"--resume={checkpoint}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
