"""The preference-loss family on SASRec and on other RecBole backbones."""


import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recbole_lpo.errors import UserInputError
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.utils import get_model, get_trainer

from conftest import FIXTURES, TINY_YAML, build_model, train_losses


def _reference(tiny_config, **overrides):
    """Train SASRec for one epoch on the fixture; return its best checkpoint."""
    result = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(**overrides), saved=True)
    path = result["result_file"]
    import json

    return json.load(open(path))["checkpoint"]


def _build(model_name, tiny_config, **overrides):
    return build_model(model_name, tiny_config(**overrides))


@pytest.mark.parametrize(
    "model,overrides",
    [
        ("LPO4Rec", {}),
        ("DPO4Rec", {"ref": True}),
        ("SDPO4Rec", {"ref": True}),
        ("SimPO4Rec", {}),
        ("ORPO4Rec", {}),
        ("GRU4Rec", {"preference_loss": "lpo"}),
        ("Caser", {"preference_loss": "lpo"}),
        ("SASRec", {"preference_loss": "simpo", "neg_sampler": "gumbel", "neg_pool": "head"}),
    ],
)
def test_one_epoch_end_to_end(model, overrides, workdir, tiny_config):
    overrides = dict(overrides)
    if overrides.pop("ref", False):
        overrides["ref_model_path"] = _reference(tiny_config)
    config, net, train_data, valid_data = _build(model, tiny_config, **overrides)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = get_trainer(config["MODEL_TYPE"], model, config)(config, net)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.train_loss_dict.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    stats = trainer.preference_history[0]
    assert set(stats) == {"loss/ce", "loss/preference", "rewards/margins", "rewards/accuracies"}
    assert 0.0 <= stats["rewards/accuracies"] <= 1.0


def test_reference_is_frozen_and_policy_starts_from_it(workdir, tiny_config):
    config, policy, train_data, valid_data = _build("DPO4Rec", tiny_config, ref_model_path=_reference(tiny_config))
    reference = policy.preference_objective.reference
    ref_before = {k: v.clone() for k, v in reference.state_dict().items()}
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    assert all(torch.equal(policy_before[k], ref_before[k]) for k in ref_before)  # starts from it
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert not any(p is q for p in reference.parameters() for q in policy.parameters())
    trainer = get_trainer(config["MODEL_TYPE"], "DPO4Rec", config)(config, policy)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in reference.parameters()}
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert all(torch.equal(reference.state_dict()[k], ref_before[k]) for k in ref_before)
    assert any(not torch.equal(policy.state_dict()[k], policy_before[k]) for k in policy_before)
    assert set(policy.state_dict()) == set(ref_before)  # the reference is not saved with the policy


def test_mismatched_reference_fails_before_training(workdir, tiny_config):
    with pytest.raises(UserInputError, match="hidden_size 32 != 16"):
        _build("DPO4Rec", tiny_config, ref_model_path=_reference(tiny_config, hidden_size=32, inner_size=32))
    # a reference trained on other items: a copy of the fixture without its last 10 items
    other = workdir / "other" / "tiny"
    other.mkdir(parents=True)
    rows = open(FIXTURES / "tiny" / "tiny.inter").read().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if int(r.split("\t")[1][1:]) <= 50]
    (other / "tiny.inter").write_text("\n".join(keep) + "\n")
    path = _reference(tiny_config, data_path=str(workdir / "other"))
    with pytest.raises(UserInputError, match="different item tokens"):
        _build("DPO4Rec", tiny_config, ref_model_path=path)
    with pytest.raises(UserInputError, match="does not exist"):
        _build("SDPO4Rec", tiny_config, ref_model_path=str(workdir / "nope.pth"))
    with pytest.raises(UserInputError, match="needs ref_model_path"):
        _build("DPO4Rec", tiny_config)


def test_builtin_models_unchanged_without_preference_loss(workdir, tiny_config):
    """With preference_loss unset, GRU4Rec is RecBole's GRU4Rec, loss for loss."""
    from recbole.config import Config as RecBoleConfig

    config, ours, data, _ = _build("GRU4Rec", tiny_config)
    assert config["preference_loss"] is None and isinstance(ours.loss_fct, torch.nn.CrossEntropyLoss)
    expected = train_losses(ours, data)
    recbole_config = RecBoleConfig("GRU4Rec", "tiny", [TINY_YAML], tiny_config())
    init_seed(recbole_config["seed"], recbole_config["reproducibility"])
    data = data_preparation(recbole_config, create_dataset(recbole_config))[0]
    init_seed(recbole_config["seed"], recbole_config["reproducibility"])
    theirs = get_model("GRU4Rec")(recbole_config, data.dataset)
    assert train_losses(theirs, data) == pytest.approx(expected, abs=1e-7)


def test_caser_keeps_its_regularisation(workdir, tiny_config):
    _, plain, data, _ = _build("Caser", tiny_config, reg_weight=0.5)
    expected = train_losses(plain, data)
    _, aligned, data, _ = _build("Caser", tiny_config, reg_weight=0.5, preference_loss="lpo", lpo_lambda=0.0,
                             reweight=False)
    # float32 round-off only (the objective sums w_i * CE_i, CrossEntropyLoss takes the mean): rel 1e-6;
    # dropping the regularisation changes these losses by about 80 % (reg_weight 0 vs 0.5)
    assert train_losses(aligned, data) == pytest.approx(expected, rel=1e-6)


def test_two_step_recipe_from_the_cli(workdir):
    from conftest import cli_on_fixture

    step1 = cli_on_fixture(workdir, "--model=SASRec")
    assert step1.returncode == 0, step1.stderr[-2000:]
    checkpoint = next(p for p in (workdir / "saved").iterdir() if p.suffix == ".pth")
    step2 = cli_on_fixture(workdir, "--model=DPO4Rec", f"--ref_model_path={checkpoint}")
    assert step2.returncode == 0, step2.stderr[-2000:]
    assert len(list((workdir / "results").iterdir())) == 2


@pytest.mark.parametrize("model", ["DPO4Rec", "SDPO4Rec"])
def test_reference_cache_gives_the_reference_scores(model, workdir, tiny_config):
    from recbole_lpo.objective import encode_sequence

    reference_path = _reference(tiny_config)
    _, policy, train_data, _ = _build(model, tiny_config, ref_model_path=reference_path)
    _, off, _, _ = _build(model, tiny_config, ref_model_path=reference_path, reference_cache=False)
    assert off.preference_objective.reference_encodings is None
    objective = policy.preference_objective
    encodings = objective.reference_encodings
    reference = objective.reference
    for batch in train_data:  # every training batch: the reference's own encodings
        assert torch.allclose(encodings(batch), encode_sequence(reference, batch), atol=1e-5)
    assert encodings.encodings.shape[0] == len(train_data.dataset)  # every training row, once
    assert encodings.misses == 0  # all found in the cache
    # the loss is the same with and without the cache (same batch, same random state)
    policy.train()
    losses = []
    for cache in (encodings, None):
        objective.reference_encodings = cache
        init_seed(1, True)
        objective.restore_generator(torch.Generator().manual_seed(3).get_state())
        losses.append(policy.calculate_loss(batch).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # a sequence that is no training row is encoded on the spot
    batch[encodings.seq_field][0, :] = train_data.dataset.item_num - 1
    assert torch.allclose(encodings(batch), encode_sequence(reference, batch), atol=1e-5)
    assert encodings.misses == 1
