"""MELT: its head/tail rules, both branches in training, the item and user branch at inference."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.model.backbone import forward_with_item_table
from recbole_lpo.model.sequential_recommender.melt import recent_items

from recbole_lpo.checkpoint import trusted_load
from recbole_lpo.quick_start import run_recbole_lpo

from conftest import TINY_YAML, build_model, cli_on_fixture, train_losses


def _setup(tiny_config, **overrides):
    config, model, train_data, valid_data = build_model("MELT", tiny_config(**overrides))
    return config, model, train_data, valid_data


def _eval_batch(valid_data):
    interaction = next(iter(valid_data))[0]  # full-sort loader: (interaction, history, pos_u, pos_i)
    assert len(interaction) == 120  # every user in one batch
    return interaction


def test_contexts_and_head_tail_rules(workdir, tiny_config):
    _, model, train_data, _ = _setup(tiny_config)
    dataset = train_data.dataset
    counts = torch.as_tensor(head_tail_split(dataset).item_counts)
    # C_i: one context per training occurrence of i, each ending at i
    assert torch.equal(model.context_offset.diff(), counts)
    owners = torch.repeat_interleave(torch.arange(model.n_items), model.context_offset.diff())
    last = model.context_seq.gather(1, (model.context_len - 1).unsqueeze(1)).squeeze(1)
    assert torch.equal(last, owners)
    # items: the top 20 % by training count are MELT-head (12 of 60), T_i = largest tail count
    tail = model.tail_item_mask
    assert int((~tail[1:]).sum()) == 12 and not tail[0]
    assert counts[1:][~tail[1:]].min() >= counts[tail].max() == model.item_threshold
    # users: Pareto rule on training lengths (tiny: 21 users with 10 training items, T_u = 9)
    assert model.user_threshold == 9.0
    assert int((~model.user_is_tail[1:]).sum()) == 21 == len(model.head_user_seq)
    assert (model.head_user_len == 10).all()
    # a head user's sequence is their last training items: the history of their last row plus its target
    users = dataset.inter_feat[model.USER_ID]
    head_user = int((~model.user_is_tail[1:]).nonzero()[0]) + 1
    row = int((users == head_user).nonzero().max())
    length = int(dataset.inter_feat[model.ITEM_SEQ_LEN][row])
    history = dataset.inter_feat[model.ITEM_SEQ][row][:length]
    expected = torch.cat([history, dataset.inter_feat[model.ITEM_ID][row:row + 1]])[-10:]
    assert len(expected) == 10
    assert any(torch.equal(expected, seq) for seq in model.head_user_seq)


def test_item_rule_key_leaves_the_metric_split_alone(workdir, tiny_config):
    splits = {}
    for ratio in (0.2, 0.5):
        _, model, train_data, _ = _setup(tiny_config, melt_item_head_ratio=ratio, melt_user_head_ratio=0.3)
        splits[ratio] = (int((~model.tail_item_mask[1:]).sum()), head_tail_split(train_data.dataset),
                         model.user_threshold)
    assert splits[0.2][0] == 12 and splits[0.5][0] == 30  # MELT's own rule follows its key
    metric_02, metric_05 = splits[0.2][1], splits[0.5][1]
    assert metric_02.n_tail == metric_05.n_tail == 12  # tail_ratio 0.2, as for every model
    assert metric_02.tail_hash == metric_05.tail_hash
    assert splits[0.2][2] == 8.0  # melt_user_head_ratio 0.3: the 0.7 quantile of training lengths


@pytest.mark.parametrize("key,value", [("melt_item_head_ratio", 1.5), ("melt_user_head_ratio", 0.0),
                                       ("melt_lambda_u", -0.1), ("melt_curriculum_epochs", 0),
                                       ("melt_estimate_input", "mean"), ("melt_branch_init", "zeros")])
def test_invalid_keys(key, value, workdir, tiny_config):
    with pytest.raises(UserInputError, match=key):
        _setup(tiny_config, **{key: value})


def test_without_branches_melt_trains_as_sasrec(workdir, tiny_config):
    _, sasrec, data, _ = build_model("SASRec", tiny_config())
    expected = train_losses(sasrec, data, steps=4)
    _, melt, data, _ = _setup(tiny_config, melt_lambda_u=0.0, melt_lambda_i=0.0)
    assert train_losses(melt, data, steps=4) == pytest.approx(expected, abs=1e-6)


def _branch_grads(tiny_config, **overrides):
    # melt_user_head_ratio 0.3: T_u = 8, so head users of length 10 have w_u = 1 at epoch 0
    _, model, data, _ = _setup(tiny_config, melt_user_head_ratio=0.3, **overrides)
    model.train()
    loss = model.calculate_loss(next(iter(data)))
    loss.backward()
    norm = lambda p: 0.0 if p.grad is None else p.grad.abs().sum().item()  # noqa: E731
    return model, norm(model.user_branch.weight), norm(model.item_branch.weight)


def test_both_branches_receive_gradients(workdir, tiny_config):
    model, user_grad, item_grad = _branch_grads(tiny_config)
    assert user_grad > 0 and item_grad > 0
    assert int(model.melt_epoch) == 0
    # L_u alone reaches T_U (not T_I); L_i reaches T_I and, through r~+ = T_U(r~) + beta r~, T_U
    _, user_grad, item_grad = _branch_grads(tiny_config, melt_lambda_i=0.0)
    assert user_grad > 0 and item_grad == 0
    _, user_grad, item_grad = _branch_grads(tiny_config, melt_lambda_u=0.0)
    assert user_grad > 0 and item_grad > 0


def test_curriculum_weights(workdir, tiny_config):
    _, model, _, _ = _setup(tiny_config, melt_user_head_ratio=0.3, melt_curriculum_epochs=4)
    model.train()
    model.train()  # the trainer's second epoch: e = 1 of e_max = 4
    assert int(model.melt_epoch) == 1
    # w_u = |sin(pi/2 * e/E + pi/2 * (|S_u| - T_u - 1) / (L - T_u - 1))|, T_u = 8, L = 10
    weights = model.user_weights(torch.tensor([9, 10]))
    assert weights.tolist() == pytest.approx([math.sin(math.pi / 8), math.cos(math.pi / 8)])
    # w_i = |sin(pi/2 * e/E + pi/100 * (min(n_i, T_i + 50) - T_i - 1))|
    items = model.head_items
    counts = model.item_count[items].clamp(max=model.item_threshold + 50).double()
    expected = torch.abs(torch.sin(math.pi / 8 + math.pi / 100 * (counts - model.item_threshold - 1)))
    assert torch.allclose(model.item_weights(items).double(), expected, atol=1e-6)


@pytest.mark.parametrize("estimate_input", ["enhanced", "plain"])
def test_inference_tail_items_come_from_the_item_branch(estimate_input, workdir, tiny_config):
    _, model, data, valid_data = _setup(tiny_config, melt_estimate_input=estimate_input)
    train_losses(model, data, steps=4)
    model.eval()
    table = model.item_table()
    raw = model.item_embedding.weight.detach()
    head = ~model.tail_item_mask
    assert torch.equal(table[head], raw[head])  # head items (and padding) keep q_i
    estimated = model.estimated_items
    assert len(estimated) == int(model.tail_item_mask.sum())  # every tail item has contexts here
    assert ((table[estimated] - raw[estimated]).abs().sum(1) > 1e-3).all()
    # by hand, Eq. 10 with gamma 0: T_I(x_i), r_i = mean of f over all of C_i, x_i = T_U(r_i) + beta r_i
    # (the input T_I is trained on, Eq. 12) or r_i (Alg. 1 line 8)
    item = int(estimated[0])
    lo, hi = int(model.context_offset[item]), int(model.context_offset[item + 1])
    with torch.no_grad():
        r_i = model.forward(model.context_seq[lo:hi], model.context_len[lo:hi]).mean(0)
        enhanced = model.user_branch(r_i) + model.beta * r_i
        x_i = enhanced if estimate_input == "enhanced" else r_i
        assert torch.allclose(table[item], model.item_branch(x_i), atol=1e-5)
        other = r_i if estimate_input == "enhanced" else enhanced
        assert not torch.allclose(table[item], model.item_branch(other), atol=1e-3)
        # the scores use this table, for the history and the candidates alike
        interaction = _eval_batch(valid_data)
        scores = model.full_sort_predict(interaction)
        reps = model.user_representation(interaction, table)
        assert torch.allclose(scores, reps @ table.T, atol=1e-5)
        # changing T_I moves tail items only
        model.item_branch.bias.add_(0.1)
        model.eval()  # drops the cached table
        moved = model.item_table()
    assert torch.equal(moved[head], raw[head]) and not torch.allclose(moved[estimated], table[estimated])


def test_inference_tail_users_go_through_the_user_branch(workdir, tiny_config):
    _, model, data, valid_data = _setup(tiny_config)
    train_losses(model, data, steps=4)
    model.eval()
    interaction = _eval_batch(valid_data)
    tail = model.user_is_tail[interaction[model.USER_ID]]
    assert tail.any() and (~tail).any()
    with torch.no_grad():
        table = model.item_table()
        before = model.full_sort_predict(interaction)
        p = forward_with_item_table(model, table, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        by_hand = torch.where(tail.unsqueeze(1), model.user_branch(p) + model.beta * p, p) @ table.T  # Eq. 4
        assert torch.allclose(before, by_hand, atol=1e-5)
        model.user_branch.weight.add_(0.05)
        after = model.full_sort_predict(interaction)
    assert torch.equal(after[~tail], before[~tail])
    assert not torch.allclose(after[tail], before[tail])


def test_branch_init(workdir, tiny_config):
    # default: N(0, initializer_range) as SASRec's own layers; xavier: the authors' Xavier-normal
    _, model, _, _ = _setup(tiny_config)
    _, xavier, _, _ = _setup(tiny_config, melt_branch_init="xavier")
    hidden = model.hidden_size  # 16: Xavier-normal std = sqrt(2 / (16 + 16)) = 0.25
    for name in ("user_branch", "item_branch"):
        default, authors = getattr(model, name), getattr(xavier, name)
        assert abs(default.weight.std().item() - model.initializer_range) < 0.005
        assert abs(authors.weight.std().item() - (2 / (2 * hidden)) ** 0.5) < 0.03
        assert not default.bias.any() and not authors.bias.any()
    # the backbone (and its random stream) does not depend on the branches' init
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith(("user_", "item_branch"))}
    assert all(torch.equal(v, xavier.state_dict()[k]) for k, v in backbone.items())


def _sasrec_checkpoint(tiny_config, model="SASRec", **overrides):
    """Train ``model`` for one epoch on the fixture; return its checkpoint."""
    result = run_recbole_lpo(model, "tiny", [TINY_YAML], tiny_config(**overrides), saved=True)
    with open(result["result_file"], encoding="utf-8") as f:
        return json.load(f)["checkpoint"]


def test_pretrained_backbone(workdir, tiny_config):
    path = _sasrec_checkpoint(tiny_config)
    trained = trusted_load(path)["state_dict"]
    _, scratch, _, _ = _setup(tiny_config)
    _, model, data, _ = _setup(tiny_config, pretrained_model_path=path)
    state = model.state_dict()
    # every backbone tensor is the checkpoint's; the branches start as without a checkpoint
    assert set(trained) < set(state)
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    assert not torch.equal(state["item_embedding.weight"], scratch.state_dict()["item_embedding.weight"])
    for k, v in scratch.state_dict().items():
        if k not in trained:
            assert torch.equal(state[k], v), k  # user_branch.*, item_branch.*, melt_epoch
    # without the branches it then trains exactly as the checkpoint's SASRec (same random stream)
    _, sasrec, sasrec_data, _ = build_model("SASRec", tiny_config())
    sasrec.load_state_dict(trained)
    expected = train_losses(sasrec, sasrec_data, steps=4)
    _, melt, data, _ = _setup(tiny_config, pretrained_model_path=path, melt_lambda_u=0.0, melt_lambda_i=0.0)
    assert train_losses(melt, data, steps=4) == pytest.approx(expected, abs=1e-6)


def test_pretrained_backbone_is_checked(workdir, tiny_config):
    with pytest.raises(UserInputError, match="pretrained_model_path: checkpoint '.*nope.pth' does not exist"):
        _setup(tiny_config, pretrained_model_path=str(workdir / "nope.pth"))
    gru = _sasrec_checkpoint(tiny_config, "GRU4Rec")
    with pytest.raises(UserInputError, match="pretrained model '.*' is a GRU4Rec, .* backbone is SASRec"):
        _setup(tiny_config, pretrained_model_path=gru)
    wide = _sasrec_checkpoint(tiny_config, hidden_size=32, inner_size=32)
    with pytest.raises(UserInputError, match="pretrained model '.*' does not match the policy: .*hidden_size 32 != 16"):
        _setup(tiny_config, pretrained_model_path=wide)


def test_cli_end_to_end(workdir):
    out = cli_on_fixture(workdir, "--model=MELT")
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(os.listdir(workdir / "results")) == 1
    checkpoints = [f for f in os.listdir(workdir / "saved") if f.endswith(".pth")]
    assert len(checkpoints) == 1
    state = torch.load(workdir / "saved" / checkpoints[0], weights_only=False)["state_dict"]
    assert {"user_branch.weight", "item_branch.weight", "melt_epoch"} <= set(state)
    assert "context_seq" not in state  # data-derived buffers are rebuilt, not saved


def _old_forward(model, item_seq, item_seq_len, item_table):
    """MELT's own forward before forward_with_item_table (copied): F.embedding without padding_idx."""
    position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
    position_embedding = model.position_embedding(position_ids.unsqueeze(0).expand_as(item_seq))
    item_emb = F.embedding(item_seq, item_table)
    input_emb = model.dropout(model.LayerNorm(item_emb + position_embedding))
    extended_attention_mask = model.get_attention_mask(item_seq)
    output = model.trm_encoder(input_emb, extended_attention_mask, output_all_encoded_layers=True)[-1]
    return model.gather_indexes(output, item_seq_len - 1)  # [B H]


def test_encoder_on_other_tables_is_the_old_formula(workdir, tiny_config):
    """SASRec's lookup (padding_idx=0) in place of MELT's F.embedding: same scores, same training."""
    _, model, data, valid_data = _setup(tiny_config, melt_user_head_ratio=0.3)
    train_losses(model, data, steps=4)
    model.eval()
    interaction = _eval_batch(valid_data)
    seq, seq_len = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        table = model.item_table()
        old = _old_forward(model, seq, seq_len, table)
        assert torch.equal(forward_with_item_table(model, table, seq, seq_len), old)
        tail = model.user_is_tail[interaction[model.USER_ID]].unsqueeze(1)
        old_scores = torch.where(tail, model.user_branch(old) + model.beta * old, old) @ table.T
        assert torch.equal(model.full_sort_predict(interaction), old_scores)
    # training (dropout on): the user branch's inputs, with most positions padding, give the same
    # outputs and gradients; the padding row gets none either way
    model.train()
    estimates = model._tail_estimates()
    seq, seq_len = model.head_user_seq, model.head_user_len
    keep = torch.ones_like(seq_len)
    grads = []
    for encode in (_old_forward, lambda m, s, n, t: forward_with_item_table(m, t, s, n)):
        torch.manual_seed(0)
        table = model._with_estimates(estimates)
        out = torch.cat([encode(model, seq, seq_len, table),
                         encode(model, recent_items(seq, seq_len, keep), keep, table)])  # p_u, r_u
        grads.append((out, torch.autograd.grad((out ** 2).sum(), model.item_embedding.weight)[0]))
    (old_out, old_grad), (new_out, new_grad) = grads
    assert torch.equal(new_out, old_out)
    assert torch.allclose(new_grad, old_grad, rtol=0, atol=1e-7) and new_grad.abs().sum() > 0
    assert not old_grad[0].any() and not new_grad[0].any()
