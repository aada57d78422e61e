r"""LPO4Rec (Li et al., "Listwise Preference Alignment Optimization for Tail
Item Recommendation", arXiv 2507.02255, 2025).

SASRec trained with ``sum_i w_i (CE_i + lambda * L_LPO_i)`` (Eq. 17), where

    L_LPO_i = -log( exp(z_w / tau) / (exp(z_w / tau) + sum_k exp(z_k / tau)) )   (Eq. 12-13)

over the positive w and K negatives drawn by Gumbel top-K from this step's
detached logits of HEAD items (Eq. 14-15), and ``w = softmax(alpha)`` over the
batch with ``alpha_tail`` for tail targets, ``alpha_head`` otherwise (Eq. 16).

Deviations from the authors' released code (METHOD.md lists its bugs): the
LPO term is the paper's log-softmax on logits, minimised; tau, K and lambda
come from the config; reweighting is a true weighted mean; the backbone is
RecBole's SASRec (positional embeddings, causal mask); test metrics come from
the best validation checkpoint.
"""

from recbole.model.sequential_recommender import SASRec

from recbole_lpo.model.sequential_recommender.preference import PreferenceAligned


class LPO4Rec(PreferenceAligned, SASRec):
    preference_loss = "lpo"
