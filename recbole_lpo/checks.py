"""Checks of a resolved configuration, run before any data loads.

``recbole_lpo.config.Config`` calls ``check_types`` while it resolves (the
documented ``# (type)`` of every YAML key) and ``check_config`` once it is
resolved, for every model: plugin models, RecBole's built-ins, any backbone
with a preference loss. A failure is one ``UserInputError`` naming the key.
"""

import os
import re

from recbole_lpo.checkpoint import backbone_class
from recbole_lpo.errors import UserInputError
from recbole_lpo.evaluation.metrics import check_tail_metric_config
from recbole_lpo.objective import objective_settings


def check_config(config):
    """Every check of a resolved ``Config`` that does not need the data loaded."""
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
    check_dataset_exists(config.final_config_dict["data_path"], config.dataset)


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
