r"""MELT (Kim et al., "MELT: Mutual Enhancement of Long-Tailed User and Item for
Sequential Recommendation", SIGIR 2023) on RecBole's SASRec.

Notation: ``f(S)`` is SASRec's representation [H] of a sequence S (its last
position), ``q_i`` item i's embedding, ``T_U`` the user branch and ``T_I`` the
item branch (one linear layer H -> H each, as in the authors' code; initialisation:
deviation 11).

Head and tail, MELT's own rules (they shape training and inference only; the
metric split, ``tail_ratio``, never changes):

- users: ``T_u`` = the ``1 - melt_user_head_ratio`` quantile of the users'
  training-split sequence lengths; head users have more than ``T_u``
  interactions (Pareto rule, as the authors' code).
- items: the ``melt_item_head_ratio`` most popular items by training-split
  count (ties by item token, ``recbole_lpo.data.head_tail``'s counts and
  sort) are head, the rest tail; ``T_i`` = the largest count of a tail item.
- ``C_i``: item i's contexts, one per training occurrence: the user's
  history up to and including i (its last ``MAX_ITEM_LIST_LENGTH`` items;
  training sequences from ``recbole_lpo.data.sequences``).

User branch (Eq. 2, Alg. 1 lines 4-16), over head users u with S_u their
training sequence:

    p_u = f(S_u),   r_u = f(last R items of S_u),   R ~ U{1..min(T_u, |S_u|-1)}
    L_u = mean_u  w_u * mean_d (p_u - T_U(r_u))^2

where tail items in S_u use their item-branch embedding (Eq. 10, computed at
the start of the epoch, without gradient) -- the item branch enhancing the
user branch.

Item branch (Eq. 12, Alg. 1 lines 18-29), over head items i:

    r~ = f(S~) for K contexts S~ drawn from C_i, K ~ U{1..min(|C_i|, T_i)}
    r~+ = T_U(r~) + beta * r~                      (user branch enhancing the item branch)
    L_i = mean_i  w_i * mean_d (q_i - T_I(mean r~+))^2

    L = L_rec + melt_lambda_u * L_u + melt_lambda_i * L_i          (Alg. 1 line 31)

with L_rec SASRec's own loss (RecBole's CE over all items). Curriculum
learning weights, in the authors' code's form, e the epoch, E = e_max:

    w_u = |sin(pi/2 * e/E + pi/2 * (|S_u| - T_u - 1) / (L - T_u - 1))|,  L = MAX_ITEM_LIST_LENGTH
    w_i = |sin(pi/2 * e/E + pi/(2 s) * (min(n_i, T_i + s) - T_i - 1))|, n_i = count(i), s = melt_item_span

Inference (Alg. 2): tail items' embeddings come from the item branch,

    q_i <- T_I(x_i) + gamma * q_i,   r_i = mean over ALL of C_i of f(S~)       (Eq. 10)
    x_i = r_i                        (melt_estimate_input: plain, the default: Alg. 1 line 8, authors' code)
    x_i = T_U(r_i) + beta * r_i      (melt_estimate_input: enhanced, an option: see deviation 5)

in the encoded history and in the scored items alike (head items, and tail
items without any context, keep q_i); tail users are scored with

    p^_u = T_U(p_u) + beta * p_u                                            (Eq. 4)

and head users with p_u. A user's status is their training-split length
(looked up by user id), so it is the same in validation and test. With
``melt_gamma: 0`` (the authors') the estimates REPLACE q_i for every tail
item (80 % of the items), so the quality of T_I decides the metrics.

Two-step recipe (the paper's): train SASRec, then start MELT from it,

    python run_recbole_lpo.py --model=SASRec --dataset=amazon-beauty      # writes saved/SASRec-<run id>.pth
    python run_recbole_lpo.py --model=MELT --dataset=amazon-beauty --pretrained_model_path=saved/SASRec-<run id>.pth

Deviations (from the paper and the authors' code, github rlqja1107/MELT):

1. Pre-trained encoder: optional. ``pretrained_model_path`` (a trained
   SASRec checkpoint, checked as DPO's reference is: same backbone class,
   data set, item tokens and architecture) starts the backbone from it, as
   the paper does (the branches start fresh). Without it (the default, as it
   needs a first run) the backbone and both branches train jointly from
   scratch. Loading a MELT checkpoint trained from one builds the model
   again, so that file must still exist then.
2. L_rec is RecBole's CE over all items (the project's backbone loss), not
   the authors' BCE with one sampled negative.
3. The authors overwrite the tail rows of the embedding table in place at
   every epoch start (so L_rec then fine-tunes the estimates, and the rows
   evaluated are estimates plus an epoch of L_rec). Here the table stays a
   plain parameter: L_rec trains all rows, the item-branch estimates
   replace tail rows in the user branch (Alg. 1 lines 5-10) and at inference
   (Alg. 2), recomputed from the current weights, never fine-tuned.
4. ``C_i`` holds the histories ending at i only; the authors also add each
   occurrence's reversed future (i followed backwards by the later items).
5. T_I is trained on r~+ = T_U(r~) + beta r~ (Eq. 12) but Alg. 1 line 8 and
   the authors' code feed it the plain mean r_i when they estimate tail
   items (the default here, ``melt_estimate_input: plain``). The option
   ``enhanced`` feeds it T_U(r_i) + beta r_i (the mean of r~+ over all of
   C_i, as T_U is linear). With a Xavier-initialised T_U (deviation 11) the
   plain input is far from anything T_I saw (Beauty, 10 epochs from
   scratch, one checkpoint: T_I's error on head items 0.026 per dimension
   on plain inputs, 0.0056 on enhanced ones, 0.0092 for predicting 0); with
   the default initialisation T_U(r) stays small next to beta r and the two
   agree (3 epochs from a trained SASRec: 0.0048 plain, 0.0062 enhanced).
   ``enhanced`` then trades overall accuracy for tail hits (same
   checkpoint, valid split: NDCG@10 0.0494 plain, 0.0386 enhanced; tail
   HR@10 0.0157 against 0.0251). Alg. 1 line 24's "+ beta p_u" is read as
   "+ beta r~", as in the code.
6. Squared errors are averaged over dimensions (the authors' MSE scale, so
   their lambdas apply); w_i multiplies the squared error, as in the paper
   (the authors' code squares w_i by a misplaced parenthesis).
7. R is drawn from 1..min(T_u, |S_u|-1) (a tail user's length); the code
   draws 1..T_u-1. |S_u| is capped at MAX_ITEM_LIST_LENGTH (the encoder's
   window), as in the code: with L = 10 and T_u = 8 (the shipped Amazon
   sets) a head user's phase is 0 or pi/2; with T_u >= L - 1 it is always 0
   (the denominator is clamped to 1).
8. Head users and items are visited in a fresh random order every epoch,
   ceil(n / training batches) of each per step, so each is used about once
   per epoch (the authors' side loaders); the head users' sequences are their
   full training sequences, not the batch's.
9. The curriculum's epoch e counts the model's ``train()`` calls (RecBole's
   trainer makes one per epoch); ``melt_curriculum_epochs`` (default
   ``epochs``) is E. With early stopping the phase may never reach pi/2.
10. The item rule is the project's sort (the top ratio by count, ties by
   item token) instead of the authors' count quantile at pareto - 0.02;
   T_i is then the largest tail count.
11. T_U and T_I start from N(0, initializer_range) weights as SASRec's own
   layers (``melt_branch_init: backbone``), not the authors' Xavier-normal
   (``xavier``). RecBole's item embeddings are N(0, 0.02)-scale (about 0.1
   per dimension once trained) while f(S) is LayerNorm-scale (about 1): a
   Xavier-initialised T_I's first estimates are about 10x too large, and
   with the few head items per step (about 5 on Beauty at batch 256) Adam
   needs thousands of steps to undo that, while every evaluation already
   replaces the tail rows with its estimates. Measured on Beauty (backbone
   frozen, T_I retrained alone on L_i, 4 head items per step): T_I's error
   on head items after 777 steps was 0.29 from Xavier and 0.0077 from
   N(0, 0.02) (predicting 0: 0.016); after 3,000 steps 0.022 and 0.0067.
   Three epochs from a trained SASRec (enhanced estimates in both): valid
   NDCG@10 0.0030 / 0.0033 / 0.0077 with Xavier, 0.0366 / 0.0386 / 0.0348
   with the default.
12. SASRec runs on a table with tail estimates (the user branch, inference)
   through ``recbole_lpo.model.backbone.forward_with_item_table``: SASRec's
   own forward, whose lookup (``nn.Embedding``, ``padding_idx=0``) never
   sends gradient to the padding row. MELT's former copy of the forward used
   ``F.embedding`` without ``padding_idx``; nothing changes: histories are
   left-aligned, every padded position comes after the one read and is
   masked, so outputs, losses and gradients (0 for the padding row) are the
   same (tested against the old formula).
"""

import math

import numpy as np
import torch
from recbole.model.sequential_recommender import SASRec
from torch import nn

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.data.sequences import training_sequences
from recbole_lpo.errors import UserInputError
from recbole_lpo.model.backbone import forward_with_item_table
from recbole_lpo.objective import _number, load_reference


def _ratio(config, key):
    value = _number(config, key)
    if not 0 < value < 1:
        raise UserInputError(f"{key} must be in (0, 1), got {value!r}")
    return float(value)


def recent_items(item_seq, item_seq_len, keep):
    """The last ``keep`` [B] items of left-aligned sequences [B L], left-aligned again."""
    positions = torch.arange(item_seq.size(1), device=item_seq.device)  # [L]
    index = (item_seq_len - keep).unsqueeze(1) + positions  # [B L]
    items = item_seq.gather(1, index.clamp(max=item_seq.size(1) - 1))  # [B L]
    return torch.where(positions < keep.unsqueeze(1), items, torch.zeros_like(items))


class MELT(SASRec):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.lambda_u = _number(config, "melt_lambda_u", minimum=0)
        self.lambda_i = _number(config, "melt_lambda_i", minimum=0)
        self.item_head_ratio = _ratio(config, "melt_item_head_ratio")
        self.user_head_ratio = _ratio(config, "melt_user_head_ratio")
        self.beta = _number(config, "melt_beta")
        self.gamma = _number(config, "melt_gamma")
        self.item_span = _number(config, "melt_item_span", minimum=1, integer=True)
        self.estimate_input = config["melt_estimate_input"] or "plain"  # ~: checkpoints older than the key
        if self.estimate_input not in ("enhanced", "plain"):
            raise UserInputError(f"melt_estimate_input must be 'enhanced' or 'plain', got {self.estimate_input!r}")
        self.branch_init = config["melt_branch_init"] or "xavier"  # ~: checkpoints older than the key
        if self.branch_init not in ("backbone", "xavier"):
            raise UserInputError(f"melt_branch_init must be 'backbone' or 'xavier', got {self.branch_init!r}")
        curriculum_epochs = config["melt_curriculum_epochs"]
        if curriculum_epochs is None:
            curriculum_epochs = config["epochs"]
        elif isinstance(curriculum_epochs, bool) or not isinstance(curriculum_epochs, int) or curriculum_epochs < 1:
            raise UserInputError(f"melt_curriculum_epochs must be an integer >= 1, got {curriculum_epochs!r}")
        self.curriculum_epochs = max(int(curriculum_epochs), 1)
        self.chunk_size = config["eval_batch_size"]

        self._build_head_tail(config, dataset)

        # define layers, drawn from their own generator so that the backbone's random stream
        # (dropout, ...) stays SASRec's: N(0, initializer_range) weights as the backbone's layers
        # (melt_branch_init: backbone), or Xavier-normal as the authors' code (xavier); zero biases
        with torch.random.fork_rng(devices=[]):
            self.user_branch = nn.Linear(self.hidden_size, self.hidden_size)  # T_U
            self.item_branch = nn.Linear(self.hidden_size, self.hidden_size)  # T_I
        generator = torch.Generator().manual_seed(config["seed"])
        for branch in (self.user_branch, self.item_branch):
            if self.branch_init == "xavier":
                nn.init.xavier_normal_(branch.weight, generator=generator)
            else:
                nn.init.normal_(branch.weight, mean=0.0, std=self.initializer_range, generator=generator)
            nn.init.zeros_(branch.bias)
        self.register_buffer("melt_epoch", torch.tensor(-1))  # curriculum epoch, +1 per train()
        self._epoch_state = None  # per-epoch orders and item-branch estimates (training)
        self._inference_table = None  # item table with tail rows from the item branch (cached)
        if config["pretrained_model_path"]:
            self._load_pretrained(config, dataset)

    def _load_pretrained(self, config, dataset):
        """Start the backbone from the trained SASRec in ``pretrained_model_path`` (the paper's
        "pretrained encoder"), checked as DPO's reference is; the branches keep their init."""
        with torch.random.fork_rng(devices=[]):  # building SASRecs must not shift MELT's random stream
            backbone = SASRec(config, dataset)
            load_reference(config, dataset, backbone, key="pretrained_model_path", role="pretrained model")
        missing, unexpected = self.load_state_dict(backbone.state_dict(), strict=False)
        own = {name for name in self.state_dict() if name.startswith(("user_branch.", "item_branch."))}
        assert not unexpected and set(missing) == own | {"melt_epoch"}, (missing, unexpected)

    # --- MELT's head/tail users and items, contexts ----------------------
    def _build_head_tail(self, config, dataset):
        # items: top melt_item_head_ratio by training-split count are head
        split = head_tail_split(dataset, 1.0 - self.item_head_ratio)
        counts = torch.as_tensor(np.asarray(split.item_counts), dtype=torch.long)  # [n_items]
        self.item_threshold = int(counts[split.tail_mask].max())  # T_i

        # C_i: each training occurrence of i with the items before it, the last L in all (a first
        # item alone); grouped by item, within an item targets before first items, each in the
        # data set's row order (the order decides which contexts a draw picks)
        sequences = training_sequences(dataset)
        n = len(sequences.items)
        key = (sequences.items * 2 + sequences.is_first) * n + sequences.rows  # unique
        order = torch.argsort(torch.from_numpy(key))  # [N]
        windows, sizes = sequences.windows(self.max_seq_length, at=order.numpy())  # [N L], [N]
        context_items = torch.from_numpy(sequences.items)  # [N]
        n_contexts = torch.bincount(context_items, minlength=self.n_items)  # [n_items]
        offsets = torch.cat([n_contexts.new_zeros(1), n_contexts.cumsum(0)])  # [n_items+1]
        self.register_buffer("context_seq", torch.from_numpy(windows), persistent=False)
        self.register_buffer("context_len", torch.from_numpy(sizes), persistent=False)
        self.register_buffer("context_offset", offsets, persistent=False)
        self.register_buffer("item_count", counts, persistent=False)
        has_context = n_contexts > 0
        self.register_buffer("tail_item_mask", split.tail_mask.clone(), persistent=False)
        self.register_buffer("head_items", (split.head_mask & has_context).nonzero().squeeze(1), persistent=False)
        self.register_buffer("estimated_items", (split.tail_mask & has_context).nonzero().squeeze(1),
                             persistent=False)
        tail_contexts = split.tail_mask[context_items[order]].nonzero().squeeze(1)
        self.register_buffer("tail_contexts", tail_contexts, persistent=False)

        # users: Pareto rule on training-split sequence lengths; a user without rows has one
        # interaction (RecBole makes no row of it)
        n_users = dataset.user_num
        users = torch.from_numpy(sequences.users)
        train_length = torch.ones(n_users, dtype=torch.long)  # [n_users]
        train_length[users] = torch.from_numpy(sequences.lengths)
        train_length[0] = 0  # padding
        self.user_threshold = float(np.quantile(train_length[1:].numpy(), 1.0 - self.user_head_ratio))  # T_u
        self.register_buffer("user_is_tail", train_length <= self.user_threshold, persistent=False)
        head_users = (train_length > self.user_threshold).nonzero().squeeze(1)
        last = torch.full((n_users,), -1, dtype=torch.long)  # each user's last position in ``sequences``
        last[users] = torch.from_numpy(sequences.offsets[1:] - 1)
        windows, sizes = sequences.windows(self.max_seq_length, at=last[head_users].numpy())  # last L items
        self.register_buffer("head_user_seq", torch.from_numpy(windows), persistent=False)  # [U L]
        self.register_buffer("head_user_len", torch.from_numpy(sizes), persistent=False)  # [U]

        # visit each head user / item about once per epoch
        n_batches = max(math.ceil(len(dataset.inter_feat) / config["train_batch_size"]), 1)
        self.users_per_step = math.ceil(len(head_users) / n_batches)
        self.items_per_step = math.ceil(len(self.head_items) / n_batches)

    # --- mode changes -----------------------------------------------------
    def train(self, mode=True):
        """RecBole's trainer calls ``train()`` once per epoch: advance the curriculum."""
        if mode:
            self.melt_epoch += 1
        self._epoch_state = None
        self._inference_table = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict=True, **kwargs):
        self._epoch_state = None
        self._inference_table = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # --- item-branch estimates, the inference table, the user representation ----
    @torch.no_grad()
    def _context_means(self):
        """r_i [n_items H]: mean encoding over all of C_i for every tail item (dropout off)."""
        training = self.training
        nn.Module.train(self, False)
        sums = torch.zeros(self.n_items, self.hidden_size, device=self.context_seq.device)
        owners = torch.repeat_interleave(torch.arange(self.n_items, device=sums.device),
                                         self.context_offset.diff())  # [C] item of each context
        for chunk in self.tail_contexts.split(self.chunk_size):
            encoded = self.forward(self.context_seq[chunk], self.context_len[chunk])  # [c H]
            sums.index_add_(0, owners[chunk], encoded)
        nn.Module.train(self, training)
        return sums / self.context_offset.diff().clamp(min=1).unsqueeze(1).to(sums.dtype)

    def _tail_estimates(self):
        """T_I(x_i) [E H] for the tail items with contexts (Eq. 10 without gamma * q_i), no gradient;
        x_i = T_U(r_i) + beta * r_i, the input T_I is trained on (``melt_estimate_input: enhanced``),
        or r_i (``plain``, Alg. 1 line 8 and the authors' code)."""
        with torch.no_grad():
            means = self._context_means()[self.estimated_items]  # r_i [E H]
            if self.estimate_input == "enhanced":
                means = self.user_branch(means) + self.beta * means
            return self.item_branch(means)

    def _with_estimates(self, estimates):
        """The item table with tail rows T_I(r_i) + gamma * q_i (gradient through q only)."""
        table = self.item_embedding.weight
        rows = estimates + self.gamma * table[self.estimated_items]
        return table.index_copy(0, self.estimated_items, rows)  # [n_items H]

    def item_table(self):
        """Inference item table: head rows q_i, tail rows from the item branch (Eq. 10)."""
        if self._inference_table is None:
            with torch.no_grad():
                self._inference_table = self._with_estimates(self._tail_estimates())
        return self._inference_table

    def user_representation(self, interaction, item_table):
        """p_u [B H]; tail users through the user branch: T_U(p_u) + beta * p_u (Eq. 4)."""
        seq_output = forward_with_item_table(self, item_table, interaction[self.ITEM_SEQ],
                                             interaction[self.ITEM_SEQ_LEN])  # [B H]
        tail = self.user_is_tail[interaction[self.USER_ID]].unsqueeze(1)  # [B 1]
        return torch.where(tail, self.user_branch(seq_output) + self.beta * seq_output, seq_output)

    # --- training -----------------------------------------------------------
    def _curriculum(self):
        return math.pi / 2 * max(int(self.melt_epoch), 0) / self.curriculum_epochs

    def user_weights(self, seq_len):
        """w_u [U] of head users with (window-capped) lengths ``seq_len`` [U]."""
        span = max(self.max_seq_length - self.user_threshold - 1, 1)
        return torch.abs(torch.sin(self._curriculum() + math.pi / 2 * (seq_len - self.user_threshold - 1) / span))

    def item_weights(self, items):
        """w_i [M] of head items ``items`` [M], from their training counts."""
        counts = torch.clamp(self.item_count[items], max=self.item_threshold + self.item_span)
        return torch.abs(torch.sin(self._curriculum()
                                   + math.pi / (2 * self.item_span) * (counts - self.item_threshold - 1)))

    def _start_epoch(self):
        device = self.item_embedding.weight.device
        self._epoch_state = {
            "users": torch.randperm(len(self.head_user_seq), device=device), "users_at": 0,
            "items": torch.randperm(len(self.head_items), device=device), "items_at": 0,
            "estimates": self._tail_estimates() if self.lambda_u > 0 else None,
        }

    def _next(self, name, count):
        state = self._epoch_state
        if state[name + "_at"] >= len(state[name]):  # more steps than planned: a new round
            state[name] = torch.randperm(len(state[name]), device=state[name].device)
            state[name + "_at"] = 0
        start = state[name + "_at"]
        state[name + "_at"] = start + count
        return state[name][start:start + count]

    def user_branch_loss(self):
        """L_u: head users' recent R items, through T_U, match their full sequence (Eq. 2)."""
        chosen = self._next("users", self.users_per_step)
        seq, seq_len = self.head_user_seq[chosen], self.head_user_len[chosen]  # [U L], [U]
        longest = torch.clamp(seq_len - 1, max=max(int(self.user_threshold), 1))  # [U]
        keep = 1 + (torch.rand(len(chosen), device=seq.device) * longest).long()  # R ~ U{1..longest}
        table = self._with_estimates(self._epoch_state["estimates"])  # tail items from the item branch
        full = forward_with_item_table(self, table, seq, seq_len)  # p_u [U H]
        recent = forward_with_item_table(self, table, recent_items(seq, seq_len, keep), keep)  # r_u [U H]
        weight = self.user_weights(seq_len)  # [U]
        return (weight * ((full - self.user_branch(recent)) ** 2).mean(1)).mean()

    def item_branch_loss(self):
        """L_i: head items' embeddings rebuilt by T_I from K of their contexts (Eq. 12)."""
        items = self.head_items[self._next("items", self.items_per_step)]  # [M]
        start = self.context_offset[items]
        n_contexts = self.context_offset[items + 1] - start  # [M]
        draws = 1 + (torch.rand(len(items), device=items.device)
                     * torch.clamp(n_contexts, max=self.item_threshold)).long()  # K ~ U{1..min(|C_i|, T_i)}
        # K contexts per item without replacement: random order within each item's contexts
        owner = torch.repeat_interleave(torch.arange(len(items), device=items.device), n_contexts)  # [S]
        first = torch.cumsum(n_contexts, 0) - n_contexts  # [M]
        context = start[owner] + torch.arange(len(owner), device=items.device) - first[owner]  # [S]
        order = torch.argsort(owner.double() + torch.rand(len(owner), device=items.device, dtype=torch.double))
        rank = torch.arange(len(owner), device=items.device) - first[owner]  # owner is sorted
        chosen = rank < draws[owner]
        context, owner = context[order][chosen], owner[chosen]
        encoded = self.forward(self.context_seq[context], self.context_len[context])  # r~ [S' H]
        enhanced = self.user_branch(encoded) + self.beta * encoded  # r~+
        mean = torch.zeros(len(items), self.hidden_size, device=encoded.device, dtype=encoded.dtype)
        mean = mean.index_add(0, owner, enhanced) / draws.unsqueeze(1).to(encoded.dtype)  # [M H]
        weight = self.item_weights(items)  # [M]
        target = self.item_embedding(items)  # q_i [M H]
        return (weight * ((target - self.item_branch(mean)) ** 2).mean(1)).mean()

    def calculate_loss(self, interaction):
        loss = super().calculate_loss(interaction)  # L_rec: SASRec's loss on the trainable table
        if self.lambda_u == 0 and self.lambda_i == 0:
            return loss
        if self._epoch_state is None:
            self._start_epoch()
        if self.lambda_u > 0 and len(self.head_user_seq) > 0:
            loss = loss + self.lambda_u * self.user_branch_loss()
        if self.lambda_i > 0 and len(self.head_items) > 0:
            loss = loss + self.lambda_i * self.item_branch_loss()
        return loss

    # --- inference ------------------------------------------------------------
    def predict(self, interaction):
        table = self.item_table()
        seq_output = self.user_representation(interaction, table)  # [B H]
        return (seq_output * table[interaction[self.ITEM_ID]]).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        table = self.item_table()
        seq_output = self.user_representation(interaction, table)  # [B H]
        return torch.matmul(seq_output, table.transpose(0, 1))  # [B n_items]
