"""Custom trainers, looked up as ``<Model>Trainer`` by ``recbole_lpo.utils.get_trainer``.

Models without one use ``PreferenceTrainer`` when they train with a
preference loss, else RecBole's trainer for their type.
"""

from recbole.trainer import Trainer
from recbole.utils import set_color


class PreferenceTrainer(Trainer):
    """RecBole's trainer plus per-epoch preference diagnostics (TRL's names).

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
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        stats = objective.epoch_stats() if objective is not None else {}
        if stats:
            self.preference_history[epoch_idx] = stats
            message = ", ".join(f"{name}: {value:.4f}" for name, value in stats.items())
            self.logger.info(set_color(f"epoch {epoch_idx} preference", "green") + f" [{message}]")
            for name, value in stats.items():
                self.tensorboard.add_scalar(f"train/{name}", value, epoch_idx)
        return loss
