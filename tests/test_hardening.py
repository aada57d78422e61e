"""Long runs: determinism, resume after a kill, NaN stop, atomic checkpoints."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from recbole_lpo.errors import TrainingDiverged, UserInputError
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.utils import get_trainer

from conftest import ROOT, TINY_YAML, build_model

RUN = dict(epochs=4, stopping_step=10, learning_rate=0.01)


def _per_user(result):
    return json.load(open(result["result_file"]))["per_user"]


def test_same_seed_same_metrics(workdir, tiny_config):
    first = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], tiny_config(epochs=2), saved=True)
    second = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], tiny_config(epochs=2), saved=True)
    assert first["test_result"] == second["test_result"]
    assert _per_user(first) == _per_user(second)
    # benchmarks/compare_results.py on the pair: equal metrics, ratio 1, no variance for the t-test
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_results.py"), first["result_file"],
                          second["result_file"]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    row = out.stdout.splitlines()[3]
    assert row.count("1.00x, p=nan") == 4, out.stdout


KILL_AFTER_EPOCH_1 = """
import os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import recbole_lpo.trainer as trainer_module
from recbole_lpo.quick_start import run_recbole_lpo
valid_epoch = trainer_module.Trainer._valid_epoch
calls = []
def valid_then_die(self, *args, **kwargs):
    result = valid_epoch(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 2:  # epoch 1 validated (and saved if best): kill -9 style
        print("CHECKPOINT", self.saved_model_file, flush=True)
        os._exit(9)
    return result
trainer_module.Trainer._valid_epoch = valid_then_die
run_recbole_lpo("LPO4Rec", "tiny", [{yaml!r}], {config!r}, saved=True)
"""


def test_resume_after_kill_matches_uninterrupted_run(workdir, tiny_config):
    config = tiny_config(**RUN)
    uninterrupted = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], dict(config), saved=True)

    killed = tiny_config(**RUN, checkpoint_dir=str(workdir / "killed"))
    script = KILL_AFTER_EPOCH_1.format(root=str(ROOT), tests=str(ROOT / "tests"), yaml=TINY_YAML, config=killed)
    # same thread count as this process: float sums differ across thread counts
    threads = str(torch.get_num_threads())
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=workdir,
                         env=dict(os.environ, OMP_NUM_THREADS=threads), timeout=300)
    assert out.returncode == 9, out.stderr[-2000:]
    checkpoint = out.stdout.split("CHECKPOINT ")[1].split()[0]
    assert not [f for f in os.listdir(workdir / "killed") if f.endswith(".partial")]

    resumed = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], dict(killed), saved=True, resume=checkpoint)
    # the epochs trained after resuming repeat the uninterrupted run's exactly (data order,
    # dropout, negatives): compare their per-epoch training diagnostics
    history = resumed["preference_history"]
    assert history and all(history[e] == uninterrupted["preference_history"][e] for e in history)
    assert resumed["test_result"] == uninterrupted["test_result"]
    assert resumed["best_valid_score"] == uninterrupted["best_valid_score"]
    assert _per_user(resumed) == _per_user(uninterrupted)


def test_resume_errors_name_the_file(workdir, tiny_config):
    with pytest.raises(UserInputError, match="does not exist"):
        run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), resume=str(workdir / "gone.pth"))
    garbage = workdir / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="garbage.pth"):  # names the file
        run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), resume=str(garbage))
    sasrec = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(), saved=True)
    checkpoint = json.load(open(sasrec["result_file"]))["checkpoint"]
    with pytest.raises(UserInputError, match="it is a SASRec checkpoint, not GRU4Rec"):
        run_recbole_lpo("GRU4Rec", "tiny", [TINY_YAML], tiny_config(), resume=checkpoint)


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_best_checkpoint(workdir, tiny_config):
    config, model, train_data, valid_data = build_model("SASRec", tiny_config(epochs=3))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec", config)(config, model)
    calculate_loss, seen = model.calculate_loss, []

    def loss_turning_nan(interaction):
        seen.append(1)
        loss = calculate_loss(interaction)
        return loss * float("nan") if len(seen) == len(train_data) + 3 else loss  # epoch 1, batch 2

    model.calculate_loss = loss_turning_nan
    saved = {}
    original_save = trainer._save_checkpoint

    def save_and_remember(epoch, **kwargs):
        original_save(epoch, **kwargs)
        saved["digest"] = _digest(trainer.saved_model_file)

    trainer._save_checkpoint = save_and_remember
    with pytest.raises(TrainingDiverged, match="NaN at epoch 1, batch 2; best checkpoint kept"):
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    assert _digest(trainer.saved_model_file) == saved["digest"]


def test_checkpoint_write_is_atomic(workdir, tiny_config, monkeypatch):
    config, model, train_data, valid_data = build_model("SASRec", tiny_config())
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec", config)(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    before = _digest(trainer.saved_model_file)

    def crash_midway(obj, path, **kwargs):
        open(path, "wb").write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        trainer._save_checkpoint(5)
    assert _digest(trainer.saved_model_file) == before
    monkeypatch.undo()
    assert torch.load(trainer.saved_model_file, weights_only=False)["epoch"] == 0
