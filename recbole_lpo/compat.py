"""RecBole 1.2.1 on today's stack: every workaround in one place.

Imported (and applied) once by ``recbole_lpo/__init__.py``; importing the
package is enough for RecBole's own API to work too. Each fix is a small
function; nothing here changes RecBole's results.

1. numpy 2 removed ``np.float_``, ``np.unicode_``, ... and RecBole's
   ``Config.compatibility_settings`` reads them (AttributeError), while its
   metrics still write ``np.float``. We restore only the short aliases RecBole
   uses, mapped to the builtins numpy 1 mapped them to, without touching the
   removed ``*_`` names.
2. torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints hold
   its ``Config`` object, so the trainer cannot reload its own best model or
   resume. RecBole's trainer module gets a ``torch`` whose ``load`` defaults
   to ``weights_only=False``. This is safe only for files this run (or a run
   of yours) wrote: never point ``resume``/``ref_model_path`` at a checkpoint
   from an untrusted source, since unpickling can run code.
3. ``recbole.quick_start`` imports ``ray``, which breaks on numpy 2 and new
   setuptools. The plugin never imports it (see ``recbole_lpo.quick_start``)
   and RecBole is installed with ``--no-deps`` so ray is never pulled in.
4. pandas 3 silently stops RecBole's NaN filling: pinned ``pandas<3`` in
   setup.cfg; ``check_versions`` refuses to run with pandas 3.
5. ``recbole/model/sequential_recommender/sine.py`` calls
   ``torch.autograd.set_detect_anomaly(True)`` at import, which doubles
   training time for every model: switched back off after that import.
6. The collector calls ``.cpu()`` on every collected resource, including the
   ``Counter`` behind ``data.count_items``: RecBole's AveragePopularity and
   TailPercentage crash. Fixed in ``recbole_lpo.evaluation.collector``
   (``get_data_struct``), with RecBole's values and numbers; that module also
   adds the plugin's own resources under new names.
7. RecBole's multi-process (DDP) path hard-codes the nccl backend and CUDA
   device ids, so it cannot run on CPUs: ``recbole_lpo.config.Config`` picks
   gloo on CPU (``ddp_backend``), and the trainer wraps CPU models without
   ``device_ids`` (``_ddp_aware_trainer_init`` below).
"""

import builtins
import types

import numpy as np
import torch

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

    def load(f, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        try:
            return torch.load(f, *args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as error:  # name the file: a bare unpickling error says nothing
            raise RuntimeError(f"cannot load checkpoint '{f}': {error}") from error

    proxy.load = load
    return proxy


def _ddp_aware_trainer_init(self, config, model):
    """``AbstractTrainer.__init__`` that also accepts CPU models under DDP (item 7)."""
    from torch.nn.parallel import DistributedDataParallel

    self.config = config
    self.model = model
    if not config["single_spec"]:
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        on_cuda = config["device"].type == "cuda"
        self.distributed_model = DistributedDataParallel(
            self.model, device_ids=[config["local_rank"]] if on_cuda else None)


def trusted_load(path, map_location="cpu"):
    """Load a RecBole checkpoint written by this plugin or RecBole (item 2)."""
    return _torch_with_trusted_load().load(path, map_location=map_location)


def disable_sine_anomaly_detection():
    import recbole.model.sequential_recommender  # noqa: F401  (imports sine.py)

    torch.autograd.set_detect_anomaly(False)


def check_versions():
    import pandas

    if int(pandas.__version__.split(".")[0]) >= 3:
        raise ImportError(
            f"recbole_lpo needs pandas<3 (found {pandas.__version__}): pandas 3 silently "
            "breaks RecBole 1.2.1's NaN filling; pip install 'pandas<3'"
        )


def apply():
    """Apply every fix once; safe to call again."""
    global _APPLIED
    if _APPLIED:
        return
    check_versions()
    restore_numpy_aliases()
    from recbole.config import configurator
    import recbole.trainer.trainer as trainer_module

    configurator.Config.compatibility_settings = _safe_compatibility_settings
    trainer_module.torch = _torch_with_trusted_load()
    trainer_module.AbstractTrainer.__init__ = _ddp_aware_trainer_init
    disable_sine_anomaly_detection()
    _APPLIED = True
