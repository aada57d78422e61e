import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

import recbole_lpo  # noqa: E402,F401  (applies compat, registers metrics)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY_YAML = str(FIXTURES / "tiny.yaml")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary folder (RecBole writes log/ into the working directory)
    with a clean sys.argv (RecBole's Config parses it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
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
