"""Checks of a resolved configuration, run before any data loads.

``recbole_lpo.config.Config`` calls ``check_types`` while it resolves (the
documented ``# (type)`` of every YAML key) and ``check_config`` once it is
resolved, for every model: plugin models, RecBole's built-ins, any backbone
with a preference loss; so do the grid (``recbole_lpo.reproduce``) and the
tuner, which build the same ``Config``. A failure is one ``UserInputError``
naming the key:

- a key the user gave (config file, ``config_dict``, ``--key=value``) that
  no RecBole or plugin YAML and no RecBole argument list defines (a typo
  would otherwise be ignored), with a "did you mean" suggestion; keys of
  your own go in ``extra_keys``;
- a number out of range (``RANGES``), ``topk`` not positive integers,
  ``valid_metric`` not among ``metrics`` at a ``topk`` cut-off;
- a ``checkpoint_dir`` / ``result_dir`` that cannot be created or written;
- the preference objective's keys, ``tail_ratio``, ``tail_score_bonus``, tail metrics on sampled
  ranking, a data set that does not exist.
"""

import difflib
import functools
import os
import re
from pathlib import Path

import yaml
from recbole.utils import argument_list

from recbole_lpo.checkpoint import backbone_class
from recbole_lpo.errors import UserInputError
from recbole_lpo.evaluation.metrics import check_tail_metric_config
from recbole_lpo.objective import objective_settings
from recbole_lpo.paths import PROPERTIES_DIR, RECBOLE_PROPERTIES_DIR
from recbole_lpo.rescoring import tail_score_bonus


def check_config(config):
    """Every check of a resolved ``Config`` that does not need the data loaded."""
    check_known_keys({"config file": config.file_config_dict, "config_dict": config.variable_config_dict,
                      "command line": config.cmd_config_dict}, config.final_config_dict.get("extra_keys"))
    fixed_loss = getattr(config.model_class, "preference_loss", None)
    if fixed_loss is not None:
        asked = config.external_config_dict.get("preference_loss", fixed_loss)
        if asked != fixed_loss:
            raise UserInputError(
                f"{config.model} always trains with preference_loss {fixed_loss}, got {asked}; "
                f"use --model={backbone_class(config.model_class).__name__} --preference_loss={asked}")
        config.final_config_dict["preference_loss"] = fixed_loss
    if config.final_config_dict.get("preference_loss") is not None:
        objective_settings(config, config.final_config_dict["preference_loss"])
    tail_ratio = config.final_config_dict.get("tail_ratio")
    if not isinstance(tail_ratio, (int, float)) or isinstance(tail_ratio, bool) or not 0 < tail_ratio < 1:
        raise UserInputError(f"tail_ratio must be a number in (0, 1), got {tail_ratio!r}")
    check_tail_metric_config(config.final_config_dict)
    tail_score_bonus(config)
    check_ranges(config.final_config_dict)
    check_valid_metric(config.final_config_dict)
    for key in ("checkpoint_dir", "result_dir"):
        check_writable_dir(config.final_config_dict.get(key) or "saved", key)
    check_dataset_exists(config.final_config_dict["data_path"], config.dataset)


# keys RecBole's Config or launcher set itself (not in any YAML or argument list)
_INTERNAL_KEYS = {"model", "dataset", "config_files", "local_rank", "nproc", "world_size", "ip", "port",
                  "offset", "single_spec", "device", "eval_type", "MODEL_TYPE", "MODEL_INPUT_TYPE",
                  "is_knowledge_aware", "train_neg_sample_args", "valid_neg_sample_args",
                  "test_neg_sample_args", "eval_neg_sample_args", "run_id"}


_READ_KEY = re.compile(r"""config\[["']([A-Za-z_]\w*)["']\]""")


@functools.lru_cache(maxsize=None)
def known_keys():
    """Every key some RecBole or plugin YAML or RecBole argument list defines, or RecBole's
    or the plugin's code reads (``config["key"]``: keys without a YAML default, e.g. ``encoding``)."""
    keys = set(_INTERNAL_KEYS)
    for package in (RECBOLE_PROPERTIES_DIR.parent, Path(__file__).resolve().parent):
        for path in package.rglob("*.py"):
            keys.update(_READ_KEY.findall(path.read_text(encoding="utf-8", errors="replace")))
    for arguments in (argument_list.general_arguments, argument_list.training_arguments,
                      argument_list.evaluation_arguments, argument_list.dataset_arguments):
        keys.update(arguments)
    for root in (RECBOLE_PROPERTIES_DIR, PROPERTIES_DIR):
        for path in sorted(root.rglob("*.yaml")):
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
            if isinstance(loaded, dict):
                keys.update(map(str, loaded))
    return frozenset(keys)


def check_known_keys(sources, extra_keys=()):
    """Refuse a user key no YAML defines. ``sources``: ``{where: {key: value}}``."""
    known = known_keys() | set(extra_keys or ())
    for where, given in sources.items():
        for key in given or {}:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
            hint = f" did you mean {close[0]}?" if close else ""
            raise UserInputError(f"unknown config key '{key}' ({where}):{hint} "
                                 "(a key of your own: list it in extra_keys)")


# key -> (kind, lowest, lowest allowed?, highest, highest allowed?); None = no bound
RANGES = {
    "train_batch_size": ("int", 1, True, None, None),
    "eval_batch_size": ("int", 1, True, None, None),
    "learning_rate": ("number", 0, False, None, None),
    "epochs": ("int", 1, True, None, None),
    "stopping_step": ("int", 1, True, None, None),
    "eval_step": ("int", 0, True, None, None),
    "weight_decay": ("number", 0, True, None, None),
    "clip_grad_norm": ("dict", None, None, None, None),
    "nproc": ("int", 1, True, None, None),
    "worker": ("int", 0, True, None, None),
    "MAX_ITEM_LIST_LENGTH": ("int", 1, True, None, None),
    "n_layers": ("int", 1, True, None, None),
    "n_heads": ("int", 1, True, None, None),
    "hidden_size": ("int", 1, True, None, None),
    "inner_size": ("int", 1, True, None, None),
    "embedding_size": ("int", 1, True, None, None),
    "hidden_dropout_prob": ("number", 0, True, 1, False),
    "attn_dropout_prob": ("number", 0, True, 1, False),
    "dropout_prob": ("number", 0, True, 1, False),
}


def _bounds_text(low, low_in, high, high_in):
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_in else '>'} {low}")
    if high is not None:
        parts.append(f"{'<=' if high_in else '<'} {high}")
    return " and ".join(parts)


def check_ranges(final):
    """Numbers a user is likely to touch lie in their range (``RANGES``); ``topk`` positive integers."""
    for key, (kind, low, low_in, high, high_in) in RANGES.items():
        value = final.get(key)
        if value is None or kind == "dict":
            continue
        wrong_kind = isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float))
        too_low = not wrong_kind and low is not None and (value < low if low_in else value <= low)
        too_high = not wrong_kind and high is not None and (value > high if high_in else value >= high)
        if wrong_kind or too_low or too_high or value != value:  # value != value: NaN
            what = "an integer" if kind == "int" else "a number"
            raise UserInputError(f"{key} must be {what} {_bounds_text(low, low_in, high, high_in)}, got {value!r}")
    topk = final.get("topk")
    topk = [topk] if isinstance(topk, int) and not isinstance(topk, bool) else topk
    if not isinstance(topk, (list, tuple)) or not topk or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk):
        raise UserInputError(f"topk must be a list of positive integers, got {final.get('topk')!r}")


def check_valid_metric(final):
    """``valid_metric`` is one of ``metrics`` and, for a top-k metric, at a ``topk`` cut-off."""
    valid_metric = str(final.get("valid_metric") or "")
    name, at, cutoff = valid_metric.lower().partition("@")
    metrics = final.get("metrics") or []
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if name not in [str(m).lower() for m in metrics]:
        raise UserInputError(f"valid_metric {valid_metric} is not computed: metrics are {list(metrics)}; "
                             f"add {name} to metrics or pick one of them")
    topk = final.get("topk")
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    if at and (not cutoff.isdigit() or int(cutoff) not in topk):
        raise UserInputError(f"valid_metric {valid_metric}: the cut-off must be one of topk {topk}")


def check_writable_dir(path, key):
    """``path`` is a folder this process can create or write (nothing is created here)."""
    path = os.path.abspath(str(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserInputError(f"{key} '{path}' exists and is not a folder")
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise UserInputError(f"{key} '{path}' cannot be created: '{existing}' is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"{key} '{path}' is not writable (no write permission on '{existing}')")


def check_dataset_exists(data_path, dataset):
    """Refuse an unknown data set before RecBole offers to download it."""
    if os.path.isdir(data_path) and any(
        name.startswith(dataset + ".") for name in os.listdir(data_path)
    ):
        return
    root = os.path.dirname(os.path.normpath(data_path))
    available = sorted(
        entry for entry in os.listdir(root) if os.path.isdir(os.path.join(root, entry))
    ) if os.path.isdir(root) else []
    listing = ", ".join(available) if available else "none"
    raise UserInputError(
        f"dataset '{dataset}' not found: no atomic files in {data_path} "
        f"(data sets in {root}: {listing})"
    )


_TYPE_COMMENT = re.compile(r"^([A-Za-z_][\w]*):[^#]*#\s*\(([^)]*)\)")
_NOT_CHECKED = {"gpu_id"}  # RecBole takes it as str, int or tuple


def documented_types(path):
    """``{key: "type spec"}`` from a YAML file's ``key: value  # (type) description`` lines."""
    types = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _TYPE_COMMENT.match(line)
            if match:
                types[match.group(1)] = match.group(2).strip()
    return types


def _matches(value, spec):
    """Whether ``value`` fits a documented type such as ``int``, ``list of float``, ``list or str``."""
    for option in (part.strip() for part in spec.split(" or ")):
        kind, _, element = option.partition(" of ")
        if kind == "None" and value is None:
            return True
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind == "bool" and isinstance(value, bool):
            return True
        if kind in ("str", "string") and isinstance(value, str):
            return True
        if kind == "dict" and isinstance(value, dict):
            return True
        if kind == "list" and isinstance(value, (list, tuple)):
            return not element or all(_matches(v, element) for v in value)
        if kind not in ("None", "int", "float", "bool", "str", "string", "dict", "list"):
            return True  # a type we do not check
    return False


def check_types(config_dict, types):
    """Every documented key holds its documented type (``~``/None always allowed)."""
    for key, spec in types.items():
        value = config_dict.get(key)
        if value is None or key in _NOT_CHECKED:
            continue
        if not _matches(value, spec):
            raise UserInputError(f"{key} must be of type {spec}, got {value!r} ({type(value).__name__})")
