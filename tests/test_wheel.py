"""A wheel of the plugin works outside the checkout: packaged YAML defaults, data from --data_path.

The wheel is built from a copy of the checkout (so the build writes no build/ or egg-info into
it), installed with --no-deps into a fresh venv in a temporary folder that sees the project's
dependencies through a .pth file (not the project's own recbole_lpo), and run from a scratch
folder with no checkout on sys.path.
"""

import configparser
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES, ROOT


def _missing_tools():
    """What this machine lacks to build and install a wheel (empty: nothing)."""
    missing = [name for name in ("venv", "pip", "setuptools") if importlib.util.find_spec(name) is None]
    if not missing:  # setuptools is not imported here: its distutils hack clashes with an imported distutils
        found = importlib.metadata.version("setuptools")
        version = tuple(int(part) for part in found.split(".")[:2] if part.isdigit())
        if version < (70, 1) and importlib.util.find_spec("wheel") is None:
            missing.append(f"wheel (setuptools {found} < 70.1 builds wheels with it)")
    return missing


needs_wheel_tools = pytest.mark.skipif(bool(_missing_tools()), reason=f"cannot build a wheel: no {_missing_tools()}")


def test_setup_cfg_lists_every_package():
    """setup.cfg lists its packages (properties/ is mapped in): a new subpackage must be added there."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(path.relative_to(ROOT).parent.parts) for path in (ROOT / "recbole_lpo").rglob("__init__.py")}
    assert listed == found | {"recbole_lpo.properties"}


def test_data_path_order_in_a_checkout(monkeypatch):
    """--data_path, else $RECBOLE_LPO_DATA, else the checkout's dataset/."""
    from recbole_lpo import paths

    monkeypatch.delenv("RECBOLE_LPO_DATA", raising=False)
    assert paths.FROM_CHECKOUT and paths.PROPERTIES_DIR == ROOT / "properties"
    assert paths.default_data_path() == str(ROOT / "dataset")
    monkeypatch.setenv("RECBOLE_LPO_DATA", "/data/sets")
    assert paths.default_data_path() == "/data/sets"
    assert paths.default_data_path("mine/") == "mine/"


def _project_site_packages(folder):
    """``folder`` holding a link to every entry of this venv's site-packages but its own recbole_lpo."""
    folder.mkdir()
    for site in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for entry in Path(site).iterdir():
            name = entry.name.lower()
            if name.startswith(("recbole_lpo", "__editable__", "run_recbole_lpo")) or entry.suffix == ".pth":
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def _not_build_inputs(folder, names):
    """Names ``shutil.copytree`` leaves out of the build's copy: outputs, caches, the top-level data."""
    top_level = Path(folder) == ROOT
    return {name for name in names if name in (".git", ".venv", "build", "__pycache__", ".pytest_cache")
            or name.endswith(".egg-info")
            or (top_level and name in ("dataset", "results", "saved", "log", "log_tensorboard"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv holding the wheel, its site-packages, scratch folder, clean env)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_not_build_inputs)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("recbole_lpo-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-deps.pth").write_text(str(_project_site_packages(tmp / "deps")) + "\n")

    scratch = tmp / "scratch"
    scratch.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "RECBOLE_LPO_DATA")}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    return python, venv, scratch, env


@needs_wheel_tools
def test_wheel_uses_its_packaged_yaml(installed):
    python, venv, scratch, env = installed
    probe = ("import json, recbole_lpo, run_recbole_lpo, recbole_lpo.paths as p; print(json.dumps("
             "[recbole_lpo.__file__, run_recbole_lpo.__file__, str(p.PROPERTIES_DIR), p.FROM_CHECKOUT]))")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=scratch, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    package, script, properties, from_checkout = json.loads(out.stdout)
    assert Path(package).is_relative_to(venv) and Path(script).is_relative_to(venv)  # the wheel's copy, not ours
    assert Path(properties) == Path(package).parent / "properties" and not from_checkout
    shipped = sorted(p.relative_to(ROOT / "properties") for p in (ROOT / "properties").rglob("*") if p.is_file())
    assert sorted(p.relative_to(properties) for p in Path(properties).rglob("*") if p.is_file()) == shipped


@needs_wheel_tools
def test_wheel_trains_from_a_scratch_folder_with_data_path(installed):
    python, venv, scratch, env = installed
    command = [str(venv / "bin" / "run_recbole_lpo"), "--model=LPO4Rec", "--dataset=tiny",
               f"--data_path={FIXTURES}", "--epochs=1", "--n_layers=1", "--n_heads=1", "--hidden_size=16",
               "--inner_size=32", "--train_batch_size=64", "--eval_batch_size=256", "--show_progress=False",
               "--state=WARNING"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=scratch, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (result_file,) = (scratch / "saved").glob("LPO4Rec-tiny-*.json")  # result_dir: saved (packaged overall.yaml)
    record = json.loads(result_file.read_text())
    config = record["config"]
    # defaults from the packaged YAML: overall.yaml, model/LPO4Rec.yaml, dataset/default-sequential.yaml
    assert config["tail_ratio"] == 0.2 and config["save_per_user_ranks"] is True
    with open(ROOT / "properties" / "model" / "LPO4Rec.yaml", encoding="utf-8") as f:
        checkout_defaults = yaml.safe_load(f)  # the installed copy carries the checkout's defaults
    for key in ("lpo_lambda", "lpo_tau", "alpha_tail", "neg_count", "neg_sampler"):
        assert config[key] == checkout_defaults[key], key
    assert "TailItemShare" in config["metrics"] and config["valid_metric"] == "NDCG@10"
    assert "tailitemshare@10" in record["test_result"] and record["n_tail_items"] == 12


@needs_wheel_tools
def test_wheel_without_data_folder_names_the_three_ways(installed):
    python, venv, scratch, env = installed
    out = subprocess.run([str(python), "-m", "run_recbole_lpo", "--model=SASRec", "--dataset=tiny"],
                         capture_output=True, text=True, cwd=scratch, env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: no data folder") and "--data_path" in line and "RECBOLE_LPO_DATA" in line
    assert "checkout" in line
    probe = "from recbole_lpo.paths import default_data_path; print(default_data_path())"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=scratch, timeout=120,
                         env=dict(env, RECBOLE_LPO_DATA=str(FIXTURES)))
    assert out.returncode == 0 and out.stdout.strip() == str(FIXTURES), out.stderr[-2000:]
