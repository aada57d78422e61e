"""R2Rec: tail-reweighted CE (batch softmax at a temperature) and re-embedding of tail items."""

import math
import os
import shutil
import sys

import pytest
import torch
import yaml

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError

from conftest import FIXTURES, ROOT, TINY_YAML, build_model, cli_on_fixture, train_losses

R2REC = FIXTURES / "r2rec"
ITEMEMB_YAML = R2REC / "itememb.yaml"


def _feature_config(workdir, tiny_config, **overrides):
    """tiny_config plus the .itememb keys, with data_path holding tiny.inter and tiny.itememb."""
    folder = workdir / "data" / "tiny"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        shutil.copy(FIXTURES / "tiny" / "tiny.inter", folder)
        shutil.copy(R2REC / "tiny.itememb", folder)
    config = tiny_config(data_path=str(workdir / "data"))
    config.update(yaml.safe_load(ITEMEMB_YAML.read_text()))
    config.update(overrides)
    return config


def _file_vectors():
    rows = (R2REC / "tiny.itememb").read_text().splitlines()[1:]
    return {token: torch.tensor([float(x) for x in vector.split()]) for token, vector in
            (row.split("\t") for row in rows)}


def test_weights_have_documented_values(workdir, tiny_config):
    _, model, data, _ = build_model("R2Rec", tiny_config())
    split = head_tail_split(data.dataset)
    assert torch.equal(model.tail_mask, split.tail_mask)  # r2rec_tail_ratio ~ = tail_ratio
    tail = split.tail_mask.nonzero().squeeze(1)
    head = split.head_mask.nonzero().squeeze(1)
    targets = torch.stack([tail[0], head[0], head[1], tail[1]])
    weights = model.sample_weights(targets)
    # tau 0.5, alpha (1, 0): e^2 / (2 e^2 + 2) and 1 / (2 e^2 + 2)
    big, small = math.exp(2) / (2 * math.exp(2) + 2), 1 / (2 * math.exp(2) + 2)
    assert weights.tolist() == pytest.approx([big, small, small, big], abs=1e-6)
    assert weights.tolist() == pytest.approx([0.4404, 0.0596, 0.0596, 0.4404], abs=1e-4)
    assert model.sample_weights(head[:5]).tolist() == pytest.approx([0.2] * 5)  # no tail target: plain mean


def test_loss_is_the_weighted_ce(workdir, tiny_config):
    _, model, data, _ = build_model("R2Rec", tiny_config(r2rec_tau=0.25, alpha_tail=2.0, alpha_head=0.5))
    batch = next(iter(data))
    model.eval()  # no dropout: forward is deterministic
    with torch.no_grad():
        loss = model.calculate_loss(batch).item()
        seq = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        logits = (seq @ model.item_embedding.weight.T).double()
    targets = batch[model.POS_ITEM_ID]
    alpha = [2.0 / 0.25 if model.tail_mask[t] else 0.5 / 0.25 for t in targets.tolist()]
    norm = sum(math.exp(a) for a in alpha)
    expected = sum(math.exp(a) / norm * (torch.logsumexp(z, 0) - z[t]).item()
                   for a, z, t in zip(alpha, logits, targets.tolist()))
    assert model.tail_mask[targets].any() and not model.tail_mask[targets].all()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_id_embeddings_only_is_sasrec_plus_reweighting(workdir, tiny_config):
    _, sasrec, data, _ = build_model("SASRec", tiny_config())
    expected = train_losses(sasrec, data, steps=8)
    _, plain, data, _ = build_model("R2Rec", tiny_config(reweight=False))
    initial = plain.state_dict()
    _, fresh, _, _ = build_model("SASRec", tiny_config())
    # built exactly as SASRec: nothing re-embedded, same random stream
    assert initial.keys() == fresh.state_dict().keys()
    assert all(torch.equal(initial[k], v) for k, v in fresh.state_dict().items())
    assert train_losses(plain, data, steps=8) == pytest.approx(expected, abs=1e-6)
    _, reweighted, data, _ = build_model("R2Rec", tiny_config())
    assert train_losses(reweighted, data, steps=1)[0] != pytest.approx(expected[0], abs=1e-4)


def test_training_tail_ratio_has_its_own_key(workdir, tiny_config):
    config, model, data, _ = build_model("R2Rec", tiny_config(r2rec_tail_ratio=0.3))
    assert torch.equal(model.tail_mask, head_tail_split(data.dataset, 0.3).tail_mask)
    assert int(model.tail_mask.sum()) == 18
    assert config["tail_ratio"] == 0.2 and head_tail_split(data.dataset).n_tail == 12  # metrics' split unchanged


def test_item_features_start_the_embeddings_and_tail_rows_are_redrawn(workdir, tiny_config):
    _, model, data, _ = build_model("R2Rec", _feature_config(workdir, tiny_config))
    vectors = _file_vectors()
    tokens = data.dataset.field2id_token["item_id"]
    weight = model.item_embedding.weight.detach().clone()
    tail = model.tail_mask
    assert len(tokens) == 61  # the feature file adds no items
    assert torch.equal(weight[0], torch.zeros(16))  # padding
    redrawn = []
    for item in range(1, len(tokens)):
        token = tokens[item]
        if tail[item] or token not in vectors:
            redrawn.append(weight[item])
            if token in vectors:
                assert not torch.allclose(weight[item], vectors[token], atol=1e-3)
        else:
            assert torch.allclose(weight[item], vectors[token], atol=1e-6)
    assert "i059" not in vectors and len(redrawn) == 12 + (0 if tail[data.dataset.token2id("item_id", "i059")] else 1)
    assert 0.8 < torch.stack(redrawn).std().item() < 1.2  # N(0, reembed_std^2), reembed_std 1
    assert model.item_embedding.weight.requires_grad
    train_losses(model, data, steps=2)
    head = (~tail).nonzero().squeeze(1)[1:]
    assert not torch.allclose(model.item_embedding.weight[head], weight[head])  # features are fine-tuned

    _, kept, _, _ = build_model("R2Rec", _feature_config(workdir, tiny_config, reembed_tail=False))
    for item in tail.nonzero().squeeze(1).tolist():
        assert torch.allclose(kept.item_embedding.weight[item], vectors[tokens[item]], atol=1e-6)


@pytest.mark.parametrize("overrides,needle", [
    ({"hidden_size": 8, "inner_size": 16}, "each vector needs hidden_size=8 values"),
    ({"preload_weight": None}, "has no preload_weight entry"),
])
def test_item_feature_errors(overrides, needle, workdir, tiny_config):
    with pytest.raises(UserInputError, match=needle):
        build_model("R2Rec", _feature_config(workdir, tiny_config, **overrides))


@pytest.mark.parametrize("features", [False, True], ids=["id-embeddings", "item-features"])
def test_cli_end_to_end(features, workdir):
    """One epoch through the CLI, ID-only and with a .itememb file; the checkpoint loads back."""
    config_files, data_path = TINY_YAML, str(FIXTURES)
    if features:
        config_files = f"{TINY_YAML} {ITEMEMB_YAML}"
        data_path = _feature_config(workdir, lambda **kw: dict(kw))["data_path"]
    out = cli_on_fixture(workdir, "--model=R2Rec", config_files=config_files, data_path=data_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(os.listdir(workdir / "results")) == 1
    checkpoints = [f for f in os.listdir(workdir / "saved") if f.endswith(".pth")]
    assert len(checkpoints) == 1

    from recbole_lpo.inference import load_data_and_model, recommend

    config, model, dataset, *_ = load_data_and_model(str(workdir / "saved" / checkpoints[0]))
    assert type(model).__name__ == "R2Rec" and config["item_feature_field"] == ("iid" if features else None)
    assert len(recommend(model, dataset, ["u1"], k=5)["u1"]) == 5


@pytest.mark.parametrize("arg,message", [
    ("--r2rec_tau=0", "r2rec_tau must be > 0, got 0"),
    ("--r2rec_tail_ratio=1.5", "r2rec_tail_ratio must be in (0, 1), got 1.5"),
])
def test_cli_rejects_bad_hyper_parameters(arg, message, workdir, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    import run_recbole_lpo

    argv = ["run_recbole_lpo.py", "--model=R2Rec", "--dataset=tiny", f"--data_path={FIXTURES}",
            f"--config_files={TINY_YAML}", arg]
    assert run_recbole_lpo.main(argv[1:]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {message}"]


def test_feature_file_naming_unknown_items_is_refused(workdir, tiny_config):
    """An aliased .itememb row for an item outside .inter would silently join the ranking."""
    import shutil

    from recbole_lpo.config import Config
    from recbole_lpo.data.atomic import validate_atomic_files
    from recbole_lpo.errors import UserInputError

    folder = workdir / "tiny"
    shutil.copytree(FIXTURES / "tiny", folder)
    rows = (FIXTURES / "r2rec" / "tiny.itememb").read_text().splitlines()
    vector = rows[1].split("\t")[1]
    (folder / "tiny.itememb").write_text("\n".join(rows + [f"i999\t{vector}"]) + "\n")
    config = Config("R2Rec", "tiny", [TINY_YAML, str(ITEMEMB_YAML)], tiny_config(data_path=str(workdir)))
    with pytest.raises(UserInputError, match="1 items in column 'iid' are not in .* \\(e.g. i999\\)"):
        validate_atomic_files(config)
