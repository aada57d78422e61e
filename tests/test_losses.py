"""Tests for recbole_lpo.losses: LPO (paper Eq. 12-13, 17), DPO-family rivals, tail weights."""

import math

import pytest
import torch

from recbole_lpo.losses import (
    PREFERENCE_LOSSES,
    dpo_loss,
    lpo_loss,
    orpo_loss,
    preference_loss,
    reward_accuracies,
    reward_margins,
    sdpo_loss,
    simpo_loss,
    tail_weights,
)


def softplus(x):
    """-log sigmoid(-x), written out by hand for the reference values."""
    return math.log1p(math.exp(x))


def log_odds(logp):
    return logp - math.log(1.0 - math.exp(logp))


# ---------------------------------------------------------------- LPO


def test_lpo_worked_value():
    loss = lpo_loss(torch.tensor([2.0]), torch.tensor([[1.0, 0.5]]), tau=0.5)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-3)), abs=1e-6)
    assert loss.item() == pytest.approx(0.169846, abs=1e-6)


def test_lpo_gradient_matches_softmax_formula():
    torch.manual_seed(0)
    tau = 0.3
    pos = torch.randn(5, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    lpo_loss(pos, neg, tau).sum().backward()
    p = torch.softmax(torch.cat([pos.detach()[:, None], neg.detach()], dim=1) / tau, dim=1)  # [B K+1]
    torch.testing.assert_close(pos.grad, (p[:, 0] - 1) / tau)
    torch.testing.assert_close(neg.grad, p[:, 1:] / tau)


def test_lpo_gradcheck():
    torch.manual_seed(1)
    pos = torch.randn(3, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lpo_loss(a, b, 0.2), (pos, neg))


def test_lpo_invariant_to_row_shift():
    torch.manual_seed(2)
    pos, neg = torch.randn(6), torch.randn(6, 3)
    shift = torch.randn(6) * 10  # e.g. the log-partition: logits vs log-probs
    torch.testing.assert_close(
        lpo_loss(pos + shift, neg + shift[:, None], 0.1), lpo_loss(pos, neg, 0.1), atol=1e-4, rtol=1e-5
    )


def test_lpo_stable_for_large_logits():
    loss = lpo_loss(torch.tensor([1000.0]), torch.tensor([[990.0]]), tau=0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-100)), abs=1e-6)


@pytest.mark.parametrize("tau", [0.0, -1.0, None])
def test_lpo_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        lpo_loss(torch.zeros(2), torch.zeros(2, 3), tau)


def test_shape_validation():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        lpo_loss(torch.zeros(2), torch.zeros(3, 2), 1.0)
    with pytest.raises(ValueError, match=r"1-D"):
        dpo_loss(torch.zeros(2, 1), torch.zeros(2, 1), 1.0)


# ---------------------------------------------------------------- rivals


def test_dpo_value():
    # K = 2: mean of the two pairwise losses.
    got = dpo_loss(torch.tensor([0.5]), torch.tensor([[-0.3, 0.2]]), beta=2.0)
    want = 0.5 * (softplus(-2.0 * 0.8) + softplus(-2.0 * 0.3))
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_sdpo_value():
    got = sdpo_loss(torch.tensor([0.5]), torch.tensor([[-0.3, 0.2]]), beta=2.0)
    lse = math.log(math.exp(2.0 * (-0.3 - 0.5)) + math.exp(2.0 * (0.2 - 0.5)))
    assert got.item() == pytest.approx(softplus(lse), abs=1e-6)


def test_simpo_value():
    got = simpo_loss(torch.tensor([-1.0]), torch.tensor([[-2.0, -1.5]]), beta=2.0, gamma=0.5)
    want = 0.5 * (softplus(-(2.0 * 1.0 - 0.5)) + softplus(-(2.0 * 0.5 - 0.5)))
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_orpo_value_both_branches():
    # -0.2 is above -ln 2 (expm1 branch), -1.5 and -3.0 below it (log1p branch).
    got = orpo_loss(torch.tensor([-0.2]), torch.tensor([[-1.5, -3.0]]))
    want = 0.5 * (
        softplus(-(log_odds(-0.2) - log_odds(-1.5))) + softplus(-(log_odds(-0.2) - log_odds(-3.0)))
    )
    assert got.item() == pytest.approx(want, abs=1e-6)


def _logp(shape, generator):
    # Log-probabilities in (-4, -0.05): inside ORPO's domain, away from the clamp.
    return (-0.05 - 4 * torch.rand(shape, generator=generator, dtype=torch.float64)).requires_grad_()


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: dpo_loss(a, b, 1.5),
        lambda a, b: sdpo_loss(a, b, 1.5),
        lambda a, b: simpo_loss(a, b, 1.5, 0.3),
        orpo_loss,
    ],
    ids=["dpo", "sdpo", "simpo", "orpo"],
)
def test_rival_gradcheck(fn):
    g = torch.Generator().manual_seed(3)
    assert torch.autograd.gradcheck(fn, (_logp(4, g), _logp((4, 3), g)))


def test_sdpo_k1_equals_dpo():
    torch.manual_seed(4)
    pos, neg = torch.randn(8), torch.randn(8, 1)
    torch.testing.assert_close(sdpo_loss(pos, neg, 0.7), dpo_loss(pos, neg, 0.7))


def test_simpo_gamma0_equals_reference_free_dpo():
    torch.manual_seed(5)
    pos, neg = -torch.rand(8) * 5, -torch.rand(8, 3) * 5
    out_simpo = preference_loss("simpo", pos, neg, beta=1.3, gamma=0.0).losses
    out_dpo = preference_loss("dpo", pos, neg, torch.zeros(8), torch.zeros(8, 3), beta=1.3).losses
    torch.testing.assert_close(out_simpo, out_dpo)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_finite_as_positive_prob_goes_to_one(dtype):
    pos = torch.tensor([-1e-12, 0.0, math.log1p(-1e-9)], dtype=dtype, requires_grad=True)
    neg = torch.full((3, 2), -2.0, dtype=dtype, requires_grad=True)
    loss = orpo_loss(pos, neg)
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    # The positive is near-certain, so the odds-ratio term is near its minimum.
    assert (loss < 1e-3).all()


# ---------------------------------------------------------------- dispatch


def test_dispatch_runs_every_loss():
    torch.manual_seed(6)
    b, k = 4, 3
    pos, neg = -torch.rand(b) * 3, -torch.rand(b, k) * 3
    ref_pos, ref_neg = -torch.rand(b) * 3, -torch.rand(b, k) * 3
    for name in PREFERENCE_LOSSES:
        out = preference_loss(name, pos, neg, ref_pos, ref_neg, tau=0.1, beta=1.0, gamma=0.2)
        assert out.losses.shape == (b,), name
        assert out.chosen_rewards.shape == (b,), name
        assert out.rejected_rewards.shape == (b, k), name
        assert torch.isfinite(out.losses).all(), name


def test_dispatch_matches_direct_calls_and_rewards():
    pos, neg = torch.tensor([-1.0, -2.0]), torch.tensor([[-1.5], [-0.5]])
    ref_pos, ref_neg = torch.tensor([-1.2, -1.0]), torch.tensor([[-1.0], [-1.0]])
    out = preference_loss("lpo", pos, neg, tau=0.5)
    torch.testing.assert_close(out.losses, lpo_loss(pos, neg, 0.5))
    torch.testing.assert_close(out.chosen_rewards, pos / 0.5)
    out = preference_loss("dpo", pos, neg, ref_pos, ref_neg, beta=2.0)
    torch.testing.assert_close(out.losses, dpo_loss(pos - ref_pos, neg - ref_neg, 2.0))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.4, -2.0]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([[-1.0], [1.0]]))


def test_dispatch_rewards_are_detached():
    pos = torch.tensor([-1.0], requires_grad=True)
    neg = torch.tensor([[-2.0]], requires_grad=True)
    out = preference_loss("simpo", pos, neg, beta=1.0)
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_dispatch_unknown_name_lists_valid():
    with pytest.raises(ValueError) as err:
        preference_loss("ipo", torch.zeros(2), torch.zeros(2, 1), beta=1.0)
    for name in PREFERENCE_LOSSES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["dpo", "sdpo"])
def test_dispatch_reference_required(name):
    with pytest.raises(ValueError, match="reference"):
        preference_loss(name, torch.zeros(2), torch.zeros(2, 1), beta=1.0)
    with pytest.raises(ValueError, match="reference"):
        preference_loss(name, torch.zeros(2), torch.zeros(2, 1), torch.zeros(2), beta=1.0)


def test_dispatch_missing_hyperparameters():
    with pytest.raises(ValueError, match="tau"):
        preference_loss("lpo", torch.zeros(2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="beta"):
        preference_loss("simpo", torch.zeros(2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="beta"):
        preference_loss("dpo", torch.zeros(2), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1))


# ---------------------------------------------------------------- diagnostics


def test_reward_margins_and_accuracies():
    chosen = torch.tensor([1.0, 0.0, 2.0])
    rejected = torch.tensor([[0.0, 0.5], [1.0, -1.0], [2.0, 3.0]])
    # margins: 1 - 0.25, 0 - 0, 2 - 2.5 -> mean 0.25/3
    assert reward_margins(chosen, rejected).item() == pytest.approx((0.75 + 0.0 - 0.5) / 3)
    # accuracies: only the first sample beats all its rejected rewards
    assert reward_accuracies(chosen, rejected).item() == pytest.approx(1 / 3)
    assert reward_margins(chosen, rejected).dim() == 0


# ---------------------------------------------------------------- tail weights


def test_tail_weights_worked_value():
    w = tail_weights(torch.tensor([True, False, False, True]), alpha_tail=1.0, alpha_head=0.0)
    torch.testing.assert_close(w, torch.tensor([0.3655, 0.1345, 0.1345, 0.3655]), atol=1e-4, rtol=0)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_tail_weights_equal_alphas_give_plain_mean():
    w = tail_weights(torch.tensor([True, False, True, True, False]), alpha_tail=0.7, alpha_head=0.7)
    torch.testing.assert_close(w, torch.full((5,), 0.2))


def test_tail_weights_rejects_non_bool():
    with pytest.raises(ValueError, match="bool"):
        tail_weights(torch.tensor([1, 0]), 1.0, 0.0)
