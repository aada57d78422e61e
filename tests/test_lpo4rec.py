"""LPO4Rec: the objective inside the model, against SASRec and by hand."""

import math

import pytest
import torch
from recbole_lpo.data.head_tail import head_tail_split

from conftest import build_model, train_losses


def _setup(model_name, tiny_config, **overrides):
    config, model, train_data, _ = build_model(model_name, tiny_config(**overrides))
    return config, model, train_data


def test_lambda_zero_without_reweighting_is_sasrec(workdir, tiny_config):
    _, sasrec, data = _setup("SASRec", tiny_config)
    expected = train_losses(sasrec, data, steps=8)
    _, lpo, data = _setup("LPO4Rec", tiny_config, lpo_lambda=0.0, reweight=False)
    assert train_losses(lpo, data, steps=8) == pytest.approx(expected, abs=1e-6)
    assert len(expected) == 8


def test_sampler_does_not_shift_the_model_random_stream(workdir, tiny_config):
    _, sasrec, data = _setup("SASRec", tiny_config)
    batch = next(iter(data))
    sasrec.train()
    sasrec_loss = sasrec.calculate_loss(batch)
    state_after_sasrec = torch.get_rng_state()
    _, lpo, data = _setup("LPO4Rec", tiny_config, reweight=False)
    batch = next(iter(data))
    lpo.train()
    lpo.calculate_loss(batch)
    assert torch.equal(torch.get_rng_state(), state_after_sasrec)
    # the CE part of LPO4Rec's loss is SASRec's loss (same dropout masks)
    assert lpo.preference_objective.stats["loss/ce"] == pytest.approx(sasrec_loss.item(), abs=1e-6)


def test_objective_matches_hand_computation(workdir, tiny_config):
    """Deterministic top-K negatives, so the whole loss can be recomputed here."""
    config, model, data = _setup("LPO4Rec", tiny_config, neg_sampler="topk", neg_count=3,
                                 lpo_lambda=0.7, lpo_tau=0.5, alpha_tail=2.0, alpha_head=0.5)
    split = head_tail_split(data.dataset)
    objective = model.preference_objective
    assert torch.equal(objective.candidate_mask, split.head_mask)  # negatives: head items only
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, split.tail_mask.numel(), generator=gen, dtype=torch.float64, requires_grad=True)
    tail_items = split.tail_mask.nonzero().squeeze(1)
    head_items = split.head_mask.nonzero().squeeze(1)
    targets = torch.cat([tail_items[:2], head_items[:4]])
    loss = objective(logits, targets)

    expected = 0.0
    alpha = [2.0, 2.0, 0.5, 0.5, 0.5, 0.5]
    norm = sum(math.exp(a) for a in alpha)
    for i in range(6):
        z = logits[i].detach()
        ce = torch.logsumexp(z, 0).item() - z[targets[i]].item()
        head_scores = {int(j): z[j].item() for j in head_items if int(j) != int(targets[i])}
        negs = sorted(head_scores, key=head_scores.get, reverse=True)[:3]
        terms = [z[targets[i]].item() / 0.5] + [head_scores[j] / 0.5 for j in negs]
        lpo = math.log(sum(math.exp(t) for t in terms)) - terms[0]
        expected += math.exp(alpha[i]) / norm * (ce + 0.7 * lpo)
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_negatives_are_head_items_during_training(workdir, tiny_config, monkeypatch):
    config, model, data = _setup("LPO4Rec", tiny_config)
    split = head_tail_split(data.dataset)
    import recbole_lpo.objective as objective_module

    drawn = []
    original = objective_module.sample_negatives

    def spy(*args, **kwargs):
        negatives = original(*args, **kwargs)
        drawn.append((negatives, args[3]))
        return negatives

    monkeypatch.setattr(objective_module, "sample_negatives", spy)
    train_losses(model, data, steps=4)
    assert len(drawn) == 4
    for negatives, positives in drawn:
        assert split.head_mask[negatives].all()
        assert not (negatives == positives.unsqueeze(1)).any()
        assert negatives.shape[1] == config["neg_count"]
        assert all(len(set(row.tolist())) == config["neg_count"] for row in negatives)


def test_sampler_stream_is_seeded_from_config(workdir, tiny_config):
    draws = []
    for seed in (11, 11, 12):
        _, model, _ = _setup("LPO4Rec", tiny_config, sampler_seed=seed)
        objective = model.preference_objective
        gen = objective._generator(torch.device("cpu"))
        draws.append(torch.rand(3, generator=gen))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_preference_loss_with_lpo_on_sasrec_equals_lpo4rec(workdir, tiny_config):
    _, lpo, data = _setup("LPO4Rec", tiny_config)
    expected = train_losses(lpo, data, steps=8)
    _, sasrec, data = _setup("SASRec", tiny_config, preference_loss="lpo")
    assert train_losses(sasrec, data, steps=8) == pytest.approx(expected, abs=1e-6)


def test_preference_weight_warm_up(workdir, tiny_config):
    """pref_warmup_epochs (beyond the paper): weight * min(1, epoch / W); epoch 0 is the CE alone."""
    _, model, data = _setup("LPO4Rec", tiny_config, pref_warmup_epochs=4, lpo_lambda=0.8, neg_sampler="topk",
                            neg_count=3)
    _, plain, _ = _setup("LPO4Rec", tiny_config, lpo_lambda=0.8, neg_sampler="topk", neg_count=3)
    objective, reference = model.preference_objective, plain.preference_objective
    logits = torch.randn(5, objective.tail_mask.numel(), generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 2, 3, 4, 5])
    with pytest.raises(RuntimeError, match="PreferenceTrainer"):
        objective(logits, targets)  # warming up needs to know the epoch
    for epoch, factor in ((0, 0.0), (2, 0.5), (4, 1.0), (9, 1.0)):
        objective.epoch = epoch
        reference.weight = 0.8 * factor  # the same objective without warm-up, at that weight
        assert objective(logits, targets).item() == pytest.approx(reference(logits, targets).item(), abs=1e-6)
    assert objective.current_weight() == 0.8
    _, off, _ = _setup("LPO4Rec", tiny_config)
    assert off.preference_objective.warmup_epochs == 0  # off by default (the paper)


def test_warm_up_runs_through_the_trainer(workdir, tiny_config):
    """PreferenceTrainer sets the epoch: epoch 0 trains CE only (no preference statistics), epoch 1 has them."""
    from recbole_lpo.quick_start import run_recbole_lpo
    from conftest import TINY_YAML

    result = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], tiny_config(epochs=2, pref_warmup_epochs=2),
                             saved=False)
    assert sorted(result["preference_history"]) == [1]


def test_paper_values_are_one_config_file_away(workdir):
    """properties/model/LPO4Rec-paper.yaml holds the paper's values (METHOD.md), with both
    mechanisms beyond the paper off; the grid's paper row reads it."""
    from conftest import FIXTURES, ROOT, TINY_YAML
    from recbole_lpo.config import Config
    from recbole_lpo.reproduce.catalogue import EXPERIMENTS

    paper_file = str(ROOT / "properties" / "model" / "LPO4Rec-paper.yaml")
    config = Config("LPO4Rec", "tiny", [TINY_YAML, paper_file], {"data_path": str(FIXTURES)})
    paper = {"lpo_lambda": 0.5, "lpo_tau": 0.1, "neg_count": 10, "neg_sampler": "gumbel", "neg_pool": "head",
             "reweight": True, "alpha_tail": 1.0, "alpha_head": 0.0, "pref_warmup_epochs": 0,
             "tail_score_bonus": 0.0}
    assert {key: config[key] for key in paper} == paper
    assert EXPERIMENTS["LPO4Rec (paper)"].overrides == paper
