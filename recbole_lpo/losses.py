"""Preference losses for sequential recommendation: LPO and its DPO-family rivals.

One loss family in one place (in the spirit of TRL's ``dpo_trainer``). Every
function is pure PyTorch, takes per-sample log-probabilities of the backbone
over all items, ``l(y) = log_softmax(z)[y]``, and returns per-sample losses
``[B]``; the caller applies sample weights, the weight of the preference term
and the cross-entropy (CE) term.

Shapes: ``B`` samples, ``K`` rejected (negative) items per sample.

References (Z. Li et al., "Listwise Preference Alignment Optimization for Tail
Item Recommendation", arXiv 2507.02255, 2025):

* LPO, Eq. 12-13 and 17: a listwise Bradley-Terry objective over the positive
  and K negatives, in softmax form at temperature ``tau``::

      L_LPO = -log( exp(l_w / tau) / (exp(l_w / tau) + sum_k exp(l_k / tau)) )

  It is invariant to a shared shift of all K+1 inputs, so logits and
  log-probabilities give the same value.
* Rivals, Sec. V-E, with ``r(y) = l(y) - l_ref(y)``:

  - DPO   (Rafailov et al. 2023): ``-log sigmoid(beta * (r_w - r_l))``
  - S-DPO (Chen et al. 2024):     ``-log sigmoid(-log sum_k exp(beta * (r_lk - r_w)))``
  - SimPO (Meng et al. 2024):     ``-log sigmoid(beta * (l_w - l_l) - gamma)``
  - ORPO  (Hong et al. 2024):     ``-log sigmoid(logodds(w) - logodds(l))``,
    ``logodds(y) = l(y) - log(1 - exp(l(y)))``

* Tail-aware reweighting, Eq. 16-17: ``w = softmax(alpha)`` over the batch,
  ``alpha_i = alpha_T`` for tail targets and ``alpha_H`` otherwise.
"""

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

PREFERENCE_LOSSES = ("lpo", "dpo", "sdpo", "simpo", "orpo")


class PreferenceOutput(NamedTuple):
    """Per-sample losses plus TRL-style implicit rewards (detached, for logging)."""

    losses: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B]
    rejected_rewards: torch.Tensor  # [B K]


def _check_pair(pos: torch.Tensor, neg: torch.Tensor, what: str) -> None:
    if pos.dim() != 1:
        raise ValueError(f"{what}: positive term must be 1-D [B], got shape {tuple(pos.shape)}")
    if neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"{what}: negative term must be [B, K] with B={pos.shape[0]}, got shape {tuple(neg.shape)}"
        )


def _check_positive(value: Optional[float], name: str, loss_type: str) -> float:
    if value is None:
        raise ValueError(f"{loss_type} loss needs {name}, got None")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def lpo_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Listwise preference loss (paper Eq. 12-13, 17), one value per sample.

    ``L = logsumexp([s_w, s_1..s_K] / tau) - s_w / tau``, i.e. the cross-entropy
    of the positive within the list {positive, K negatives} at temperature tau.
    ``pos_scores`` [B] and ``neg_scores`` [B, K] may be logits or log-probs.
    Worked value: s_w = 2, negatives (1, 0.5), tau 0.5 -> log(1 + e^-2 + e^-3).
    """
    _check_pair(pos_scores, neg_scores, "lpo_loss")
    tau = _check_positive(tau, "tau", "lpo")
    logits = torch.cat([pos_scores.unsqueeze(-1), neg_scores], dim=-1) / tau  # [B K+1]
    return torch.logsumexp(logits, dim=-1) - logits[:, 0]  # [B]


def dpo_loss(pos_logratio: torch.Tensor, neg_logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO loss ``-log sigmoid(beta * (r_w - r_l))`` with ``r = l - l_ref``.

    The paper's form has one negative (K = 1). For K > 1 this returns the mean
    of the K pairwise losses, so the scale does not grow with K.
    """
    _check_pair(pos_logratio, neg_logratio, "dpo_loss")
    beta = _check_positive(beta, "beta", "dpo")
    margins = beta * (pos_logratio.unsqueeze(-1) - neg_logratio)  # [B K]
    return -F.logsigmoid(margins).mean(dim=-1)  # [B]


def sdpo_loss(pos_logratio: torch.Tensor, neg_logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """S-DPO loss ``-log sigmoid(-log sum_k exp(beta * (r_lk - r_w)))``.

    All K negatives share one softmax-style term; with K = 1 it equals DPO.
    """
    _check_pair(pos_logratio, neg_logratio, "sdpo_loss")
    beta = _check_positive(beta, "beta", "sdpo")
    gaps = beta * (neg_logratio - pos_logratio.unsqueeze(-1))  # [B K]
    return -F.logsigmoid(-torch.logsumexp(gaps, dim=-1))  # [B]


def simpo_loss(
    pos_logp: torch.Tensor, neg_logp: torch.Tensor, beta: float, gamma: float = 0.0
) -> torch.Tensor:
    """SimPO loss ``-log sigmoid(beta * (l_w - l_l) - gamma)``, reference-free.

    Items are single tokens, so SimPO's length normalisation is the identity.
    With gamma = 0 this is DPO with a zero reference. Mean over K if K > 1.
    """
    _check_pair(pos_logp, neg_logp, "simpo_loss")
    beta = _check_positive(beta, "beta", "simpo")
    margins = beta * (pos_logp.unsqueeze(-1) - neg_logp) - gamma  # [B K]
    return -F.logsigmoid(margins).mean(dim=-1)  # [B]


def log_odds(logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` from ``l = log p``, finite in value and gradient.

    ``log(1 - exp(l))`` uses ``log(-expm1(l))`` near 0 and ``log1p(-exp(l))``
    below -ln 2 (Maechler 2012). Each branch gets its input clamped to its own
    domain so the branch torch.where discards cannot leak inf/nan gradients.
    ``l`` is capped at -eps of its dtype: as p -> 1 the odds would be infinite;
    the cap bounds them (~16 in float32) and the gradient there is zero, which
    is harmless since ORPO's term already vanishes in that limit.
    """
    eps = torch.finfo(logp.dtype).eps
    logp = logp.clamp(max=-eps)
    near_zero = logp > -math.log(2.0)
    log1m_near = torch.log(-torch.expm1(logp.clamp(min=-math.log(2.0))))
    log1m_far = torch.log1p(-torch.exp(logp.clamp(max=-math.log(2.0))))
    return logp - torch.where(near_zero, log1m_near, log1m_far)


def orpo_loss(pos_logp: torch.Tensor, neg_logp: torch.Tensor) -> torch.Tensor:
    """ORPO's odds-ratio term ``-log sigmoid(logodds(w) - logodds(l))``.

    ORPO = NLL + weight * this term; its NLL term is the backbone's CE, which
    the caller already has, so only the odds-ratio term is returned here and
    the caller applies ``orpo_weight`` (never add CE twice). Mean over K if K > 1.
    """
    _check_pair(pos_logp, neg_logp, "orpo_loss")
    margins = log_odds(pos_logp).unsqueeze(-1) - log_odds(neg_logp)  # [B K]
    return -F.logsigmoid(margins).mean(dim=-1)  # [B]


def preference_loss(
    loss_type: str,
    pos_logp: torch.Tensor,
    neg_logp: torch.Tensor,
    ref_pos_logp: Optional[torch.Tensor] = None,
    ref_neg_logp: Optional[torch.Tensor] = None,
    *,
    tau: Optional[float] = None,
    beta: Optional[float] = None,
    gamma: float = 0.0,
) -> PreferenceOutput:
    """Dispatch to one preference loss by name; see ``PREFERENCE_LOSSES``.

    ``pos_logp`` [B], ``neg_logp`` [B, K]: policy log-probs of the positive and
    the negatives; ``ref_*`` the frozen reference's (needed by dpo and sdpo
    only; any shared log-partition cancels inside the log-ratio differences).
    Returns per-sample losses and implicit rewards (TRL vocabulary), detached:
    lpo ``l / tau``; dpo, sdpo ``beta * (l - l_ref)``; simpo ``beta * l``;
    orpo ``logodds(l)``.
    """
    _check_pair(pos_logp, neg_logp, "preference_loss")
    needs_ref = loss_type in ("dpo", "sdpo")
    if needs_ref:
        if ref_pos_logp is None or ref_neg_logp is None:
            raise ValueError(f"{loss_type} loss needs reference log-probs (ref_pos_logp, ref_neg_logp)")
        pos_logratio = pos_logp - ref_pos_logp  # [B]
        neg_logratio = neg_logp - ref_neg_logp  # [B K]

    if loss_type == "lpo":  # paper Eq. 12-13, 17: CE of w within {w, l_1..l_K} at tau
        losses = lpo_loss(pos_logp, neg_logp, tau)
        chosen, rejected = pos_logp / tau, neg_logp / tau
    elif loss_type == "dpo":  # Sec. V-E (Rafailov 2023): -log sig(beta (r_w - r_l))
        losses = dpo_loss(pos_logratio, neg_logratio, beta)
        chosen, rejected = beta * pos_logratio, beta * neg_logratio
    elif loss_type == "sdpo":  # Sec. V-E (Chen 2024): -log sig(-LSE_k beta (r_lk - r_w))
        losses = sdpo_loss(pos_logratio, neg_logratio, beta)
        chosen, rejected = beta * pos_logratio, beta * neg_logratio
    elif loss_type == "simpo":  # Sec. V-E (Meng 2024): -log sig(beta (l_w - l_l) - gamma)
        losses = simpo_loss(pos_logp, neg_logp, beta, gamma)
        chosen, rejected = beta * pos_logp, beta * neg_logp
    elif loss_type == "orpo":  # Sec. V-E (Hong 2024): -log sig(logodds_w - logodds_l)
        losses = orpo_loss(pos_logp, neg_logp)
        chosen, rejected = log_odds(pos_logp), log_odds(neg_logp)
    else:
        raise ValueError(f"Unknown preference loss '{loss_type}'; valid: {', '.join(PREFERENCE_LOSSES)}")
    return PreferenceOutput(losses, chosen.detach(), rejected.detach())


def reward_margins(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``chosen - mean_k rejected`` (TRL's ``rewards/margins``); scalar."""
    _check_pair(chosen, rejected, "reward_margins")
    return (chosen - rejected.mean(dim=-1)).mean()


def reward_accuracies(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Share of samples whose chosen reward beats every rejected one; scalar."""
    _check_pair(chosen, rejected, "reward_accuracies")
    return (chosen > rejected.max(dim=-1).values).float().mean()


def tail_weights(
    is_tail: torch.Tensor, alpha_tail: float, alpha_head: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Tail-aware sample weights (paper Eq. 16-17): ``softmax(alpha)`` over the batch.

    ``alpha_i = alpha_tail`` if sample i's target is a tail item, else
    ``alpha_head``. The weights sum to 1, so the weighted sum is a weighted
    mean; equal alphas give the plain mean (1/B each).
    Worked value: (tail, head, head, tail), alpha (1, 0) -> (0.3655, 0.1345, 0.1345, 0.3655).
    """
    if is_tail.dtype != torch.bool or is_tail.dim() != 1:
        raise ValueError(
            f"is_tail must be a 1-D bool tensor, got {is_tail.dtype} of shape {tuple(is_tail.shape)}"
        )
    alpha = torch.where(
        is_tail,
        torch.tensor(float(alpha_tail), device=is_tail.device, dtype=dtype),
        torch.tensor(float(alpha_head), device=is_tail.device, dtype=dtype),
    )  # [B]
    return torch.softmax(alpha, dim=0)  # [B]
