r"""SDPO4Rec: SASRec aligned with S-DPO (Chen et al., "On Softmax Direct
Preference Optimization for Recommendation", NeurIPS 2024), as compared in
the LPO4Rec paper (Sec. V-E).

    L = sum_i w_i ( CE_i + pref_weight * -log sigmoid(-log sum_k exp(beta * (r(l_k) - r(w)))) )

over K sampled negatives, r(y) = log pi(y | S) - log pi_ref(y | S) against a
frozen SASRec reference (``ref_model_path``); the policy starts from it. With
K = 1 it is DPO.
"""

from recbole.model.sequential_recommender import SASRec

from recbole_lpo.model.sequential_recommender.preference import PreferenceAligned


class SDPO4Rec(PreferenceAligned, SASRec):
    preference_loss = "sdpo"
