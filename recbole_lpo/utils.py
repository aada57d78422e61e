"""Model and trainer lookup: the plugin first, then RecBole's built-ins.

Rule (RecBole-GNN's): a model ``Name`` lives in
``recbole_lpo/model/<kind>_recommender/<name.lower()>.py``; a custom trainer
for it is ``recbole_lpo.trainer.<Name>Trainer``.
"""

import difflib
import importlib
import importlib.util
import inspect
import pkgutil

from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import get_model as recbole_get_model
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_lpo.errors import UserInputError

_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _plugin_model(model_name):
    for kind in _KINDS:
        module_path = f"recbole_lpo.model.{kind}.{model_name.lower()}"
        try:
            spec = importlib.util.find_spec(module_path)
        except ModuleNotFoundError:  # the kind's package does not exist
            spec = None
        if spec is not None:
            return getattr(importlib.import_module(module_path), model_name, None)
    return None


def available_models():
    """Names of every model the plugin or RecBole provides."""
    names = set()
    for package_name in ("recbole_lpo.model", "recbole.model"):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            if info.ispkg:
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception:  # an optional dependency of some RecBole model
                continue
            for name, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, AbstractRecommender) and obj.__module__ == info.name:
                    names.add(name)
    return sorted(names)


def get_model(model_name):
    """Return the model class called ``model_name`` (plugin first)."""
    model_class = _plugin_model(model_name)
    if model_class is not None:
        return model_class
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ImportError):  # ImportError: exlib needs lightgbm/xgboost
        known = available_models()
        close = difflib.get_close_matches(model_name, known, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(f"unknown model '{model_name}'{hint}") from None


def get_trainer(model_type, model_name, config=None):
    """``recbole_lpo.trainer.<Model>Trainer`` if it exists; else ``PreferenceTrainer``
    when ``config`` sets a preference loss; else RecBole's trainer for the type."""
    trainer_module = importlib.import_module("recbole_lpo.trainer")
    custom = getattr(trainer_module, model_name + "Trainer", None)
    if custom is not None:
        return custom
    if config is not None and config["preference_loss"] is not None:
        return trainer_module.PreferenceTrainer
    recbole_trainer = recbole_get_trainer(model_type, model_name)
    if recbole_trainer is RecBoleTrainer:  # RecBole's base trainer: use the hardened one
        return trainer_module.Trainer
    return recbole_trainer


def parse_overrides(items):
    """``["key=value", ...]`` (a script's ``--set``) -> config dict; values become int, float,
    bool or None where they read as one (``true``, ``none``, ``~``), else stay strings."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set takes KEY=VALUE, got '{item}'")
        overrides[key] = _parse_value(text)
    return overrides


def _parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "~": None}.get(text.lower(), text)
