r"""DPO4Rec: SASRec aligned with DPO (Rafailov et al., NeurIPS 2023), as compared
in the LPO4Rec paper (Sec. V-E).

    L = sum_i w_i ( CE_i + pref_weight * -log sigmoid(beta * (r(w) - r(l))) ),
    r(y) = log pi(y | S) - log pi_ref(y | S)

with one sampled negative l (``neg_count`` > 1 averages the pairwise losses).
The reference pi_ref is a frozen SASRec checkpoint (``ref_model_path``) of the
same architecture and data; the policy starts from it. The reference's
log-partition cancels in r(w) - r(l), so it scores only the K+1 items.
``w`` = 1/B unless ``reweight: True``.
"""

from recbole.model.sequential_recommender import SASRec

from recbole_lpo.model.sequential_recommender.preference import PreferenceAligned


class DPO4Rec(PreferenceAligned, SASRec):
    preference_loss = "dpo"
