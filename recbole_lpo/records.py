"""Run records: the result JSON of a run, and the file names that never overwrite.

Public: the command line, the grid (``recbole_lpo.reproduce``) and the tuner
(``recbole_lpo.hyper_tuning``) write through here, and any script may.
Imports nothing of the plugin but its paths.
"""

import datetime
import json
import os
import platform
import subprocess

import torch

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

    Holds the resolved config, seed, git commit, machine and device, the
    tail-set hash, overall and tail metrics (valid and test), the share of
    test users with a tail target, and per-user ranks of the test item.
    """
    result_dir = config["result_dir"] or "saved"
    os.makedirs(result_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = unused_path(os.path.join(result_dir, f"{config['model']}-{config['dataset']}-{stamp}.json"))
    record = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "git_commit": git_commit(),
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
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path
