"""CITIES: tail embeddings inferred from contexts on a frozen, trained SASRec."""

import json
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_lpo.checkpoint import trusted_load
from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.data.sequences import training_sequences
from recbole_lpo.model.sequential_recommender.cities import ContextInference, _masked_mean, _padding_mask, item_contexts
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.utils import get_model

from conftest import FIXTURES, TINY_YAML, build_model, cli_on_fixture, train_losses


def _base(tiny_config, model="SASRec", **overrides):
    """Train ``model`` for one epoch on the fixture; return its checkpoint."""
    result = run_recbole_lpo(model, "tiny", [TINY_YAML], tiny_config(**overrides), saved=True)
    with open(result["result_file"], encoding="utf-8") as f:
        return json.load(f)["checkpoint"]


def test_contexts_mask_the_item_and_stop_at_sequence_ends():
    contexts, centers = item_contexts([[1, 2, 3], [4], [5, 1]], window=2, mask_id=9)
    assert centers.tolist() == [1, 1, 2, 3, 5]  # sorted by item; the lone 4 has no context
    assert contexts.tolist() == [
        [0, 0, 9, 2, 3],  # 1 at the start of [1, 2, 3]
        [0, 5, 9, 0, 0],  # 1 at the end of [5, 1]: nothing leaks from the other sequences
        [0, 1, 9, 3, 0],
        [1, 2, 9, 0, 0],
        [0, 0, 9, 1, 0],
    ]


def test_context_interpreter_encodes_only_the_runs():
    """h(c) from the runs of items only (grouped by length) equals h(c) over the whole padded window."""
    torch.manual_seed(0)
    g = ContextInference(16, 7, n_layers=2, n_heads=2, inner_size=32, hidden_dropout_prob=0.2,
                         attn_dropout_prob=0.5, hidden_act="gelu", layer_norm_eps=1e-12)
    torch.nn.init.normal_(g.position_weight, 1.0, 0.5)  # distinct a_p: a shifted position would show
    table = torch.randn(11, 16)  # items 1..9, row 0 padding, row 10 = MASK
    table[0] = 0
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 1], [2, 9, 4], [5, 6, 7, 8], [9, 1, 2, 3, 4]]
    contexts, _ = item_contexts(sequences, window=3, mask_id=10)  # [N 7], runs of 2..7 items
    contexts = contexts[torch.randperm(len(contexts))]
    lengths = (contexts != 0).sum(1)
    assert lengths.min() == 2 and lengths.max() == 7 and len(contexts) > 8
    g.eval()
    with torch.no_grad():
        got = g.interpret(table, contexts)
        valid = contexts != 0
        x = F.embedding(contexts, table) * g.position_weight.unsqueeze(-1) + g.position_embedding.weight
        x = g.context_encoder(g.LayerNorm(x), _padding_mask(valid), output_all_encoded_layers=False)[-1]
        assert torch.allclose(got, _masked_mean(x, valid), atol=1e-5)
    # training mode: gradients reach a_p, P_p and MASK through the same path
    g.train()
    table = table.clone().requires_grad_(True)
    g.interpret(table, contexts).sum().backward()
    assert g.position_weight.grad.abs().min() > 0 and table.grad[10].abs().sum() > 0


def test_training_sequences_are_the_training_split(workdir, tiny_config):
    _, _, train_data, _ = build_model("SASRec", tiny_config())
    dataset = train_data.dataset
    sequences = training_sequences(dataset).split()
    # the atomic file, per user in time order, minus the valid and test items
    rows = [r.split("\t") for r in (FIXTURES / "tiny" / "tiny.inter").read_text().splitlines()[1:]]
    by_user = {}
    for user, item, stamp in sorted(rows, key=lambda r: (r[0], float(r[2]))):
        by_user.setdefault(user, []).append(item)
    expected = sorted(tuple(items[:-2]) for items in by_user.values())
    got = sorted(tuple(dataset.id2token(dataset.iid_field, s).tolist()) for s in sequences)
    assert got == expected
    counts = np.bincount(np.concatenate(sequences), minlength=dataset.item_num)
    assert np.array_equal(counts, head_tail_split(dataset).item_counts)  # the shared counting


def test_tail_embeddings_replaced_head_embeddings_and_backbone_untouched(workdir, tiny_config, caplog):
    base_path = _base(tiny_config)
    base = trusted_load(base_path)["state_dict"]
    with caplog.at_level(logging.INFO):
        config, model, train_data, _ = build_model("CITIES", tiny_config(base_model_path=base_path))
    split = head_tail_split(train_data.dataset)
    counts = split.item_counts
    assert set(model.infer_items.tolist()) | {0} == set(np.flatnonzero(counts <= 5).tolist())  # every fixture item has contexts
    assert set(model.popular_items.tolist()) == set(np.flatnonzero(counts > 5).tolist())
    # the log names how many items are re-embedded, by the shared split
    n_tail = int((split.tail_mask.numpy() & (counts <= 5))[1:].sum())  # from the split, not from infer_items
    n_infer = len(model.infer_items)
    assert 0 < n_tail < n_infer  # the fixture's threshold reaches past the tail set into the head
    assert (f"CITIES infers the embeddings of {n_infer} items (cities_threshold=5; {n_tail} tail, "
            f"{n_infer - n_tail} head in the shared split) and learns from {len(model.popular_items)} "
            f"popular items") in caplog.text
    inference = {k: v.clone() for k, v in model.inference.state_dict().items()}

    losses = train_losses(model, train_data, steps=40)
    assert all(np.isfinite(losses)) and np.mean(losses[-10:]) < np.mean(losses[:10])
    # the backbone is the base checkpoint, frozen; only the inference network trained
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())
    assert not any(p.requires_grad for name, p in model.named_parameters() if not name.startswith("inference."))
    assert any(not torch.equal(v, model.inference.state_dict()[k]) for k, v in inference.items())

    model.eval()
    table = model.inferred_item_embedding()
    base_table = base["item_embedding.weight"]
    replaced = torch.zeros(len(table), dtype=torch.bool)
    replaced[model.infer_items] = True
    assert (table[replaced] != base_table[replaced]).any(dim=1).all()  # every tail row is inferred
    assert torch.equal(table[~replaced], base_table[~replaced])  # head rows (and padding) are the base's

    # inference = the base SASRec with E' as its item embedding, for histories and scored items
    sasrec = get_model("SASRec")(config, train_data.dataset)
    sasrec.load_state_dict(base)
    sasrec.item_embedding.weight.data.copy_(table)
    sasrec.eval()
    batch = next(iter(train_data))
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert torch.allclose(scores, sasrec.full_sort_predict(batch), atol=1e-6)
        pos = batch[model.POS_ITEM_ID]
        assert torch.allclose(model.predict(batch), scores.gather(1, pos[:, None]).squeeze(1), atol=1e-6)
        sasrec.load_state_dict(base)
        assert not torch.allclose(scores, sasrec.full_sort_predict(batch))

    # E' follows the inference network (each evaluation, and the best checkpoint when reloaded)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    train_losses(model, train_data, steps=2)
    model.eval()
    assert not torch.equal(model.inferred_item_embedding(), table)
    model.load_state_dict(state)
    assert torch.equal(model.inferred_item_embedding(), table)

    # cities_threshold: ~ infers exactly the shared split's tail items (those with contexts)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _, shared, train_data, _ = build_model("CITIES", tiny_config(base_model_path=base_path, cities_threshold=None))
    split = head_tail_split(train_data.dataset)
    assert set(shared.infer_items.tolist()) == set(torch.nonzero(split.tail_mask).flatten().tolist())
    assert set(shared.popular_items.tolist()) == set(torch.nonzero(split.head_mask).flatten().tolist())
    n_tail, n_head = len(shared.infer_items), len(shared.popular_items)
    assert (f"CITIES infers the embeddings of {n_tail} items (the shared tail set; {n_tail} tail, 0 head "
            f"in the shared split) and learns from {n_head} popular items") in caplog.text


def test_missing_or_mismatched_base_checkpoint(workdir, tiny_config):
    with pytest.raises(UserInputError, match="CITIES needs base_model_path: a checkpoint of SASRec"):
        build_model("CITIES", tiny_config())
    with pytest.raises(UserInputError, match="base_model_path: checkpoint '.*nope.pth' does not exist"):
        build_model("CITIES", tiny_config(base_model_path=str(workdir / "nope.pth")))
    (workdir / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError, match="cannot read checkpoint"):
        build_model("CITIES", tiny_config(base_model_path=str(workdir / "junk.pth")))
    gru = _base(tiny_config, "GRU4Rec")
    with pytest.raises(UserInputError, match="base model '.*' is a GRU4Rec, .* backbone is SASRec"):
        build_model("CITIES", tiny_config(base_model_path=gru))
    wide = _base(tiny_config, hidden_size=32, inner_size=32)
    with pytest.raises(UserInputError, match="base model '.*' does not match the policy: .*hidden_size 32 != 16"):
        build_model("CITIES", tiny_config(base_model_path=wide))
    # trained on other items: the fixture without its last 10 items
    other = workdir / "other" / "tiny"
    other.mkdir(parents=True)
    rows = (FIXTURES / "tiny" / "tiny.inter").read_text().splitlines()
    (other / "tiny.inter").write_text("\n".join([rows[0]] + [r for r in rows[1:] if int(r.split("\t")[1][1:]) <= 50]))
    other_data = _base(tiny_config, data_path=str(workdir / "other"))
    with pytest.raises(UserInputError, match="base model '.*' does not match the policy: .*different item tokens"):
        build_model("CITIES", tiny_config(base_model_path=other_data))
    # its own keys are checked first
    with pytest.raises(UserInputError, match="cities_n_heads=3 must divide hidden_size=16"):
        build_model("CITIES", tiny_config(cities_n_heads=3))
    with pytest.raises(UserInputError, match="cities_window must be an integer >= 1, got 0"):
        build_model("CITIES", tiny_config(cities_window=0))


def test_two_step_recipe_from_the_cli(workdir):
    step1 = cli_on_fixture(workdir, "--model=SASRec")
    assert step1.returncode == 0, step1.stderr[-2000:]
    base = next(p for p in (workdir / "saved").iterdir() if p.suffix == ".pth")
    step2 = cli_on_fixture(workdir, "--model=CITIES", f"--base_model_path={base}")
    assert step2.returncode == 0, step2.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sorted((workdir / "results").iterdir())]
    cities = next(r for r in results if r["model"] == "CITIES")
    assert cities["epochs_trained"] == 1 and os.path.isfile(cities["checkpoint"])
    assert 0 <= cities["test_result"]["tailndcg@10"] <= 1
    assert cities["config"]["base_model_path"] == str(base)
