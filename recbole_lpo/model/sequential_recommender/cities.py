r"""CITIES (Jang et al., "CITIES: Contextual Inference of Tail-item Embeddings for
Sequential Recommendation", ICDM 2020) on a trained SASRec.

A second stage on top of a trained backbone, in two steps:

    python run_recbole_lpo.py --model=SASRec --dataset=amazon-beauty      # writes saved/SASRec-<run id>.pth
    python run_recbole_lpo.py --model=CITIES --dataset=amazon-beauty --base_model_path=saved/SASRec-<run id>.pth

Step 2 loads the checkpoint named by ``base_model_path`` (checked as DPO's
reference is: same backbone class, data set, item tokens and architecture;
one ``UserInputError`` otherwise, before any training) and FREEZES it: the
item embeddings ``e_i``, the sequence-modelling and the recommendation layers
never change. What trains is an embedding-inference function ``g``; at
inference the frozen SASRec runs with the embeddings of items with few
interactions replaced by ``g``'s.

Notation. ``s^u`` is user u's training sequence (everything but the valid and
test items, however long: ``recbole_lpo.data.sequences``), ``count(i)`` the
training-split count of the shared head/tail split
(``recbole_lpo.data.head_tail``), ``T = {i: count(i) <= cities_threshold}``
the items whose embeddings are inferred and ``H`` the others (popular items);
``cities_threshold: ~`` takes ``T``/``H`` from the shared tail/head split
instead. The evaluation's tail metrics always use the shared split. A context
of item ``i = s^u_t`` is its window with ``i`` itself masked,

    c = (s_{t-w}, ..., s_{t-1}, [MASK], s_{t+1}, ..., s_{t+w}),   w = cities_window,

padded where the sequence ends; ``C(i)`` holds every such context (occurrences
with at least one neighbour).

Embedding-inference function (context interpreter, then context aggregator):

    x_p  = a_p * E[c_p] + P_p                           E = frozen base embeddings, E[MASK] learned,
                                                        a_p learned position weights, P learned positions
    h(c) = mean_{p: c_p != pad} Enc_ctx(LN(x))_p        self-attention within one context
    g(c_1..c_k) = W (mean_j Enc_agg(h(c_1), .., h(c_k))_j) + b   self-attention across the k contexts

Loss (``calculate_loss``): reconstruct the base embeddings of popular items
from k of their contexts (k-shot, k drawn per step),

    L = 1/(B d) sum_b || g(c_{b,1}, .., c_{b,k}) - e_{i_b} ||^2,
        i_b ~ U(H), k ~ U{1..K}, c_{b,j} ~ U(C(i_b)),    K = cities_max_shot

Inference (``predict``, ``full_sort_predict``): ``E'_i = g(C(i))`` (at most K
contexts, the first in data order) for ``i`` in ``T`` with contexts,
``E'_i = e_i`` otherwise; the frozen SASRec uses ``E'`` for the input
sequence and for the scored items: ``score(u, i) = SASRec_{E'}(s^u) . E'_i``.
Evaluation, and so the best checkpoint by valid NDCG@10, sees ``E'`` from the
current ``g``; ``E'`` is computed once per evaluation (cached in eval mode).

Deviations from the paper and the authors' code (github swonj90/CITIES):

- Backbone: RecBole's SASRec. It has no [MASK] token (the authors' code
  reuses BERT4Rec's): ``E[MASK]`` is a learned vector of the network ``g``.
- ``g`` is built from RecBole's ``TransformerEncoder`` with SASRec's input
  LayerNorm and learned position embeddings, instead of fixed sinusoidal
  encodings; the learned per-position weights ``a_p`` are kept.
- Model selection is the project's protocol: every epoch is validated with
  ``E'`` and the best valid NDCG@10 is kept. The authors hold out 5 % of the
  popular items and stop on their reconstruction MSE; here every popular item
  trains ``g``.
- RecBole's optimiser at ``learning_rate``; no warm-up or linear decay.
- Steps: each training batch of B interactions is one step on B popular items
  drawn uniformly with replacement (the authors' sampling); the batch's
  content is not used, only its size, so an epoch has SASRec's step count.
- Contexts come from the training split only; a context needs one neighbour
  (the authors' code needs two); inference uses at most K contexts (the
  authors' code uses all). Items in ``T`` without any context keep ``e_i``,
  as in the authors' code.
- Loading a CITIES checkpoint (``load_data_and_model``, ``--resume``) builds
  the model again, so ``base_model_path`` must still exist then.
"""


from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender import SASRec
from torch import nn

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.data.sequences import training_sequences
from recbole_lpo.errors import UserInputError
from recbole_lpo.model.backbone import forward_with_item_table
from recbole_lpo.objective import load_reference

_INFERENCE_CHUNK = 1024  # items whose embeddings are inferred in one forward
_GROUPS = 8  # context-length groups per forward of the context interpreter


def item_contexts(sequences, window, mask_id):
    """Every context of every item occurrence with at least one neighbour.

    Returns ``contexts`` [N 2w+1] (the occurrence masked with ``mask_id``,
    0-padded at sequence ends) and ``centers`` [N] (the masked item), sorted by
    item (stable, so in data order within an item).
    """
    width = 2 * window + 1
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    if not sequences:
        return torch.zeros(0, width, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    pad = np.zeros(window, dtype=np.int64)
    parts, positions, offset = [pad], [], window
    for seq in sequences:  # w pads between sequences: no window crosses into another
        parts += [seq, pad]
        positions.append(np.arange(offset, offset + len(seq)))
        offset += len(seq) + window
    flat, positions = np.concatenate(parts), np.concatenate(positions)
    contexts = flat[positions[:, None] + np.arange(-window, window + 1)[None, :]]  # [N 2w+1]
    centers = contexts[:, window].copy()
    contexts[:, window] = mask_id
    order = np.argsort(centers, kind="stable")
    return torch.from_numpy(contexts[order]), torch.from_numpy(centers[order])


def _padding_mask(valid):
    """Additive attention mask [N 1 1 L] from a bool [N L] (RecBole's convention)."""
    return torch.where(valid[:, None, None, :], 0.0, -10000.0)


def _masked_mean(x, valid):
    """Mean of x [N L H] over the positions where valid [N L] holds."""
    weights = valid.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class ContextInference(nn.Module):
    """``g``: an item's embedding from k of its contexts (context interpreter + aggregator)."""

    def __init__(self, hidden_size, context_length, n_layers, n_heads, inner_size, hidden_dropout_prob,
                 attn_dropout_prob, hidden_act, layer_norm_eps):
        super().__init__()
        encoder = dict(n_layers=n_layers, n_heads=n_heads, hidden_size=hidden_size, inner_size=inner_size,
                       hidden_dropout_prob=hidden_dropout_prob, attn_dropout_prob=attn_dropout_prob,
                       hidden_act=hidden_act, layer_norm_eps=layer_norm_eps)
        self.mask_embedding = nn.Embedding(1, hidden_size)  # E[MASK]
        self.position_weight = nn.Parameter(torch.ones(context_length))  # a_p
        self.position_embedding = nn.Embedding(context_length, hidden_size)  # P_p
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.context_encoder = TransformerEncoder(**encoder)
        self.context_aggregator = TransformerEncoder(**encoder)
        self.out = nn.Linear(hidden_size, hidden_size)

    def interpret(self, table, tokens):
        """h(c) [N H] of the contexts ``tokens`` [N C] (``table`` [n_items+1 H], row n_items = MASK).

        A context's items (its MASK included) form one contiguous run, padding only where the
        sequence ends, and Beauty-like data have short sequences: most of a window is padding.
        Only the runs are encoded: rows sorted by run length, in ``_GROUPS`` groups, each cut to
        its longest run, positions keeping their window index p (for a_p and P_p). Same values
        as encoding the whole window: padded positions are masked keys (softmax weight
        exp(-10000) = 0 in float32) and are left out of the mean.
        """
        valid = tokens != 0  # [N C]
        lengths = valid.sum(1)  # [N]
        starts = valid.to(torch.uint8).argmax(1)  # [N] first position of each run
        order = torch.argsort(lengths, stable=True)
        parts = []
        for rows in order.tensor_split(min(_GROUPS, len(order))):
            offsets = torch.arange(int(lengths[rows].max().clamp(min=1)), device=tokens.device)  # [l]
            in_run = offsets < lengths[rows].unsqueeze(1)  # [n l]
            positions = (starts[rows].unsqueeze(1) + offsets).clamp(max=tokens.size(1) - 1)  # [n l]
            run = torch.where(in_run, tokens[rows].gather(1, positions), 0)  # [n l]
            x = F.embedding(run, table) * self.position_weight[positions].unsqueeze(-1) \
                + self.position_embedding(positions)
            x = self.dropout(self.LayerNorm(x))  # [n l H]
            x = self.context_encoder(x, _padding_mask(in_run), output_all_encoded_layers=False)[-1]
            parts.append(_masked_mean(x, in_run))  # [n H]
        return torch.cat(parts)[torch.argsort(order)]  # back to the rows' order

    def forward(self, item_embeddings, contexts, shots=None):
        """``item_embeddings`` [n_items H] (id n_items = MASK), ``contexts`` [B K C],
        ``shots`` [B K] bool (which of the K contexts are real; all if None) -> [B H]."""
        batch, k, length = contexts.shape
        table = torch.cat([item_embeddings, self.mask_embedding.weight], dim=0)  # [n_items+1 H]
        per_context = self.interpret(table, contexts.reshape(batch * k, length)).view(batch, k, -1)  # [B K H]
        if shots is None:
            shots = torch.ones(batch, k, dtype=torch.bool, device=contexts.device)
        x = self.context_aggregator(per_context, _padding_mask(shots), output_all_encoded_layers=False)[-1]
        return self.out(_masked_mean(x, shots))  # [B H]


def load_base_model(config, dataset, model):
    """Load ``base_model_path`` into ``model`` with the DPO reference checks
    (``recbole_lpo.objective.load_reference``); one clear error otherwise."""
    load_reference(config, dataset, model, key="base_model_path", role="base model")  # its frozen copy is unused


def _check_int(config, key, minimum, allow_none=False):
    value = config[key]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{key} must be an integer >= {minimum}{' or ~' if allow_none else ''}, got {value!r}")
    return value


def _check_probability(config, key):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UserInputError(f"{key} must be a number in [0, 1), got {value!r}")
    return value


class CITIES(SASRec):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info (all checked before the base checkpoint is read)
        self.threshold = _check_int(config, "cities_threshold", 0, allow_none=True)
        self.window = _check_int(config, "cities_window", 1)
        self.max_shot = _check_int(config, "cities_max_shot", 1)
        n_layers = _check_int(config, "cities_n_layers", 1)
        n_heads = _check_int(config, "cities_n_heads", 1)
        inner_size = _check_int(config, "cities_inner_size", 1)
        hidden_dropout_prob = _check_probability(config, "cities_hidden_dropout_prob")
        attn_dropout_prob = _check_probability(config, "cities_attn_dropout_prob")
        if self.hidden_size % n_heads:
            raise UserInputError(f"cities_n_heads={n_heads} must divide hidden_size={self.hidden_size}")

        # the trained backbone, frozen
        self._inferred = None  # E' while in eval mode
        load_base_model(config, dataset, self)
        self.requires_grad_(False)

        # define layers: the embedding-inference function g
        self.inference = ContextInference(
            self.hidden_size, 2 * self.window + 1, n_layers, n_heads, inner_size, hidden_dropout_prob,
            attn_dropout_prob, self.hidden_act, self.layer_norm_eps)
        self.inference.apply(self._init_weights)  # a_p stay at 1

        self._build_contexts(config, dataset)

    def _build_contexts(self, config, dataset):
        """Contexts of every item, the popular items H and the items T to infer (buffers
        rebuilt from the data, never saved)."""
        contexts, centers = item_contexts(training_sequences(dataset).split(), self.window, mask_id=self.n_items)
        n_contexts = np.bincount(centers.numpy(), minlength=self.n_items)[: self.n_items]
        n_contexts[0] = 0
        split = head_tail_split(dataset, config["tail_ratio"])
        if self.threshold is None:
            infer, popular = split.tail_mask.numpy(), split.head_mask.numpy()
        else:
            infer = split.item_counts <= self.threshold
            popular = ~infer
        infer, popular = infer & (n_contexts > 0), popular & (n_contexts > 0)
        infer[0] = popular[0] = False
        if not popular.any():
            raise UserInputError(
                f"CITIES has no popular item to learn from: no item with contexts has more than "
                f"cities_threshold={self.threshold} training interactions")
        ptr = np.concatenate([[0], np.cumsum(n_contexts)])
        infer_items = np.flatnonzero(infer)
        n_infer_tail = int(split.tail_mask.numpy()[infer_items].sum())
        rule = "the shared tail set" if self.threshold is None else f"cities_threshold={self.threshold}"
        getLogger().info(
            f"CITIES infers the embeddings of {len(infer_items)} items ({rule}; {n_infer_tail} tail, "
            f"{len(infer_items) - n_infer_tail} head in the shared split) and learns from "
            f"{int(popular.sum())} popular items")
        shot = np.arange(self.max_shot)[None, :]
        infer_index = np.where(shot < n_contexts[infer_items, None], ptr[infer_items, None] + shot, -1)
        self.register_buffer("contexts", contexts, persistent=False)  # [N 2w+1]
        self.register_buffer("context_ptr", torch.from_numpy(ptr), persistent=False)  # [n_items+1]
        self.register_buffer("popular_items", torch.from_numpy(np.flatnonzero(popular)), persistent=False)
        self.register_buffer("infer_items", torch.from_numpy(infer_items), persistent=False)  # [n_T]
        self.register_buffer("infer_context_index", torch.from_numpy(infer_index), persistent=False)  # [n_T K]

    # --- E' is derived from g: recompute it whenever g may have changed ----
    def train(self, mode=True):
        self._inferred = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._inferred = None
        return super().load_state_dict(*args, **kwargs)

    # --- training: reconstruct popular items' base embeddings -------------
    def calculate_loss(self, interaction):
        batch = interaction[self.POS_ITEM_ID].shape[0]
        device = self.popular_items.device
        items = self.popular_items[torch.randint(len(self.popular_items), (batch,), device=device)]  # [B]
        k = int(torch.randint(1, self.max_shot + 1, (1,)))
        start = self.context_ptr[items].unsqueeze(1)  # [B 1]
        count = self.context_ptr[items + 1].unsqueeze(1) - start  # [B 1]
        pick = start + (torch.rand(batch, k, device=device) * count).long().clamp(max=count - 1)  # [B k]
        base = self.item_embedding.weight  # frozen
        inferred = self.inference(base, self.contexts[pick])  # [B H]
        return F.mse_loss(inferred, base[items])

    # --- inference: the frozen backbone with E' ----------------------------
    @torch.no_grad()
    def inferred_item_embedding(self):
        """E' [n_items H]: the base embeddings with the rows of T replaced by g's inference."""
        if self._inferred is not None:
            return self._inferred
        base = self.item_embedding.weight
        table = base.detach().clone()
        was_training = self.inference.training
        self.inference.eval()
        for chunk in torch.split(torch.arange(len(self.infer_items), device=base.device), _INFERENCE_CHUNK):
            index = self.infer_context_index[chunk]  # [b K]
            shots = index >= 0
            table[self.infer_items[chunk]] = self.inference(base, self.contexts[index.clamp(min=0)], shots)
        self.inference.train(was_training)
        if not self.training:
            self._inferred = table
        return table

    def _sequence_output(self, interaction, table):
        """SASRec's forward with ``table`` as its item embedding [B H]."""
        return forward_with_item_table(self, table, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def predict(self, interaction):
        table = self.inferred_item_embedding()
        seq_output = self._sequence_output(interaction, table)  # [B H]
        return (seq_output * table[interaction[self.ITEM_ID]]).sum(-1)  # [B]

    def full_sort_predict(self, interaction):
        table = self.inferred_item_embedding()
        seq_output = self._sequence_output(interaction, table)  # [B H]
        return seq_output @ table.t()  # [B n_items]
