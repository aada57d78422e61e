"""Checkpoints: reading them back, and the tags the plugin records in them.

The bottom of the package (it imports only ``recbole_lpo.errors``): the
trainer, the reference loader, inference and the compatibility fixes all
read checkpoints through here.

Every model the plugin builds records, in RecBole's ``other_parameter``
(saved with each checkpoint), the hash of its data set's item tokens
(``item_token_hash``) and its RecBole backbone's class name (``backbone_name``),
so a checkpoint can be matched against data and models without rebuilding
them.

Security: checkpoints are unpickled with ``weights_only=False`` (RecBole's
hold its pickled ``Config``), which can run code: load only files you or a
run you trust wrote.
"""

import hashlib
import os

import torch

from recbole_lpo.errors import UserInputError


def trusted_load(f, *args, **kwargs):
    """``torch.load`` with ``weights_only=False`` (torch >= 2.6 defaults to True, which cannot
    read RecBole's checkpoints); any unpickling failure becomes a RuntimeError naming the file."""
    kwargs.setdefault("weights_only", False)
    try:
        return torch.load(f, *args, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as error:  # a bare unpickling error says nothing about which file
        raise RuntimeError(f"cannot load checkpoint '{f}': {error}") from error


def one_line(error, limit=300):
    """``error``'s message on one line (torch's span several), cut at ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_checkpoint(model_file):
    """The checkpoint dict in ``model_file``; one ``UserInputError`` naming the
    file if it is missing, unreadable or not a RecBole checkpoint."""
    model_file = str(model_file)
    if not os.path.isfile(model_file):
        raise UserInputError(f"checkpoint '{model_file}' does not exist or is not a file")
    try:
        checkpoint = trusted_load(model_file, map_location="cpu")
    except (OSError, RuntimeError) as error:  # trusted_load wraps any unpickling failure
        cause = error.__cause__ or error
        hint = "" if isinstance(cause, OSError) else " (not a file written by torch.save?)"
        raise UserInputError(f"cannot read checkpoint '{model_file}': {one_line(cause)}{hint}") from error
    if not (isinstance(checkpoint, dict) and "state_dict" in checkpoint
            and hasattr(checkpoint.get("config"), "final_config_dict")):
        raise UserInputError(f"'{model_file}' is not a RecBole checkpoint (no config and state_dict)")
    return checkpoint


def backbone_class(model_class):
    """The RecBole model class a plugin model builds on (itself for RecBole's built-ins)."""
    for cls in model_class.__mro__:
        if cls.__module__.startswith("recbole.model."):
            return cls
    raise UserInputError(f"{model_class.__name__} is not built on a RecBole model")


def item_token_hash(dataset):
    """A 16-hex-digit hash of the data set's item tokens in id order (padding included)."""
    tokens = dataset.field2id_token[dataset.iid_field]
    return hashlib.sha256("\n".join(map(str, tokens)).encode()).hexdigest()[:16]


def tag_model(model, dataset):
    """Record ``item_token_hash`` and ``backbone_name`` in the model's ``other_parameter``
    (RecBole saves it in every checkpoint)."""
    names = list(getattr(model, "other_parameter_name", []))
    model.other_parameter_name = names + [n for n in ("item_token_hash", "backbone_name") if n not in names]
    model.item_token_hash = item_token_hash(dataset)
    model.backbone_name = backbone_class(type(model)).__name__


def recorded(checkpoint, name):
    """A tag ``tag_model`` recorded in ``checkpoint`` (None for checkpoints written without it)."""
    return (checkpoint.get("other_parameter") or {}).get(name)


# config keys that cannot change a run's result (locations, devices, logging, process layout)
RESULT_NEUTRAL_KEYS = frozenset({
    "checkpoint_dir", "result_dir", "data_path", "show_progress", "state", "device", "gpu_id", "use_gpu",
    "local_rank", "nproc", "world_size", "ip", "port", "offset", "single_spec", "log_wandb", "wandb_project",
    "eval_batch_size", "worker", "save_dataset", "save_dataloaders", "dataset_save_path",
    "dataloaders_save_path", "ddp_backend", "save_per_user_ranks", "data_cache_dir", "run_id", "extra_keys",
})
# ... and those that change only what happens after the last checkpoint: a resumed run may change them
RESUME_MAY_CHANGE = frozenset({"epochs", "stopping_step"})


def changed_settings(saved_config, config):
    """``[(key, saved value, new value)]`` of the settings a resumed run would change
    (every key but ``RESULT_NEUTRAL_KEYS`` and ``RESUME_MAY_CHANGE``)."""
    saved, new = saved_config.final_config_dict, config.final_config_dict
    changed = []
    for key in sorted(set(saved) | set(new), key=str):
        if key in RESULT_NEUTRAL_KEYS or key in RESUME_MAY_CHANGE:
            continue
        before, after = saved.get(key), new.get(key)
        try:
            same = bool(before == after)
        except Exception:  # values without a plain ==: compare their text
            same = repr(before) == repr(after)
        if not same:
            changed.append((key, before, after))
    return changed
