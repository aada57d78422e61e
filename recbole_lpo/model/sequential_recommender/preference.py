"""``PreferenceAligned``: the mixin behind LPO4Rec and its rivals.

``class LPO4Rec(PreferenceAligned, SASRec)`` is SASRec (same layers,
``forward``, ``predict``, ``full_sort_predict``) whose CE loss is replaced by
``recbole_lpo.objective.PreferenceObjective`` for ``preference_loss``.
"""

from recbole_lpo.objective import attach_preference_objective


class PreferenceAligned:
    preference_loss = None  # set by each model: lpo, dpo, sdpo, simpo, orpo

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        attach_preference_objective(self, config, dataset, self.preference_loss)
