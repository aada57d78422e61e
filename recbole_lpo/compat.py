"""Every change the plugin makes to RecBole objects, applied from one list.

``apply()`` runs ``PATCHES`` in order, once per process; ``recbole_lpo/__init__.py``
calls it, so importing the package is enough for RecBole's own API to work
on today's stack too. Each entry names what it fixes or adds and whether it
changes any result RecBole computes. Nothing outside this list patches a
RecBole class, module or registry (the plugin's models compose RecBole
models; they patch nothing).

Fixes for RecBole 1.2.1 on today's stack (none changes a result):

1. numpy 2 removed ``np.float_``, ``np.unicode_``, ... and RecBole's
   ``Config.compatibility_settings`` reads them (AttributeError), while its
   metrics still write ``np.float``. We restore only the short aliases RecBole
   uses, mapped to the builtins numpy 1 mapped them to, without touching the
   removed ``*_`` names.
2. torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints hold
   its ``Config`` object, so the trainer cannot reload its own best model or
   resume. RecBole's trainer module gets a ``torch`` whose ``load`` is
   ``recbole_lpo.checkpoint.trusted_load`` (``weights_only=False``). This is
   safe only for files this run (or a run of yours) wrote: never point
   ``resume``/``ref_model_path`` at a checkpoint from an untrusted source,
   since unpickling can run code.
3. ``recbole.quick_start`` imports ``ray``, which breaks on numpy 2 and new
   setuptools. The plugin never imports it (see ``recbole_lpo.quick_start``)
   and RecBole is installed with ``--no-deps`` so ray is never pulled in.
   (Not a patch: nothing to apply.)
4. pandas 3 silently stops RecBole's NaN filling: pinned ``pandas<3`` in
   setup.cfg; ``check_versions`` refuses to run with pandas 3.
5. ``recbole/model/sequential_recommender/sine.py`` calls
   ``torch.autograd.set_detect_anomaly(True)`` at import, which doubles
   training time for every model: switched back off after that import.
6. The collector calls ``.cpu()`` on every collected resource, including the
   ``Counter`` behind ``data.count_items``: RecBole's AveragePopularity and
   TailPercentage crash. Fixed in ``recbole_lpo.evaluation.collector``
   (``get_data_struct``), with RecBole's values and numbers; that module also
   adds the plugin's own resources under new names and computes one top-k per
   batch, same tensors).
7. RecBole's multi-process (DDP) path hard-codes the nccl backend and CUDA
   device ids, so it cannot run on CPUs: ``recbole_lpo.config.Config`` picks
   gloo on CPU (``ddp_backend``, a subclass, not a patch), and the trainer
   wraps CPU models without ``device_ids`` (``_ddp_aware_trainer_init``).

Additions (RecBole's own results unchanged):

8. ``Dataset.build`` also records the training-split item counts on every
   split (``recbole_lpo.data.head_tail``): the shared head/tail split.
9. The plugin's metrics join RecBole's metric registry
   (``recbole_lpo.evaluation.metrics``), so ``metrics: [...]`` and
   ``valid_metric`` accept them in any RecBole config.
"""

import builtins
import types

import numpy as np
import pandas
import recbole.model.sequential_recommender  # noqa: F401  (imports sine.py: item 5)
import recbole.trainer.trainer as trainer_module
import torch
from recbole.config import configurator
from torch.nn.parallel import DistributedDataParallel

from recbole_lpo.checkpoint import trusted_load
from recbole_lpo.data import head_tail
from recbole_lpo.evaluation import collector, metrics

_APPLIED = False

# numpy 1 aliases RecBole still spells (np.float, np.int, np.bool, np.str ...).
_NUMPY_ALIASES = {
    "bool": np.bool_,
    "int": builtins.int,
    "float": builtins.float,
    "complex": builtins.complex,
    "object": builtins.object,
    "str": builtins.str,
    "long": builtins.int,
    "unicode": builtins.str,
}


def restore_numpy_aliases():
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _safe_compatibility_settings(self):
    """Replacement for ``Config.compatibility_settings`` (numpy 2 safe)."""
    restore_numpy_aliases()


def _torch_with_trusted_load():
    """A view of ``torch`` whose ``load`` reads full pickles (see item 2)."""
    proxy = types.ModuleType("torch_trusted_load")
    proxy.__getattr__ = lambda name: getattr(torch, name)  # everything else is torch's
    proxy.load = trusted_load
    return proxy


def _ddp_aware_trainer_init(self, config, model):
    """``AbstractTrainer.__init__`` that also accepts CPU models under DDP (item 7)."""
    self.config = config
    self.model = model
    if not config["single_spec"]:
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        on_cuda = config["device"].type == "cuda"
        self.distributed_model = DistributedDataParallel(
            self.model, device_ids=[config["local_rank"]] if on_cuda else None)


def disable_sine_anomaly_detection():
    """sine.py ran at this module's import of ``recbole.model.sequential_recommender``."""
    torch.autograd.set_detect_anomaly(False)


def check_versions():
    if int(pandas.__version__.split(".")[0]) >= 3:
        raise ImportError(
            f"recbole_lpo needs pandas<3 (found {pandas.__version__}): pandas 3 silently "
            "breaks RecBole 1.2.1's NaN filling; pip install 'pandas<3'"
        )


def use_trusted_load():
    trainer_module.torch = _torch_with_trusted_load()


def ddp_on_cpu():
    trainer_module.AbstractTrainer.__init__ = _ddp_aware_trainer_init


def numpy_2_config():
    configurator.Config.compatibility_settings = _safe_compatibility_settings


# (what it fixes or adds, does it change RecBole's results, the function applying it), in order
PATCHES = (
    ("refuse pandas 3 (item 4)", "no", check_versions),
    ("numpy 1 aliases for RecBole's metrics (item 1)", "no", restore_numpy_aliases),
    ("Config.compatibility_settings safe on numpy 2 (item 1)", "no", numpy_2_config),
    ("trainer loads its own checkpoints on torch >= 2.6 (item 2)", "no", use_trusted_load),
    ("AbstractTrainer.__init__ wraps CPU models for DDP (item 7)", "no", ddp_on_cpu),
    ("anomaly detection off after sine.py's import (item 5)", "no", disable_sine_anomaly_detection),
    ("Dataset.build records training-split item counts (item 8)", "no", head_tail.install),
    ("Collector: Counter.cpu crash, tail resources, one top-k (item 6)", "no", collector.install),
    ("the plugin's metrics in RecBole's registry (item 9)", "no", metrics.register_metrics),
)


def apply():
    """Apply every entry of ``PATCHES`` once; safe to call again."""
    global _APPLIED
    if _APPLIED:
        return
    for _, _, patch in PATCHES:
        patch()
    _APPLIED = True
