"""Trainers, looked up by ``recbole_lpo.utils.get_trainer``.

``Trainer`` is RecBole's trainer made safe to leave running:

- checkpoints are written atomically (temporary file, then rename), so a
  kill never leaves a half-written best model;
- each checkpoint also holds every random state training uses (torch, numpy,
  random, CUDA, the training loader's shuffling generator and the negative
  sampler's generator), so ``resume_checkpoint`` continues exactly where
  the uninterrupted run would have been;
- a NaN or infinite loss stops training with ``TrainingDiverged`` naming the
  epoch and batch; the best checkpoint on disk is left as it was;
- a checkpoint is marked ``finished`` once ``fit`` returns;
  ``resume_checkpoint`` refuses a finished run, another model, data set or
  item vocabulary, and changed settings (all but ``epochs``,
  ``stopping_step`` and the result-neutral ones of
  ``recbole_lpo.checkpoint``), and writes the resumed run to this trainer's
  own new ``saved_model_file``: the file resumed from is never written.

``PreferenceTrainer`` adds the per-epoch preference diagnostics. Models
without a custom ``<Model>Trainer`` here use ``PreferenceTrainer`` when they
train with a preference loss and ``Trainer`` when RecBole would use its base
trainer; RecBole's special trainers (KG, pretraining, ...) are used as they are.
"""

import os
import random

import numpy as np
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color

from recbole_lpo.checkpoint import RESUME_MAY_CHANGE, changed_settings, read_checkpoint, recorded
from recbole_lpo.errors import TrainingDiverged, UserInputError


def capture_rng_state(train_data=None, model=None):
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if train_data is not None and getattr(train_data, "generator", None) is not None:
        state["train_loader"] = train_data.generator.get_state()
    objective = getattr(model, "preference_objective", None)
    if objective is not None and objective.generator is not None:
        state["negative_sampler"] = objective.generator.get_state()
    return state


def restore_rng_state(state, train_data=None, model=None):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "train_loader" in state and train_data is not None:
        train_data.generator.set_state(state["train_loader"])
    objective = getattr(model, "preference_objective", None)
    if "negative_sampler" in state and objective is not None:
        objective.restore_generator(state["negative_sampler"])


class Trainer(RecBoleTrainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self._train_data = None
        self._pending_rng_state = None
        self._position = (None, None)  # (epoch, batch) being trained
        self.last_saved_epoch = None  # epoch of the checkpoint on disk, if any

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._train_data = train_data
        if self._pending_rng_state is not None:  # resuming: continue the random streams too
            restore_rng_state(self._pending_rng_state, train_data, self.model)
            self._pending_rng_state = None
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        if saved:
            self._mark_finished()
        return result

    def _mark_finished(self):
        """Record in the checkpoint that its run ended (``resume_checkpoint`` refuses it)."""
        if (not self.config["single_spec"] and self.config["local_rank"] != 0) or not os.path.isfile(
                self.saved_model_file):
            return
        state = read_checkpoint(self.saved_model_file)
        state["finished"] = {"epochs_trained": max(self.train_loss_dict, default=-1) + 1}
        self._write_atomically(state, self.saved_model_file)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss_func = loss_func or self.model.calculate_loss

        def counted_loss(interaction):
            epoch, batch = self._position
            self._position = (epoch, batch + 1)
            return loss_func(interaction)

        self._position = (epoch_idx, -1)
        return super()._train_epoch(train_data, epoch_idx, loss_func=counted_loss, show_progress=show_progress)

    def _check_nan(self, loss):
        if not torch.isfinite(loss).all():
            epoch, batch = self._position
            value = "NaN" if torch.isnan(loss).any() else "infinite"
            kept = f"; best checkpoint kept: {self.saved_model_file}" if os.path.exists(self.saved_model_file) else ""
            raise TrainingDiverged(f"training loss is {value} at epoch {epoch}, batch {batch}{kept}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rng_state": capture_rng_state(self._train_data, self.model),
        }
        self._write_atomically(state, saved_model_file)
        self.last_saved_epoch = epoch
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    @staticmethod
    def _write_atomically(state, path):
        """``torch.save`` to ``<path>.<pid>.partial``, then rename: a kill never leaves a half file
        (a killed write's partial file is removed by the next run, ``records.remove_stale_partials``)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        torch.save(state, partial, pickle_protocol=4)
        os.replace(partial, path)  # atomic: the old file stays whole until here

    def resume_checkpoint(self, resume_file):
        """Continue the run of ``resume_file`` (checked, see the module docstring) into
        ``self.saved_model_file``, which starts as a copy of it."""
        resume_file = str(resume_file)
        if not os.path.isfile(resume_file):
            raise UserInputError(f"cannot resume: checkpoint '{resume_file}' does not exist")
        checkpoint = read_checkpoint(resume_file)  # one clear error naming the file
        saved_config = checkpoint["config"]
        refuse = f"cannot resume from '{resume_file}'"
        if saved_config["model"] != self.config["model"]:
            raise UserInputError(f"{refuse}: it is a {saved_config['model']} checkpoint, not {self.config['model']}")
        if saved_config["dataset"] != self.config["dataset"]:
            raise UserInputError(f"{refuse}: it was trained on data set {saved_config['dataset']}, "
                                 f"not {self.config['dataset']}")
        tokens, own = recorded(checkpoint, "item_token_hash"), getattr(self.model, "item_token_hash", None)
        if tokens is not None and own is not None and tokens != own:
            raise UserInputError(f"{refuse}: it was trained on other items than data set "
                                 f"{self.config['dataset']} now holds (its atomic files changed)")
        if checkpoint.get("finished"):
            raise UserInputError(f"{refuse}: its run finished ({checkpoint['finished']['epochs_trained']} epochs "
                                 "trained); nothing to resume (start a new run to train again)")
        changed = changed_settings(saved_config, self.config)
        if changed:
            listing = ", ".join(f"{key} {before!r} -> {after!r}" for key, before, after in changed[:5])
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            raise UserInputError(f"{refuse} with other settings: {listing}{more}; a resumed run may change only "
                                 f"{', '.join(sorted(RESUME_MAY_CHANGE))} and output locations")
        new_file = self.saved_model_file
        try:
            super().resume_checkpoint(resume_file)  # sets saved_model_file to resume_file
        except RuntimeError as error:  # state_dict mismatch: another architecture
            raise UserInputError(f"{refuse}: {str(error).splitlines()[0]}") from None
        self.saved_model_file = new_file
        if self.config["single_spec"] or self.config["local_rank"] == 0:
            self._write_atomically(checkpoint, new_file)  # the best model so far, if no later epoch beats it
        self.last_saved_epoch = checkpoint["epoch"]
        self._pending_rng_state = checkpoint.get("rng_state")


class PreferenceTrainer(Trainer):
    """``Trainer`` plus per-epoch preference diagnostics (TRL's names).

    After each training epoch it logs the epoch means of ``loss/ce``,
    ``loss/preference``, ``rewards/margins`` (positive minus mean negative
    implicit reward) and ``rewards/accuracies`` (share of samples whose
    positive beats every sampled negative) to RecBole's logger and to
    tensorboard under ``train/<name>``. ``self.preference_history`` keeps
    them per epoch.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.preference_history = {}

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        objective = getattr(self.model, "preference_objective", None)
        if objective is not None:
            objective.reset_stats()
            objective.epoch = epoch_idx  # the preference weight's warm-up (pref_warmup_epochs)
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        stats = objective.epoch_stats() if objective is not None else {}
        if stats:
            self.preference_history[epoch_idx] = stats
            message = ", ".join(f"{name}: {value:.4f}" for name, value in stats.items())
            self.logger.info(set_color(f"epoch {epoch_idx} preference", "green") + f" [{message}]")
            for name, value in stats.items():
                self.tensorboard.add_scalar(f"train/{name}", value, epoch_idx)
        return loss
