r"""SimPO4Rec: SASRec aligned with SimPO (Meng et al., NeurIPS 2024), as compared
in the LPO4Rec paper (Sec. V-E).

    L = sum_i w_i ( CE_i + pref_weight * -log sigmoid(beta * (l(w) - l(l)) - gamma) )

with l(y) = log_softmax(z)[y] (a single next item, so SimPO's length
normalisation is the identity) and no reference model. ``neg_count`` > 1
averages the pairwise losses.
"""

from recbole.model.sequential_recommender import SASRec

from recbole_lpo.model.sequential_recommender.preference import PreferenceAligned


class SimPO4Rec(PreferenceAligned, SASRec):
    preference_loss = "simpo"
