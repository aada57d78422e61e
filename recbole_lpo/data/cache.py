"""A disk cache of built data sets: a second run on the same data starts at once.

RecBole loads, filters, remaps and splits the atomic files on every run
(about 4.5 s on amazon-beauty, twice that on Sports, with the plugin's file
checks). ``prepare_data`` does what ``create_dataset`` plus
``data_preparation`` do, and keeps the data set with its built splits in
``data_cache_dir``, one pickle per entry. An entry is named by a hash of

- the bytes of every atomic file of the data set (``<dataset>.*`` in its
  folder), so an edited file is never served from an old entry,
- every config key RecBole's data sets read (RecBole's ``dataset_arguments``
  plus the split, seed and data set class),
- the versions of RecBole, pandas, numpy and torch, and the source of the
  plugin's data code (file checks, head/tail counts, this module).

On a hit the file checks are skipped (the same bytes passed them when the
entry was written) and the data sets get the run's config. Entries of older
versions of the same data set's files are deleted when a new one is written;
the folder can be deleted at any time. ``data_cache_dir: ~`` turns the cache
off. Knowledge-graph data sets are never cached.
"""

import hashlib
import os
import pickle
import tempfile
from logging import getLogger
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd
import recbole
import recbole.data.dataset as recbole_datasets
import torch
from recbole.data import create_dataset, create_samplers, data_preparation, get_dataloader
from recbole.utils import ModelType
from recbole.utils.argument_list import dataset_arguments

from recbole_lpo.data.atomic import validate_atomic_files

# keys read while loading or splitting that RecBole's list leaves out
EXTRA_KEYS = ("dataset", "numerical_features", "discretization", "eval_args", "seed", "repeatable",
              "MODEL_TYPE")
# the plugin's code whose output the cache stores
DATA_CODE = ("atomic.py", "head_tail.py", "cache.py")
FORMAT = 1


def atomic_files(config):
    """The data set's atomic files, sorted: ``<data_path>/<dataset>.*``."""
    folder, name = Path(config["data_path"]), config["dataset"]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(name + "."))


def files_digest(config):
    """sha256 over the names and bytes of the data set's atomic files."""
    digest = hashlib.sha256()
    for path in atomic_files(config):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def dataset_class_name(config):
    """The data set class ``create_dataset`` picks for ``config``."""
    if hasattr(recbole_datasets, config["model"] + "Dataset"):
        return config["model"] + "Dataset"
    return "SequentialDataset" if config["MODEL_TYPE"] == ModelType.SEQUENTIAL else str(config["MODEL_TYPE"])


def config_digest(config):
    """sha256 over what, besides the files, decides the built data sets."""
    here = Path(__file__).parent
    parts = [f"format={FORMAT}", f"class={dataset_class_name(config)}",
             f"versions={recbole.__version__},{pd.__version__},{np.__version__},{torch.__version__}"]
    parts += [f"{key}={config[key]!r}" for key in sorted(set(dataset_arguments) | set(EXTRA_KEYS))]
    parts += [hashlib.sha256((here / name).read_bytes()).hexdigest() for name in DATA_CODE]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_path(config, files_hash=None):
    """The entry for ``config`` in ``data_cache_dir`` (None when the cache is off)."""
    folder = config["data_cache_dir"]
    if not folder:
        return None
    files_hash = files_hash or files_digest(config)
    return Path(folder) / f"{config['dataset']}-{files_hash[:16]}-{config_digest(config)[:16]}.pkl"


def _build(config, check):
    validate_atomic_files(config)
    dataset = create_dataset(config)
    if check is not None:
        check(dataset, config)
    return dataset, dataset.build()


def _write(path, entry):
    """Write ``entry`` to ``path`` atomically; drop entries of the data set's older files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would hide the entry from a shared folder
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    dataset, files_part = path.name.rsplit("-", 2)[0], path.name.rsplit("-", 2)[1]
    for old in path.parent.glob(f"{dataset}-*-*.pkl"):
        if old.name.rsplit("-", 2)[0] == dataset and old.name.rsplit("-", 2)[1] != files_part:
            old.unlink(missing_ok=True)


class PreparedData(NamedTuple):
    """What ``prepare_data`` returns: the full data set, its splits and RecBole's loaders."""

    dataset: object
    built: tuple  # (train, valid, test) data sets
    train_data: object
    valid_data: object
    test_data: object
    cache_entry: Optional[Path]  # where ``store`` writes them; None: cache off or already there


def load_or_build(config, check=None):
    """``(dataset, (train, valid, test), entry)`` for ``config``, from the cache when it holds them.

    ``check(dataset, config)`` runs on a newly loaded data set before it is
    split (an entry exists only for data that passed it). ``entry`` is the
    path to ``store`` a new build under, None after a hit or with the cache off.
    """
    logger = getLogger()
    path = cache_path(config)
    if path is not None and path.is_file():
        try:
            with open(path, "rb") as f:
                dataset, built = pickle.load(f)
        except Exception as error:  # a damaged or foreign entry: rebuild it
            logger.warning(f"data cache entry {path} unreadable ({type(error).__name__}); rebuilding it")
        else:
            for data in (dataset, *built):
                data.config = config
            logger.info(f"data set loaded from the cache: {path}")
            return dataset, built, None
    dataset, built = _build(config, check)
    return dataset, built, path


def prepare_data(config, check=None):
    """``create_dataset`` + ``data_preparation``, reading the cache of built data sets.

    Returns a ``PreparedData``; ``check`` as in ``load_or_build``. A new
    build is written to the cache only by ``store``, called once the run's
    other input checks have passed (bad input leaves no files).
    """
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:  # its loaders need RecBole's own path
        validate_atomic_files(config)
        dataset = create_dataset(config)
        if check is not None:
            check(dataset, config)
        return PreparedData(dataset, (), *data_preparation(config, dataset), None)
    dataset, built, entry = load_or_build(config, check)
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, built[1], valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, built[2], test_sampler, shuffle=False)
    return PreparedData(dataset, built, train_data, valid_data, test_data, entry)


def store(prepared):
    """Write a new build to the cache (nothing to do after a hit or with the cache off)."""
    if prepared.cache_entry is None:
        return
    try:
        _write(prepared.cache_entry, (prepared.dataset, prepared.built))
    except OSError as error:
        getLogger().warning(f"data cache not written ({error}); set data_cache_dir to a writable folder or ~")
