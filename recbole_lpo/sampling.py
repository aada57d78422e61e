"""Negative samplers for preference losses (paper Eq. 14-15 and Table II ablations).

LPO4Rec's adaptive sampler draws K negatives per sample, without replacement,
with probability proportional to ``exp(z)`` over the candidate items (head
items in the paper), where ``z`` are the step's detached logits at
temperature 1. Drawing sequentially from the softmax without replacement is
the Plackett-Luce model; the paper samples it with the Gumbel top-K trick::

    negatives = topk(z[candidates] + Gumbel(0, 1), K)

``gumbel_topk_negatives`` draws from the same law more cheaply: i.i.d. draws
from the softmax of the whole row, keeping the first K that are candidates,
not the positive and new (a rejected draw is a draw from what is left). For
K = 1 the draw frequencies are ``softmax(z)`` over the candidates; for K > 1
they are Plackett-Luce inclusion probabilities (not K * softmax). The
selection is not differentiable; gradients flow through the chosen items'
logits, which the caller gathers.

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


# Draws per row in each round of rejection sampling, as (per negative, fixed).
_FIRST_ROUND = (2, 16)
_SECOND_ROUND = (64, 256)


def _first_distinct(draws: torch.Tensor, valid: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first K valid draws of each row not drawn before in that row, in draw order.

    ``draws`` [R n] item ids, ``valid`` [R n] bool. Returns ``(items [R K],
    count [R])``; a row with fewer than K such draws has ``count < K`` and
    -1 in its unfilled places.
    """
    ordered, order = draws.sort(dim=1, stable=True)  # equal ids keep draw order
    repeat = torch.zeros_like(valid)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]  # not the first draw of its id
    repeat = torch.empty_like(repeat).scatter_(1, order, repeat)  # back to draw order
    keep = valid & ~repeat  # [R n]
    place = keep.cumsum(dim=1) - 1  # [R n], place among the kept draws
    keep &= place < k
    items = torch.full((draws.shape[0], k), -1, dtype=torch.long, device=draws.device)
    rows = keep.nonzero()[:, 0]
    items[rows, place[keep]] = draws[keep]
    return items, keep.sum(dim=1)


def _continue_with_keys(keys, rows, items, count, candidates, positives, k):
    """Fill rows' unfilled places with the top keys among the items they may still draw.

    ``keys`` [R N] are random keys (Gumbel or uniform) for ``rows``; the rows'
    first ``count`` items stay, the rest continue the law conditioned on them.
    """
    keys[:, ~candidates] = float("-inf")
    row = torch.arange(len(rows), device=keys.device)
    keys[row, positives[rows]] = float("-inf")
    drawn = items >= 0
    keys[row.unsqueeze(1).expand_as(items)[drawn], items[drawn]] = float("-inf")
    top = keys.topk(k, dim=1).indices  # [R K], enough: K - count are finite
    place = torch.arange(k, device=keys.device) - count.unsqueeze(1)  # [R K], < 0: already drawn
    return torch.where(place < 0, items, top.gather(1, place.clamp(min=0)))


def _rejection_sample(draw, finish, candidates, positives, k):
    """K distinct items per row from a stream of i.i.d. draws, rejecting the excluded.

    ``draw(rows, n)`` gives each of ``rows`` n more draws (item ids; ids >= N
    are rejected); the first K draws of a row that are candidates, not its
    positive and new make its sample: sequential sampling without
    replacement from the draws' law restricted to what is left. Rows still
    short after two rounds go to ``finish(rows, items, count)``.
    """
    n_items = candidates.shape[0]
    padded = torch.cat([candidates, candidates.new_zeros(1)])  # id N (a draw past the end) is rejected

    def take(rows, draws):
        valid = padded[draws] & (draws != positives[rows].unsqueeze(1))
        return _first_distinct(draws, valid, k)

    rows = torch.arange(positives.shape[0], device=positives.device)
    draws = draw(rows, _FIRST_ROUND[0] * k + _FIRST_ROUND[1]).clamp_(max=n_items)  # [B n]
    items, count = take(rows, draws)
    short = (count < k).nonzero().squeeze(1)
    if len(short):  # continue the same streams
        more = draw(short, _SECOND_ROUND[0] * k + _SECOND_ROUND[1]).clamp_(max=n_items)
        items[short], count[short] = take(short, torch.cat([draws[short], more], dim=1))
        short = (count < k).nonzero().squeeze(1)
    if len(short):
        items[short] = finish(short, items[short], count[short])
    return items


def gumbel_topk_negatives(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    positives: torch.Tensor,
    k: int,
    generator: Optional[torch.Generator] = None,
) -> torch.LongTensor:
    """K distinct candidates per row, drawn with probability ~ exp(score) (Eq. 14-15).

    The law of the Gumbel top-K ``topk(s + G, K)``: K sequential softmax draws
    without replacement over the candidates, positive excluded
    (Plackett-Luce). Computed by drawing with replacement from the softmax of
    the whole row and keeping, in order, the first K draws that are
    candidates, not the positive and not drawn before: rejecting a draw IS
    renormalising over what is left, so this is the same law. It costs one
    softmax, one cumulative sum and a binary search per draw, instead of a
    noise value, two logarithms and a top-K over every candidate. Rows that
    do not fill within two rounds of draws (a softmax peaked on excluded
    items) finish with the Gumbel top-K on their scores, conditioned on the
    items already drawn, which continues the same law. Probabilities are
    float32, exact up to float32 rounding as Gumbel keys are. Candidate scores
    must be finite.
    """
    _check_args(scores, candidates, positives, k)
    scores = scores.detach()
    # Half precision is too coarse to keep the sampling law.
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    cdf = torch.softmax(scores, dim=1).cumsum_(dim=1)  # [B N]
    total = cdf[:, -1:]  # [B 1], 1 up to rounding; NaN or 0 where the softmax failed

    def draw(rows, n):
        every_row = len(rows) == len(cdf)  # then rows is arange(B): no copy of the cdf
        row_cdf, row_total = (cdf, total) if every_row else (cdf[rows], total[rows])
        target = torch.rand(len(rows), n, generator=generator, device=cdf.device).mul_(row_total)  # [R n]
        # item i is drawn when cdf[i - 1] <= target < cdf[i]; a target at or past the
        # end (rounding, a failed row) gives N, which is rejected
        return torch.searchsorted(row_cdf, target, right=True)  # [R n]

    def finish(rows, items, count):
        keys = scores[rows].clone()  # [R N]
        noise = torch.empty_like(keys).uniform_(generator=generator)
        # s - log(E), E = -log(1 - U) ~ Exp(1): Gumbel keys (Tensor.exponential_ is ~6x slower on CPU)
        keys.sub_(noise.neg_().log1p_().neg_().log_())
        return _continue_with_keys(keys, rows, items, count, candidates, positives, k)

    return _rejection_sample(draw, finish, candidates, positives, k)


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

    ``scores`` only fixes shape and device. Draws candidates uniformly with
    replacement and keeps the first K distinct ones that are not the positive
    (a uniformly random K-subset), so it costs O(K) per row, not O(n_items);
    rows that do not fill (K close to the pool size) finish with uniform keys.
    """
    _check_args(scores, candidates, positives, k)
    cand_idx = candidates.nonzero().squeeze(1)  # [C]

    def draw(rows, n):
        picks = torch.randint(cand_idx.numel(), (len(rows), n), generator=generator, device=cand_idx.device)
        return cand_idx[picks]  # [R n]

    def finish(rows, items, count):
        keys = torch.rand(len(rows), scores.shape[1], generator=generator, device=scores.device)  # [R N]
        return _continue_with_keys(keys, rows, items, count, candidates, positives, k)

    return _rejection_sample(draw, finish, candidates, positives, k)


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
