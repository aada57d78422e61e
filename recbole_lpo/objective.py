"""The training objective shared by LPO4Rec, its rivals and any CE backbone.

    L = sum_i w_i * (CE_i + weight * P_i)                      (paper Eq. 17)

``CE_i`` is the backbone's own per-sample cross-entropy over all items,
``P_i`` one preference loss from ``recbole_lpo.losses`` over the positive and
K negatives drawn from this step's detached logits, and ``w`` the batch
softmax of alpha (tail-aware reweighting) or 1/B when reweighting is off.
``weight`` is ``lpo_lambda`` for LPO, ``orpo_weight`` for ORPO and
``pref_weight`` for DPO, S-DPO and SimPO (ORPO's NLL term IS the CE).
With ``pref_warmup_epochs: W > 0`` (beyond the paper; 0 = off) the weight at
epoch e is ``weight * min(1, e / W)``: epoch 0 trains the CE alone. The
plugin's ``PreferenceTrainer`` tells the objective its epoch.

``PreferenceObjective`` replaces a RecBole sequential model's ``loss_fct``,
which its ``calculate_loss`` calls as ``loss_fct(logits [B N], pos_items [B])``
in the CE branch (SASRec, GRU4Rec, Caser, ...), so each backbone keeps the
rest of its loss (Caser its regularisation). ``attach_preference_objective``
does this for any such model: the plugin's models call it in ``__init__``,
and ``preference_loss: lpo`` in the config applies it to built-in models.
"""

import os
from logging import getLogger

import recbole
import torch
import torch.nn.functional as F
import yaml
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import Caser
from torch import nn

from recbole_lpo.checkpoint import backbone_class, item_token_hash, read_checkpoint, recorded
from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.losses import PREFERENCE_LOSSES, preference_loss, reward_accuracies, reward_margins, tail_weights
from recbole_lpo.sampling import NEGATIVE_SAMPLERS, sample_negatives

NEG_POOLS = ("head", "all")
# config key holding the weight of the preference term, per loss
WEIGHT_KEY = {"lpo": "lpo_lambda", "dpo": "pref_weight", "sdpo": "pref_weight", "simpo": "pref_weight",
              "orpo": "orpo_weight"}
NEEDS_REFERENCE = ("dpo", "sdpo")
# the plugin model whose YAML holds each loss's defaults
MODEL_OF_LOSS = {"lpo": "LPO4Rec", "dpo": "DPO4Rec", "sdpo": "SDPO4Rec", "simpo": "SimPO4Rec", "orpo": "ORPO4Rec"}


def _number(config, key, minimum=None, strict=False, integer=False):
    value = config[key]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserInputError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise UserInputError(f"{key} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return value


def encode_sequence(model, interaction):
    """The backbone's sequence representation [B H] for ``interaction``."""
    if isinstance(model, Caser):
        return model.forward(interaction[model.USER_ID], interaction[model.ITEM_SEQ])
    return model.forward(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])


def objective_settings(config, loss_type):
    """Validated objective hyper-parameters for ``loss_type`` (one clear error each)."""
    if loss_type not in PREFERENCE_LOSSES:
        raise UserInputError(f"unknown preference_loss '{loss_type}'; valid: {', '.join(PREFERENCE_LOSSES)}")
    settings = {
        "weight": _number(config, WEIGHT_KEY[loss_type], minimum=0),
        "neg_count": _number(config, "neg_count", minimum=1, integer=True),
        "neg_sampler": config["neg_sampler"],
        "neg_pool": config["neg_pool"],
        "tau": _number(config, "lpo_tau", minimum=0, strict=True) if loss_type == "lpo" else None,
        "beta": _number(config, "beta", minimum=0, strict=True) if loss_type in ("dpo", "sdpo", "simpo") else None,
        "gamma": _number(config, "gamma") if loss_type == "simpo" else 0.0,
        "reweight": config["reweight"],
        "warmup_epochs": _number(config, "pref_warmup_epochs", minimum=0, integer=True),
        "alpha_tail": _number(config, "alpha_tail"),
        "alpha_head": _number(config, "alpha_head"),
    }
    if settings["neg_sampler"] not in NEGATIVE_SAMPLERS:
        raise UserInputError(
            f"unknown neg_sampler '{settings['neg_sampler']}'; valid: {', '.join(NEGATIVE_SAMPLERS)}")
    if settings["neg_pool"] not in NEG_POOLS:
        raise UserInputError(f"unknown neg_pool '{settings['neg_pool']}'; valid: {', '.join(NEG_POOLS)}")
    if not isinstance(settings["reweight"], bool):
        raise UserInputError(f"reweight must be True or False, got {settings['reweight']!r}")
    return settings


class ReferenceEncodings:
    """The frozen reference's encodings of every training sequence, computed once.

    The reference runs in eval mode without gradients, so its encoding of a
    training sample never changes: DPO and S-DPO would otherwise pay its
    forward pass on every batch of every epoch (about a fifth of a SASRec
    step on the CPU). Batches find their rows by a hash of (sequence, length)
    and a check that the stored sequence is the same; a sequence not found
    (never, for the training loader) is encoded on the spot. Only for
    backbones whose encoding depends on the sequence and its length alone
    (SASRec, GRU4Rec); ``reference_cache: False`` turns it off.
    Memory: n_train x hidden floats (Beauty, hidden 64: 38 MB).
    """

    BACKBONES = ("SASRec", "GRU4Rec")

    def __init__(self, reference, dataset, chunk=1024):
        self.reference, self.chunk = reference, chunk
        self.seq_field, self.len_field = reference.ITEM_SEQ, reference.ITEM_SEQ_LEN
        self.sequences = dataset.inter_feat[self.seq_field]  # [n L]
        self.lengths = dataset.inter_feat[self.len_field]  # [n]
        self.weights = torch.randint(1, 2**62, (self.sequences.shape[1] + 1,),
                                     generator=torch.Generator().manual_seed(0))  # [L+1]
        self.keys = self.order = self.encodings = None
        self.misses = 0  # sequences encoded on the spot (not training rows)

    @classmethod
    def supports(cls, reference):
        return any(c.__name__ in cls.BACKBONES and c.__module__.startswith("recbole.model.")
                   for c in type(reference).__mro__)

    def _hash(self, sequences, lengths):
        # int64 arithmetic wraps around: a 64-bit hash; equality is checked after lookup
        return (sequences * self.weights[:-1]).sum(dim=1) + lengths * self.weights[-1]  # [B]

    def _encode(self, sequences, lengths):
        batch = Interaction({self.seq_field: sequences, self.len_field: lengths})
        return encode_sequence(self.reference, batch)

    def _build(self, device):
        self.weights = self.weights.to(device)
        sequences, lengths = self.sequences.to(device), self.lengths.to(device)
        keys = self._hash(sequences, lengths)
        self.keys, self.order = keys.sort()
        self.sequences, self.lengths = sequences, lengths
        # written into one buffer: a list of chunk outputs interleaved with each chunk's
        # temporaries fragments the heap (Beauty: +700 MB of RSS instead of +60 MB)
        self.encodings = None
        for start in range(0, len(sequences), self.chunk):
            part = self._encode(sequences[start:start + self.chunk], lengths[start:start + self.chunk])
            if self.encodings is None:
                self.encodings = part.new_empty(len(sequences), part.shape[1])  # [n H]
            self.encodings[start:start + len(part)] = part

    @torch.no_grad()
    def __call__(self, interaction):
        """The reference's encodings [B H] of the batch's sequences."""
        sequences, lengths = interaction[self.seq_field], interaction[self.len_field]
        if self.encodings is None:
            self._build(sequences.device)
        place = torch.searchsorted(self.keys, self._hash(sequences, lengths)).clamp_(max=len(self.keys) - 1)
        rows = self.order[place]  # [B]
        found = (self.sequences[rows] == sequences).all(dim=1) & (self.lengths[rows] == lengths)
        out = self.encodings[rows]
        if not bool(found.all()):
            missing = (~found).nonzero().squeeze(1)
            self.misses += len(missing)
            out[missing] = self._encode(sequences[missing], lengths[missing])
        return out


class PreferenceObjective(nn.Module):
    """``loss_fct`` replacement: weighted CE plus one preference loss.

    Holds no parameters; its masks are non-persistent buffers, so checkpoints
    of a model with and without it have the same keys.
    """

    def __init__(self, config, dataset, loss_type, reference=None):
        super().__init__()
        settings = objective_settings(config, loss_type)
        self.loss_type = loss_type
        self.weight = settings["weight"]
        self.neg_count = settings["neg_count"]
        self.neg_sampler = settings["neg_sampler"]
        self.tau, self.beta, self.gamma = settings["tau"], settings["beta"], settings["gamma"]
        self.reweight = settings["reweight"]
        self.alpha_tail, self.alpha_head = settings["alpha_tail"], settings["alpha_head"]
        self.warmup_epochs = settings["warmup_epochs"]
        self.epoch = None  # the training epoch, set by PreferenceTrainer (needed by the warm-up only)
        neg_pool = settings["neg_pool"]

        split = head_tail_split(dataset, config["tail_ratio"])
        candidates = split.head_mask.clone()
        if neg_pool == "all":
            candidates = split.head_mask | split.tail_mask
        n_candidates = int(candidates.sum())
        if self.weight > 0 and self.neg_count > n_candidates - 1:
            raise UserInputError(
                f"neg_count={self.neg_count} exceeds the {n_candidates - 1} {neg_pool} items available as negatives")
        self.register_buffer("tail_mask", split.tail_mask.clone(), persistent=False)
        self.register_buffer("candidate_mask", candidates, persistent=False)
        seed = config["sampler_seed"]
        self.sampler_seed = (config["seed"] if seed is None else seed) + config["local_rank"]
        self.generator = None  # created on first use, on the logits' device
        self._pending_generator_state = None

        if loss_type in NEEDS_REFERENCE and reference is None:
            raise UserInputError(f"preference_loss '{loss_type}' needs a reference model (ref_model_path)")
        # kept out of the module tree: never trained, saved or moved by the policy
        self.__dict__["reference"] = reference
        self.reference_encodings = None
        if reference is not None and config["reference_cache"] and ReferenceEncodings.supports(reference):
            self.reference_encodings = ReferenceEncodings(reference, dataset)
        self.interaction = None  # the batch, set around calculate_loss (reference losses need it)
        self.reset_stats()

    # --- diagnostics (TRL vocabulary), averaged over an epoch -------------
    def reset_stats(self):
        self.stats = {"loss/ce": 0.0, "loss/preference": 0.0, "rewards/margins": 0.0,
                      "rewards/accuracies": 0.0, "batches": 0}

    def epoch_stats(self):
        n = self.stats["batches"]
        return {k: v / n for k, v in self.stats.items() if k != "batches"} if n else {}

    def _record(self, ce, losses, chosen, rejected):
        self.stats["loss/ce"] += ce.mean().item()
        self.stats["loss/preference"] += losses.mean().item()
        self.stats["rewards/margins"] += reward_margins(chosen, rejected).item()
        self.stats["rewards/accuracies"] += reward_accuracies(chosen, rejected).item()
        self.stats["batches"] += 1

    # --- the loss ---------------------------------------------------------
    def sample_weights(self, pos_items, dtype):
        if self.reweight:
            return tail_weights(self.tail_mask[pos_items], self.alpha_tail, self.alpha_head, dtype)  # [B]
        return torch.full(pos_items.shape, 1.0 / len(pos_items), device=pos_items.device, dtype=dtype)  # [B]

    def _generator(self, device):
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.sampler_seed)
            if self._pending_generator_state is not None:  # restored from a checkpoint
                self.generator.set_state(self._pending_generator_state)
                self._pending_generator_state = None
        return self.generator

    def restore_generator(self, state):
        """Continue the sampler's stream from a checkpoint's state."""
        self.generator = None
        self._pending_generator_state = state

    def current_weight(self):
        """The preference term's weight this epoch (``weight`` unless warming up)."""
        if not self.warmup_epochs:
            return self.weight
        if self.epoch is None:
            raise RuntimeError("pref_warmup_epochs needs the epoch: train with recbole_lpo's PreferenceTrainer "
                               "(recbole_lpo.utils.get_trainer), or set objective.epoch yourself")
        return self.weight * min(1.0, self.epoch / self.warmup_epochs)

    def forward(self, logits, pos_items):
        weights = self.sample_weights(pos_items, logits.dtype)  # [B]
        weight = self.current_weight()
        if weight == 0:  # no preference term: the backbone's CE, no sampling
            return (weights * F.cross_entropy(logits, pos_items, reduction="none")).sum()
        negatives = sample_negatives(self.neg_sampler, logits.detach(), self.candidate_mask, pos_items,
                                     self.neg_count, generator=self._generator(logits.device))  # [B K]
        # one log-softmax and ONE gather for the K+1 items: CE is -logp of the positive
        # (cross_entropy computes exactly this), and a single gather keeps the backward
        # to one dense scatter, as the CE alone has
        items = torch.cat([pos_items.unsqueeze(1), negatives], dim=1)  # [B K+1]
        item_logp = F.log_softmax(logits, dim=1).gather(1, items)  # [B K+1]
        pos_logp, neg_logp = item_logp[:, 0], item_logp[:, 1:]  # [B], [B K]
        ce = -pos_logp  # [B]
        ref_pos = ref_neg = None
        if self.loss_type in NEEDS_REFERENCE:
            ref_pos, ref_neg = self.reference_scores(items)
        out = preference_loss(self.loss_type, pos_logp, neg_logp, ref_pos, ref_neg,
                              tau=self.tau, beta=self.beta, gamma=self.gamma)
        self._record(ce.detach(), out.losses.detach(), out.chosen_rewards, out.rejected_rewards)
        return (weights * (ce + weight * out.losses)).sum()

    @torch.no_grad()
    def reference_scores(self, items):
        """The frozen reference's scores of ``items`` [B K+1] (positive first).

        Its log-partition cancels in r(w) - r(l), so no softmax over all items.
        """
        if self.interaction is None:
            raise RuntimeError("reference losses need the batch: call through the model's calculate_loss")
        reference = self.reference
        if self.reference_encodings is not None and self.training:
            seq_output = self.reference_encodings(self.interaction)  # [B H], computed once per training row
        else:
            seq_output = encode_sequence(reference, self.interaction)  # [B H]
        scores = (reference.item_embedding(items) * seq_output.unsqueeze(1)).sum(-1)  # [B K+1]
        return scores[:, 0], scores[:, 1:]


def load_reference(config, dataset, policy, key="ref_model_path", role="reference"):
    """Load the frozen ``role`` model named by ``config[key]`` and start ``policy`` from it.

    The checkpoint must hold the policy's backbone class, trained on the same
    data set (same item tokens when the checkpoint records them) with the same
    architecture; otherwise one clear error, before any training. DPO and
    S-DPO use it for their reference, CITIES for its base model.
    """
    path = config[key]
    want = backbone_class(type(policy))
    if not path:
        raise UserInputError(
            f"{config['model']} needs {key}: a checkpoint of {want.__name__} trained on the same data "
            f"(step 1: python run_recbole_lpo.py --model={want.__name__} --dataset={config['dataset']})")
    try:
        checkpoint = read_checkpoint(path)  # missing or unreadable file: one error naming it
    except UserInputError as error:
        raise UserInputError(f"{key}: {error}") from None
    ref_config, state = checkpoint["config"], checkpoint["state_dict"]
    have = checkpoint_backbone(checkpoint)
    if have != want.__name__:
        raise UserInputError(f"{role} '{path}' is a {have}, the policy's backbone is {want.__name__}")
    problems = []
    if ref_config["dataset"] != config["dataset"]:
        problems.append(f"dataset {ref_config['dataset']} != {config['dataset']}")
    tokens = recorded(checkpoint, "item_token_hash")
    if tokens is not None and tokens != item_token_hash(dataset):
        problems.append("different item tokens")
    for key in _architecture_keys(want, config):
        if ref_config[key] != config[key]:
            problems.append(f"{key} {ref_config[key]} != {config[key]}")
    own = policy.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            problems.append(f"{name} shape {tuple(tensor.shape)} != {tuple(own[name].shape)}")
    if set(state) != set(own):
        problems.append(f"parameters differ: {sorted(set(state) ^ set(own))[:4]}")
    if problems:
        raise UserInputError(f"{role} '{path}' does not match the policy: {'; '.join(problems)}")
    if tokens is None:
        getLogger().warning(f"{role} '{path}' records no item tokens: checked data set name and item count only")
    reference = want(config, dataset).to(config["device"])
    reference.load_state_dict(state)
    reference.eval()
    reference.requires_grad_(False)
    policy.load_state_dict(state)  # the policy starts from the reference
    return reference


def checkpoint_backbone(checkpoint):
    """Class name of the RecBole backbone of ``checkpoint``'s model.

    Recorded by the plugin (``recbole_lpo.checkpoint.tag_model``); a checkpoint
    without the tag (written by RecBole itself) holds a RecBole model, whose
    class is its backbone.
    """
    return recorded(checkpoint, "backbone_name") or checkpoint["config"]["model"]


def _architecture_keys(backbone, config):
    """Keys of the backbone's RecBole YAML plus the history length: must match the reference's."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{backbone.__name__}.yaml")
    keys = ["MAX_ITEM_LIST_LENGTH"]
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            keys += [k for k in (yaml.safe_load(f) or {}) if k not in ("loss_type",) and "dropout" not in k]
    return [k for k in keys if k in config.final_config_dict]


def attach_preference_objective(model, config, dataset, loss_type):
    """Give ``model`` (a RecBole sequential model with a CE ``loss_fct``) the objective."""
    if config["loss_type"] != "CE" or not hasattr(model, "loss_fct"):
        raise UserInputError(
            f"preference_loss needs a backbone trained with loss_type CE and a loss_fct; "
            f"{type(model).__name__} has loss_type {config['loss_type']}")
    reference = load_reference(config, dataset, model) if loss_type in NEEDS_REFERENCE else None
    objective = PreferenceObjective(config, dataset, loss_type, reference)
    model.loss_fct = objective
    model.preference_objective = objective
    backbone_loss = model.calculate_loss

    def calculate_loss(interaction):
        objective.interaction = interaction
        try:
            return backbone_loss(interaction)
        finally:
            objective.interaction = None

    model.calculate_loss = calculate_loss
    return objective
