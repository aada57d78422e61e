r"""R2Rec (Z. Li, Y. Chen, T. Zhang, X. Wang, "Reembedding and Reweighting are
Needed for Tail Item Sequential Recommendation", WWW 2025; authors' code:
github Yuhanleeee/R2Rec).

SASRec (same layers, ``forward``, ``predict``, ``full_sort_predict``) trained
with two tail-item fixes. Notation: ``z_i`` the logits over all items of
sample i, ``y_i`` its target, ``T`` the tail items, ``E`` the item embedding
table (SASRec ties it: input embeddings and output layer).

Reweighting: CE with batch-softmax sample weights at a temperature::

    a_i = alpha_tail if y_i in T else alpha_head        (released code: 1 and 0)
    w_i = exp(a_i / tau) / sum_{j in batch} exp(a_j / tau)
    L   = sum_i w_i * CE_i,   CE_i = -log softmax(z_i)[y_i]

``w`` is ``recbole_lpo.losses.tail_weights`` with alpha / tau, so the loss is
a weighted mean; a batch without tail targets gets 1/B each (plain mean).
``reweight: False`` is SASRec's CE exactly. Worked value: targets (tail,
head, head, tail), alpha (1, 0), tau 0.5 -> w = (0.4404, 0.0596, 0.0596, 0.4404).

Reembedding (only with pretrained item features, the paper's ``w. img`` /
``w. txt``): ``E`` starts from the features, tail rows redrawn::

    E_i = f_i                      for head items with a feature vector f_i
    E_i ~ N(0, reembed_std^2 I)    for tail items (and items the file lacks)

and all of ``E`` is trained. With ID embeddings only, every row of ``E``
already starts as a fresh Gaussian draw (SASRec's N(0, initializer_range^2)),
so redrawing the tail rows changes nothing in kind: R2Rec is then SASRec plus
reweighting, and is built exactly as SASRec (same parameters and random
stream; tested).

Features come through RecBole's feature files: an additional atomic file
``<dataset>.itememb`` (``additional_feat_suffix``), whose id column is an
alias of the item id and whose vectors RecBole preloads (``preload_weight``);
``item_feature_field`` names that id column. See properties/model/R2Rec.yaml.
The file must name only items of the ``.inter`` file (RecBole adds every
token of an aliased file to the item vocabulary, and so to the ranking):
``recbole_lpo.data.atomic`` refuses one that does not, before loading.

Tail items for training are the shared split's (``head_tail_split``) at
``r2rec_tail_ratio`` (default ``tail_ratio``); tail metrics always use
``tail_ratio``.

The paper's text was not at hand: the formulas above follow its abstract and
the released code (``TailImgRec.training_step`` and ``__init__``), not its
equation numbering. Deviations from the released code:

1. Loss scale: it returns ``mean_i(w_i * CE_i)`` (the weighted sum divided by
   B again) when the batch has a tail target and ``mean_i(CE_i)`` when it has
   none, so the scale jumps by B between batches; here always the weighted
   mean ``sum_i w_i * CE_i``.
2. Temperature: ``r2rec_tau`` default 0.5 is its run script's value (its
   argparse default is 0.1); alpha_tail/alpha_head are its 1/0 indicator.
3. Tail set: it takes the least popular 20 % of the items counted over
   prefix-augmented training sequences (ties in first-seen order) plus items
   never seen in training; here the shared split (training-split counts,
   ties by item token).
4. Backbone: RecBole's SASRec (positional embeddings, causal mask, post-LN,
   output layer tied to ``E``) instead of its pre-LN block without positional
   embedding or causal mask and an untied linear output layer; so here the
   re-embedded table also scores items. Hyper-parameters are SASRec's YAML
   unless set (paper: hidden 768, 1 block, 16 heads, dropout 0.8, lr 5e-4,
   batch 128); no warm-up or learning-rate decay.
5. Features must have ``hidden_size`` dimensions (it uses hidden 768 = CLIP
   size); no projection. Its padding row is the mean feature, here zero
   (SASRec's padding row; padding is masked in attention).
6. Items without a feature vector are re-embedded like tail items (its files
   cover every item).
7. Test metrics come from the best validation checkpoint, not the last epoch.
8. Its commented-out per-item variant (weights grown by top-5 misses) is not
   implemented; only its active per-sample batch softmax is.
"""

from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender import SASRec
from recbole.utils import InputType

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.losses import tail_weights


class R2Rec(SASRec):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        if config["loss_type"] != "CE":
            raise UserInputError(f"R2Rec reweights the CE loss: loss_type must be CE, got {config['loss_type']}")
        if config["preference_loss"] is not None:
            raise UserInputError("R2Rec has its own objective: it takes no preference_loss")
        super().__init__(config, dataset)

        # load parameters info
        self.reweight = config["reweight"]
        self.tau = config["r2rec_tau"]
        self.alpha_tail = config["alpha_tail"]
        self.alpha_head = config["alpha_head"]
        tail_ratio = config["r2rec_tail_ratio"]
        self.tail_ratio = config["tail_ratio"] if tail_ratio is None else tail_ratio
        self.item_feature_field = config["item_feature_field"]
        self.reembed_tail = config["reembed_tail"]
        self.reembed_std = config["reembed_std"]
        if not isinstance(self.reweight, bool):
            raise UserInputError(f"reweight must be True or False, got {self.reweight!r}")
        if not self.tau > 0:
            raise UserInputError(f"r2rec_tau must be > 0, got {self.tau!r}")
        if not 0 < self.tail_ratio < 1:
            raise UserInputError(f"r2rec_tail_ratio must be in (0, 1), got {tail_ratio!r}")
        if not self.reembed_std > 0:
            raise UserInputError(f"reembed_std must be > 0, got {self.reembed_std!r}")

        # tail items of training (non-persistent: checkpoints keep SASRec's keys)
        split = head_tail_split(dataset, self.tail_ratio)
        self.register_buffer("tail_mask", split.tail_mask.clone(), persistent=False)  # [n_items]

        # re-embedding needs pretrained features; with ID embeddings it is a no-op
        if self.item_feature_field is not None:
            self._embed_item_features(config, dataset)

    def _embed_item_features(self, config, dataset):
        """Start ``item_embedding`` from the preloaded features; redraw tail rows."""
        field = self.item_feature_field
        if field not in (config["preload_weight"] or {}):
            raise UserInputError(
                f"item_feature_field '{field}' has no preload_weight entry: set preload_weight: {{{field}: <vector "
                f"field>}} and load the file with additional_feat_suffix (see properties/model/R2Rec.yaml)")
        if field not in dataset.alias["item_id"]:
            raise UserInputError(
                f"item_feature_field '{field}' must be an alias of the item id: set alias_of_item_id: [{field}]")
        features = torch.as_tensor(np.asarray(dataset.get_preload_weight(field)), dtype=torch.float32)
        if features.dim() != 2 or features.shape[1] != self.hidden_size:
            raise UserInputError(
                f"item features '{field}' have shape {tuple(features.shape)}: each vector needs hidden_size="
                f"{self.hidden_size} values (set hidden_size to the feature size)")
        if features.shape[0] != self.n_items:  # the alias shares the item vocabulary
            raise RuntimeError(f"{features.shape[0]} feature rows for {self.n_items} items")

        missing = ~features.abs().sum(dim=1).bool()  # RecBole leaves zero rows for items the file lacks
        missing[0] = False  # padding
        redraw = missing | self.tail_mask if self.reembed_tail else missing  # [n_items]
        features[redraw] = torch.randn(int(redraw.sum()), self.hidden_size) * self.reembed_std  # [n H]
        features[0] = 0.0  # padding row (padding_idx: never trained)
        with torch.no_grad():
            self.item_embedding.weight.copy_(features)
        getLogger().info(
            f"R2Rec item features '{field}': {int((~redraw).sum()) - 1} items start from their vector, "
            f"{int(redraw.sum())} re-embedded ({int(missing.sum())} without a vector)")

    def sample_weights(self, pos_items, dtype=torch.float32):
        """w [B]: batch softmax of alpha / tau over the targets, or 1/B without reweighting."""
        if not self.reweight:
            return torch.full(pos_items.shape, 1.0 / len(pos_items), device=pos_items.device, dtype=dtype)
        return tail_weights(self.tail_mask[pos_items], self.alpha_tail / self.tau, self.alpha_head / self.tau,
                            dtype)  # [B]

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)  # [B H]
        pos_items = interaction[self.POS_ITEM_ID]  # [B]
        logits = torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B n_items]
        ce = F.cross_entropy(logits, pos_items, reduction="none")  # [B]
        return (self.sample_weights(pos_items, logits.dtype) * ce).sum()
