"""Tests for recbole_lpo.sampling: Gumbel top-K (paper Eq. 14-15) and the ablation samplers."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from recbole_lpo.sampling import (
    NEGATIVE_SAMPLERS,
    gumbel_topk_negatives,
    sample_negatives,
    topk_negatives,
    uniform_negatives,
)

SAMPLERS = [gumbel_topk_negatives, topk_negatives, uniform_negatives]
SAMPLER_IDS = ["gumbel", "topk", "uniform"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _setup(n_rows=400, n_items=14, seed=0):
    """Column 0 is padding, columns 1-4 tail (non-candidates), 5.. head candidates."""
    g = _gen(seed)
    scores = 2.0 * torch.randn(n_rows, n_items, generator=g)
    candidates = torch.ones(n_items, dtype=torch.bool)
    candidates[:5] = False
    # Positives both among and outside the candidates (tail targets, even padding).
    positives = torch.randint(0, n_items, (n_rows,), generator=g)
    return scores, candidates, positives


def _assert_valid(out, candidates, positives, k):
    assert out.dtype == torch.long and out.shape == (positives.shape[0], k)
    assert candidates[out].all(), "drew a non-candidate (tail or padding)"
    assert (out != 0).all(), "drew the padding column"
    assert (out != positives[:, None]).all(), "drew the row's positive"
    srt = out.sort(dim=1).values
    assert (srt[:, 1:] != srt[:, :-1]).all(), "repeated item within a row"


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
@pytest.mark.parametrize("k", [1, 3, 8])  # 8 = 9 candidates - 1, the largest allowed
def test_contract(sampler, k):
    scores, candidates, positives = _setup()
    out = sampler(scores, candidates, positives, k, generator=_gen(1))
    _assert_valid(out, candidates, positives, k)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_contract_all_columns_candidates(sampler):
    scores, _, positives = _setup()
    candidates = torch.ones(scores.shape[1], dtype=torch.bool)
    before = scores.clone()
    out = sampler(scores, candidates, positives, scores.shape[1] - 1, generator=_gen(2))
    assert (out != positives[:, None]).all()
    srt = out.sort(dim=1).values
    assert (srt[:, 1:] != srt[:, :-1]).all()
    assert torch.equal(scores, before)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_scores_not_modified_and_grad_free(sampler):
    scores, candidates, positives = _setup()
    scores.requires_grad_()
    before = scores.detach().clone()
    out = sampler(scores, candidates, positives, 3, generator=_gen(3))
    assert torch.equal(scores.detach(), before)
    assert not out.requires_grad and scores.grad is None


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_reproducible_and_global_rng_untouched(sampler):
    scores, candidates, positives = _setup()
    state = torch.get_rng_state()
    a = sampler(scores, candidates, positives, 4, generator=_gen(7))
    b = sampler(scores, candidates, positives, 4, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)


def test_different_seeds_differ():
    scores, candidates, positives = _setup()
    a = gumbel_topk_negatives(scores, candidates, positives, 4, generator=_gen(7))
    b = gumbel_topk_negatives(scores, candidates, positives, 4, generator=_gen(8))
    assert not torch.equal(a, b)


def test_dispatch_by_name():
    scores, candidates, positives = _setup()
    for name, fn in NEGATIVE_SAMPLERS.items():
        a = sample_negatives(name, scores, candidates, positives, 2, generator=_gen(9))
        b = fn(scores, candidates, positives, 2, generator=_gen(9))
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- distributions


def _fixed_rows(scores_row, n_rows):
    return scores_row.expand(n_rows, -1)  # same scores in every row: many draws in one call


def test_gumbel_k1_frequencies_are_softmax():
    n_draws = 20_000
    row = torch.tensor([0.0, 1.0, -0.5, 2.0, 0.3, 1.2, -1.0, 3.0])
    candidates = torch.tensor([False, True, True, True, True, True, True, False])  # pad, tail
    positives = torch.full((n_draws,), 3)  # a candidate: must be excluded
    out = gumbel_topk_negatives(_fixed_rows(row, n_draws), candidates, positives, 1, generator=_gen(10))
    allowed = candidates.clone()
    allowed[3] = False
    counts = torch.bincount(out[:, 0], minlength=row.numel()).double()
    assert counts[~allowed].sum() == 0
    probs = torch.softmax(row[allowed].double(), dim=0)
    result = chisquare(counts[allowed].numpy(), (probs * n_draws).numpy())
    assert result.pvalue > 1e-3, result


def _plackett_luce_inclusion(probs, k):
    """Exact P(item in the K-subset), enumerating every ordered K-tuple."""
    n = len(probs)
    incl = np.zeros(n)
    for seq in itertools.permutations(range(n), k):
        p, left = 1.0, 1.0
        for i in seq:
            p *= probs[i] / left
            left -= probs[i]
        incl[list(seq)] += p
    return incl


def test_gumbel_k_gt_1_matches_plackett_luce_inclusion():
    n_draws, k = 20_000, 3
    row = torch.tensor([0.0, 2.0, 1.0, 0.0, -1.0, 0.5, 5.0])
    candidates = torch.tensor([False, True, True, True, True, True, False])  # 5 candidates
    positives = torch.full((n_draws,), 6)  # a tail item: all 5 candidates available
    out = gumbel_topk_negatives(_fixed_rows(row, n_draws), candidates, positives, k, generator=_gen(11))
    items = candidates.nonzero().squeeze(1)
    probs = torch.softmax(row[items].double(), dim=0).numpy()
    exact = _plackett_luce_inclusion(probs, k)
    assert exact.sum() == pytest.approx(k)
    freq = np.array([(out == i).any(dim=1).double().mean().item() for i in items])
    # Each frequency is a mean of n_draws Bernoullis: allow 5 standard errors.
    tol = 5 * np.sqrt(exact * (1 - exact) / n_draws)
    assert np.all(np.abs(freq - exact) < tol), (freq, exact, tol)
    # The test can tell Plackett-Luce from the naive K * softmax.
    assert np.any(np.abs(np.minimum(k * probs, 1) - exact) > 3 * tol)
    # The first draw alone is softmax-distributed.
    first = np.array([(out[:, 0] == i).double().mean().item() for i in items])
    assert np.all(np.abs(first - probs) < 5 * np.sqrt(probs * (1 - probs) / n_draws))


@pytest.mark.parametrize("positive_score", [6.0, 20.0], ids=["mostly-rejected", "all-rejected"])
def test_gumbel_law_kept_when_softmax_peaks_on_the_positive(positive_score):
    # The positive holds ~97 % (or all) of the softmax: most rows finish after the
    # rounds of draws from the conditioned Gumbel top-K, some with items already drawn.
    n_draws, k = 20_000, 3
    row = torch.tensor([0.0, 1.0, 0.0, 0.5, -0.5, 2.0, positive_score])
    candidates = torch.tensor([False, True, True, True, True, True, True])
    positives = torch.full((n_draws,), 6)
    out = gumbel_topk_negatives(_fixed_rows(row, n_draws), candidates, positives, k, generator=_gen(14))
    _assert_valid(out, candidates, positives, k)
    items = torch.arange(1, 6)
    probs = torch.softmax(row[items].double(), dim=0).numpy()
    exact = _plackett_luce_inclusion(probs, k)
    freq = np.array([(out == i).any(dim=1).double().mean().item() for i in items])
    tol = 5 * np.sqrt(exact * (1 - exact) / n_draws)
    assert np.all(np.abs(freq - exact) < tol), (freq, exact, tol)
    first = np.array([(out[:, 0] == i).double().mean().item() for i in items])
    assert np.all(np.abs(first - probs) < 5 * np.sqrt(probs * (1 - probs) / n_draws))


def test_uniform_law_kept_when_rows_do_not_fill():
    # K = 7 of 8 allowed items: the draws rarely find 7 distinct, rows finish with keys.
    n_draws, k = 20_000, 7
    scores = torch.zeros(n_draws, 10)
    candidates = torch.ones(10, dtype=torch.bool)
    candidates[0] = False
    positives = torch.full((n_draws,), 4)
    out = uniform_negatives(scores, candidates, positives, k, generator=_gen(15))
    _assert_valid(out, candidates, positives, k)
    allowed = [1, 2, 3, 5, 6, 7, 8, 9]
    # every item is left out of the 7-subset with probability 1/8, and first with 1/8
    left_out = torch.stack([~(out == i).any(dim=1) for i in allowed]).double().mean(dim=1)
    first = torch.stack([out[:, 0] == i for i in allowed]).double().mean(dim=1)
    tol = 5 * math.sqrt(0.125 * 0.875 / n_draws)
    assert torch.all((left_out - 0.125).abs() < tol) and torch.all((first - 0.125).abs() < tol)


def test_topk_returns_best_candidates():
    scores, candidates, positives = _setup(n_rows=50)
    k = 4
    out = topk_negatives(scores, candidates, positives, k)
    for r in range(scores.shape[0]):
        pool = [i for i in range(scores.shape[1]) if candidates[i] and i != positives[r]]
        best = sorted(pool, key=lambda i: -scores[r, i].item())[:k]
        assert out[r].tolist() == best  # also in descending score order


def test_uniform_frequencies_are_flat():
    n_draws = 20_000
    scores = _fixed_rows(torch.tensor([0.0, 5.0, -5.0, 1.0, 9.0, 0.0, 2.0]), n_draws)  # ignored
    candidates = torch.tensor([False, True, True, True, True, True, False])
    positives = torch.full((n_draws,), 2)
    out = uniform_negatives(scores, candidates, positives, 1, generator=_gen(12))
    counts = torch.bincount(out[:, 0], minlength=7).double()
    allowed = torch.tensor([False, True, False, True, True, True, False])
    assert counts[~allowed].sum() == 0
    result = chisquare(counts[allowed].numpy())
    assert result.pvalue > 1e-3, result
    # K > 1: each of the 4 allowed items is included with probability K / 4.
    out = uniform_negatives(scores, candidates, positives, 3, generator=_gen(13))
    freq = torch.stack([(out == i).any(dim=1) for i in (1, 3, 4, 5)]).double().mean(dim=1)
    assert torch.all((freq - 0.75).abs() < 5 * math.sqrt(0.75 * 0.25 / n_draws))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_errors(sampler):
    scores, candidates, positives = _setup()
    with pytest.raises(ValueError, match="neg_count"):
        sampler(scores, candidates, positives, 0)
    with pytest.raises(ValueError, match="exceeds the 8"):
        sampler(scores, candidates, positives, 9)
    with pytest.raises(ValueError, match="bool"):
        sampler(scores, candidates.long(), positives, 2)
    with pytest.raises(ValueError, match="length"):
        sampler(scores, candidates[:-1], positives, 2)
    with pytest.raises(ValueError, match="2-D"):
        sampler(scores[0], candidates, positives[:1], 2)


def test_unknown_sampler_lists_names():
    scores, candidates, positives = _setup()
    with pytest.raises(ValueError) as err:
        sample_negatives("popularity", scores, candidates, positives, 2)
    for name in NEGATIVE_SAMPLERS:
        assert name in str(err.value)
