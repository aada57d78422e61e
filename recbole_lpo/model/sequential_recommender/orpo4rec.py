r"""ORPO4Rec: SASRec aligned with ORPO (Hong et al., EMNLP 2024), as compared in
the LPO4Rec paper (Sec. V-E).

    L = sum_i w_i ( CE_i + orpo_weight * -log sigmoid(log odds(w) - log odds(l)) ),
    log odds(y) = l(y) - log(1 - exp(l(y)))

ORPO's NLL term is the backbone's CE (counted once). No reference model.
"""

from recbole.model.sequential_recommender import SASRec

from recbole_lpo.model.sequential_recommender.preference import PreferenceAligned


class ORPO4Rec(PreferenceAligned, SASRec):
    preference_loss = "orpo"
