"""Negative samplers for preference losses (paper Eq. 14-15 and Table II ablations).

LPO4Rec's adaptive sampler draws K negatives per sample, without replacement,
with probability proportional to ``exp(z)`` over the candidate items (head
items in the paper), where ``z`` are the step's detached logits at
temperature 1. Drawing sequentially from the softmax without replacement is
the Plackett-Luce model, and the Gumbel top-K trick samples it in one shot::

    negatives = topk(z[candidates] + Gumbel(0, 1), K)

For K = 1 the draw frequencies are ``softmax(z)`` over the candidates; for
K > 1 they are Plackett-Luce inclusion probabilities (not K * softmax).
The selection is not differentiable; gradients flow through the chosen
items' logits, which the caller gathers.

Every sampler shares one signature and contract:
``(scores [B, N], candidates [N] bool, positives [B] long, k, generator)``
-> ``LongTensor [B, K]`` of column indices of ``scores``, K distinct items per
row, all candidates, never the row's positive. Randomness comes only from
``generator`` (the sampler's own stream, so it never shifts the model's RNG).
"""

from typing import Optional, Tuple

import torch


def _check_args(scores: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor, k: int) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, n_items], got shape {tuple(scores.shape)}")
    if candidates.dtype != torch.bool or candidates.dim() != 1:
        raise ValueError(
            f"candidates must be a 1-D bool mask, got {candidates.dtype} of shape {tuple(candidates.shape)}"
        )
    if candidates.shape[0] != scores.shape[1]:
        raise ValueError(
            f"candidates has length {candidates.shape[0]} but scores has {scores.shape[1]} columns"
        )
    if positives.dim() != 1 or positives.shape[0] != scores.shape[0]:
        raise ValueError(
            f"positives must be [B] with B={scores.shape[0]}, got shape {tuple(positives.shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"neg_count must be a positive integer, got {k!r}")
    # One candidate is reserved for the positive, so every row has K to draw.
    available = int(candidates.sum()) - 1
    if k > available:
        raise ValueError(f"neg_count={k} exceeds the {available} head items available as negatives")


def _positive_cells(
    candidates: torch.Tensor, cand_idx: torch.Tensor, positives: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rows [P], cols [P]) of the positives that are candidates, in cand_idx's column space."""
    col_of = torch.full_like(candidates, -1, dtype=torch.long)  # [N], -1 for non-candidates
    col_of[cand_idx] = torch.arange(cand_idx.numel(), device=cand_idx.device)
    pos_col = col_of[positives]  # [B]
    rows = (pos_col >= 0).nonzero().squeeze(1)  # [P]
    return rows, pos_col[rows]


def _candidate_view(
    scores: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A fresh copy of the candidates' scores, safe to edit in place.

    Returns ``(buf [B C], cand_idx [C] or None when every column is a
    candidate, rows [P], cols [P])``, the last two locating in buf the
    positives that are candidates.
    """
    scores = scores.detach()
    if bool(candidates.all()):
        rows = torch.arange(scores.shape[0], device=scores.device)
        return scores.clone(), None, rows, positives  # [B N]
    cand_idx = candidates.nonzero().squeeze(1)  # [C]
    rows, cols = _positive_cells(candidates, cand_idx, positives)
    return scores.index_select(1, cand_idx), cand_idx, rows, cols  # index_select copies: [B C]


def _top_k_items(
    keys: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, k: int, cand_idx: Optional[torch.Tensor]
) -> torch.LongTensor:
    """Item ids of the K largest keys per row, the positives' cells excluded."""
    keys[rows, cols] = float("-inf")
    picked = keys.topk(k, dim=1).indices  # [B K]
    return picked if cand_idx is None else cand_idx[picked]


def gumbel_topk_negatives(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.LongTensor:
    """K distinct candidates per row, drawn with probability ~ exp(score) (Eq. 14-15).

    Gumbel top-K: ``topk(s + G, K)`` with ``G = -log E``, ``E ~ Exp(1)``,
    equals K sequential softmax draws without replacement (Plackett-Luce).
    Candidate scores must be finite. Runs every training step, so it uses one
    [B, C] score copy plus one noise buffer and works in place on them.
    """
    _check_args(scores, candidates, positives, k)
    buf, cand_idx, rows, cols = _candidate_view(scores, candidates, positives)  # [B C]
    # Half-precision Gumbel noise is too coarse to keep the sampling law.
    if buf.dtype in (torch.float16, torch.bfloat16):
        buf = buf.float()
    # E = -log(1 - U) rather than Tensor.exponential_, which is ~6x slower on
    # CPU. 1 - U lies in (0, 1], so E is finite and G is never -inf; U = 0
    # gives G = +inf, i.e. that item comes first, as a tiny E would.
    noise = torch.empty_like(buf).uniform_(generator=generator)  # [B C]
    noise.neg_().log1p_()  # -E
    buf.sub_(noise.neg_().log_())  # s - log E = s + Gumbel(0, 1)
    # Mask after adding noise so the positive is -inf whatever the noise.
    return _top_k_items(buf, rows, cols, k, cand_idx)  # [B K]


def topk_negatives(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.LongTensor:
    """The K highest-scoring candidates per row, positive excluded (ablation; deterministic)."""
    _check_args(scores, candidates, positives, k)
    buf, cand_idx, rows, cols = _candidate_view(scores, candidates, positives)  # [B C]
    return _top_k_items(buf, rows, cols, k, cand_idx)  # [B K]


def uniform_negatives(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.LongTensor:
    """K distinct candidates per row, uniformly at random, positive excluded (ablation).

    ``scores`` only fixes shape and device. The top-K of i.i.d. uniform keys is
    a uniformly random K-subset (Gumbel top-K with constant scores).
    """
    _check_args(scores, candidates, positives, k)
    cand_idx = candidates.nonzero().squeeze(1)  # [C]
    keys = torch.rand(scores.shape[0], cand_idx.numel(), generator=generator, device=scores.device)  # [B C]
    rows, cols = _positive_cells(candidates, cand_idx, positives)
    return _top_k_items(keys, rows, cols, k, cand_idx)  # [B K]


NEGATIVE_SAMPLERS = {
    "gumbel": gumbel_topk_negatives,
    "topk": topk_negatives,
    "uniform": uniform_negatives,
}


def sample_negatives(
    name: str,
    scores: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.LongTensor:
    """Draw ``[B, K]`` negatives with the sampler registered under ``name``."""
    sampler = NEGATIVE_SAMPLERS.get(name)
    if sampler is None:
        raise ValueError(f"Unknown negative sampler '{name}'; valid: {', '.join(NEGATIVE_SAMPLERS)}")
    return sampler(scores, candidates, positives, k, generator=generator)
