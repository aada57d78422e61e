import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

import recbole_lpo  # noqa: E402,F401  (applies compat, registers metrics)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY_YAML = str(FIXTURES / "tiny.yaml")


@pytest.fixture(autouse=True)
def tensorboard_writers(monkeypatch):
    """Every tensorboard writer a test opens (the list it yields), closed at its end.

    RecBole's trainer never closes its writer (``run_recbole_lpo`` does, but
    tests also build trainers themselves); its flush thread would outlive the
    test and write into a temporary folder that a later test removes.
    """
    from torch.utils.tensorboard import SummaryWriter

    opened = []
    original_init = SummaryWriter.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(SummaryWriter, "__init__", init)
    yield opened
    for writer in opened:
        writer.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary folder (RecBole writes log/ into the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_config(workdir):
    """config_dict pointing at the tiny fixture, with outputs under the temp folder."""

    def make(**overrides):
        config = {
            "data_path": str(FIXTURES),
            "checkpoint_dir": str(workdir / "saved"),
            "result_dir": str(workdir / "results"),
        }
        config.update(overrides)
        return config

    return make


def build_model(model_name, config_dict, dataset="tiny"):
    """Config, model (preference objective attached if configured) and data loaders,
    seeded exactly as ``run_recbole_lpo`` seeds them."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_lpo.config import Config
    from recbole_lpo.quick_start import create_model

    config = Config(model_name, dataset, [TINY_YAML], config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = create_model(config, train_data.dataset)
    return config, model, train_data, valid_data


def train_losses(model, train_data, steps=6):
    """Losses of the first ``steps`` Adam steps, batch for batch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for step, batch in enumerate(train_data):
        if step == steps:
            break
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def cli_on_fixture(workdir, *args, config_files=TINY_YAML, data_path=FIXTURES):
    """``run_recbole_lpo.py`` on the tiny fixture in a subprocess, outputs under ``workdir``
    (checkpoints in saved/, result JSONs in results/), as many threads as this process."""
    command = [sys.executable, str(ROOT / "run_recbole_lpo.py"), "--dataset=tiny", f"--config_files={config_files}",
               f"--data_path={data_path}", f"--checkpoint_dir={workdir / 'saved'}",
               f"--result_dir={workdir / 'results'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir,
                          env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())))
