"""Run records: the result JSON of a run, and the file names that never overwrite.

Public: the command line, the grid (``recbole_lpo.reproduce``) and the tuner
(``recbole_lpo.hyper_tuning``) write through here, and any script may;
``read_result`` reads one back (``.json`` or gzipped ``.json.gz``).
Imports nothing of the plugin but its paths and error type.
"""

import datetime
import gzip
import hashlib
import json
import os
import platform
import secrets
import subprocess
from pathlib import Path

import torch

from recbole_lpo.errors import UserInputError
from recbole_lpo.paths import PROJECT_ROOT


def machine_info(config):
    device = str(config["device"])
    info = {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": device,
            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(config["device"])
    return info


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# the modules every model's results depend on; a model's own module is added by model_code_paths
SHARED_CODE = ["recbole_lpo/__init__.py", "recbole_lpo/compat.py", "recbole_lpo/config.py",
               "recbole_lpo/checks.py", "recbole_lpo/checkpoint.py", "recbole_lpo/inference.py",
               "recbole_lpo/utils.py", "recbole_lpo/losses.py", "recbole_lpo/sampling.py",
               "recbole_lpo/objective.py", "recbole_lpo/rescoring.py", "recbole_lpo/trainer.py",
               "recbole_lpo/quick_start.py", "recbole_lpo/data", "recbole_lpo/evaluation",
               "recbole_lpo/model/backbone.py", "recbole_lpo/model/sequential_recommender/preference.py"]


def model_code_paths(model):
    own = Path("recbole_lpo/model/sequential_recommender") / f"{model.lower()}.py"
    return SHARED_CODE + ([str(own)] if (Path(PROJECT_ROOT) / own).is_file() else [])


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


# a commit message line that declares the commit's changes to the model code result-neutral
# (a docstring, a comment, a log line): ``Result-neutral: <why>``; code_version skips such commits
RESULT_NEUTRAL_TRAILER = "Result-neutral:"


def _last_commit(paths, *revision):
    """The last commit at or before ``revision`` (HEAD if none) touching ``paths``, skipping the
    commits whose message has a ``Result-neutral:`` line; None if unknown."""
    out = _git("log", "-1", "--format=%H", "--invert-grep", f"--grep=^{RESULT_NEUTRAL_TRAILER}", *revision,
               "--", *paths)
    return (out or "").strip() or None


def code_version(model, commit=None):
    """The version of the code ``model``'s results depend on: the last commit touching it.

    Commits whose message has a line ``Result-neutral: <why>`` are skipped: their
    author declares that they change no result (a docstring, a comment), so the
    grid's cached and exported runs stay valid across them. The declaration is not
    checked; ``git log --grep='^Result-neutral:'`` lists them for review.

    Without ``commit``: as checked out, plus ``+<hash>`` of uncommitted changes
    to that code. With ``commit`` (a run's ``git_commit``): the last such
    commit at or before it; None when it is unknown or was dirty (its
    uncommitted changes are lost).
    """
    paths = model_code_paths(model)
    if commit is not None:
        if commit.endswith("-dirty"):
            return None
        return _last_commit(paths, commit)
    version = _last_commit(paths) or "no-git"
    diff = _git("diff", "HEAD", "--", *paths)
    if diff:
        version += "+" + hashlib.sha256(diff.encode()).hexdigest()[:12]
    return version


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return str(value)


def new_run_id():
    """``<Mon-DD-YYYY_HH-MM-SS>-<6 random hex digits>``: names a run's checkpoint, and (as a config
    value, so in RecBole's hash of the config) its log file; runs started in the same second differ."""
    stamp = datetime.datetime.now().strftime("%b-%d-%Y_%H-%M-%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def claim_path(path):
    """Create ``path`` empty, or ``stem-1.ext``, ``stem-2.ext`` ... if taken, atomically
    (exclusive create: two processes never get the same name); return the path created."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while True:
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{stem}-{n}{ext}"


def remove_stale_partials(folder):
    """Delete ``*.<pid>.partial`` files in ``folder`` whose writing process is gone (killed
    mid-write); files of live processes stay. Returns the paths removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        stem, dot, suffix = name.rpartition(".")
        pid = stem.rpartition(".")[2]
        if suffix != "partial" or not dot or not pid.isdigit() or _alive(int(pid)):
            continue
        path = os.path.join(folder, name)
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def unused_path(path):
    """``path`` if free, else ``stem-1.ext``, ``stem-2.ext`` ...: never overwrite."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def write_result(config, split, result, ranks, checkpoint):
    """Write the run's result JSON and return its path.

    Holds the resolved config, seed, git commit and the model's code version
    (``code_version``, what the grid's cache keys read), machine and device, the
    tail-set hash, overall and tail metrics (valid and test), the share of
    test users with a tail target, and per-user ranks of the test item.
    """
    result_dir = config["result_dir"] or "saved"
    os.makedirs(result_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = claim_path(os.path.join(result_dir, f"{config['model']}-{config['dataset']}-{stamp}.json"))
    record = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "git_commit": git_commit(),
        "code_version": code_version(config["model"]),
        "machine": machine_info(config),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "tail_ratio": split.tail_ratio,
        "tail_set_hash": split.tail_hash,
        "n_head_items": split.n_head,
        "n_tail_items": split.n_tail,
        "tail_user_share": ranks["tail_user_share"],
        "epochs_trained": result["epochs_trained"],
        "best_epoch": result["best_epoch"],
        "best_valid_score": result["best_valid_score"],
        "best_valid_result": jsonable(result["best_valid_result"]),
        "test_result": jsonable(result["test_result"]),
        "checkpoint": checkpoint,
        "preference_history": jsonable(result.get("preference_history", {})),
        "config": jsonable(config.final_config_dict),
    }
    if config["save_per_user_ranks"]:
        record["per_user"] = {k: v for k, v in ranks.items() if k != "tail_user_share"}
    tmp = f"{path}.{os.getpid()}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path


def read_result(path):
    """A result JSON ``write_result`` wrote (``.json``, or gzipped ``.json.gz``)."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz")
              else open(path, encoding="utf-8")) as f:
            record = json.load(f)
    except (OSError, ValueError, EOFError) as error:
        raise UserInputError(f"cannot read the result JSON {path}: {error}") from None
    if not isinstance(record, dict) or not {"model", "dataset", "seed", "config", "test_result"} <= set(record):
        raise UserInputError(f"{path} is not a run's result JSON (no model, dataset, seed, config, test_result)")
    return record
