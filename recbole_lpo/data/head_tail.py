"""The one head/tail item split (METHOD.md, "Head and tail items").

count(i) = occurrences of item i in the training split, i.e. in each user's
interactions minus those that are valid or test targets (under leave-one-out:
each user's first len-2 interactions). RecBole's ``item_counter`` of the
augmented training set misses each user's first item, so the counts are taken
when the full data set is split (``Dataset.build``, hooked by ``install``) and
travel with every split data set.

Every real item is a candidate (padding id 0 excluded, zero counts included);
sorted ascending by (count, item token), the first floor(tail_ratio * n_items)
are tail, the rest head. The split is computed once per data set and
``tail_ratio`` and cached on the data set object: metrics, samplers and
reweighting all read the same ``HeadTailSplit``.

``tail_ratio`` is always a share of items in (0, 1). A config without it
(RecBole's own ``Config``) gets the plugin's default from
``properties/overall.yaml``. RecBole's own TailPercentage also reads
``tail_ratio``, as a share when <= 1 and as a count threshold when > 1
("items with at most that many training interactions"); the plugin's split
refuses a value >= 1 with one error line rather than guess which was meant.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import yaml
from recbole.data.dataset import Dataset

from recbole_lpo.errors import UserInputError
from recbole_lpo.paths import PROPERTIES_DIR

_COUNTS_ATTR = "_lpo_train_item_counts"
_CACHE_ATTR = "_lpo_head_tail_cache"


@dataclass(frozen=True)
class HeadTailSplit:
    item_counts: np.ndarray  # [n_items] training-split counts; index 0 is padding
    tail_mask: torch.Tensor  # [n_items] bool, False for padding
    head_mask: torch.Tensor  # [n_items] bool, False for padding
    tail_ratio: float
    tail_hash: str  # sha256 prefix of the sorted tail item tokens

    @property
    def n_tail(self):
        return int(self.tail_mask.sum())

    @property
    def n_head(self):
        return int(self.head_mask.sum())


@functools.lru_cache(maxsize=None)
def default_tail_ratio():
    """The plugin's ``tail_ratio`` default, as ``properties/overall.yaml`` sets it."""
    with open(PROPERTIES_DIR / "overall.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["tail_ratio"]


def check_tail_ratio(tail_ratio):
    """``tail_ratio`` as the plugin reads it: a share of items in (0, 1); one error line otherwise."""
    if isinstance(tail_ratio, bool) or not isinstance(tail_ratio, (int, float, np.integer, np.floating)):
        raise UserInputError(f"tail_ratio must be a share of items in (0, 1), got {tail_ratio!r}")
    if tail_ratio >= 1:
        raise UserInputError(
            f"tail_ratio={tail_ratio!r}: the plugin's tail set is a share of items in (0, 1) (default "
            f"{default_tail_ratio()}); RecBole's TailPercentage reads a value > 1 as a count threshold, which "
            "the plugin's tail metrics, samplers and reweighting do not support")
    if not tail_ratio > 0:
        raise UserInputError(f"tail_ratio must be a share of items in (0, 1), got {tail_ratio!r}")
    return float(tail_ratio)


def split_items(item_counts, item_tokens, tail_ratio):
    """Tail mask from counts and tokens (index 0 = padding is never tail)."""
    tail_ratio = check_tail_ratio(tail_ratio)
    n_items = len(item_counts) - 1
    n_tail = int(np.floor(tail_ratio * n_items))
    ids = np.arange(1, n_items + 1)
    item_tokens = np.asarray(item_tokens).astype(str)
    # sort by (count, token): lexsort's last key is the primary one
    order = ids[np.lexsort((item_tokens[ids], item_counts[ids]))]
    tail_mask = np.zeros(n_items + 1, dtype=bool)
    tail_mask[order[:n_tail]] = True
    head_mask = ~tail_mask
    head_mask[0] = False
    if n_tail == 0 or not head_mask.any():
        raise UserInputError(
            f"tail_ratio={tail_ratio} gives {n_tail} tail and {int(head_mask.sum())} head items "
            f"out of {n_items}: both sets must be non-empty"
        )
    tail_tokens = sorted(item_tokens[tail_mask])
    digest = hashlib.sha256("\n".join(tail_tokens).encode()).hexdigest()[:16]
    return torch.from_numpy(tail_mask), torch.from_numpy(head_mask), digest


def _item_counts(dataset, field):
    n_items = dataset.item_num
    return np.bincount(dataset.inter_feat[field].numpy(), minlength=n_items)[:n_items]


def _first_item_counts(dataset):
    """Counts of each user's first item (never a target after augmentation)."""
    length_field = getattr(dataset, "item_list_length_field", None)
    list_field = getattr(dataset, "item_id_list_field", None)
    if length_field is None or list_field is None or list_field not in dataset.inter_feat:
        return np.zeros(dataset.item_num, dtype=np.int64)
    first = dataset.inter_feat[length_field].numpy() == 1
    items = dataset.inter_feat[list_field][:, 0].numpy()[first]
    return np.bincount(items, minlength=dataset.item_num)[: dataset.item_num]


def training_item_counts(full_dataset, split_datasets):
    """count(i) in the training split: all interactions minus valid/test targets."""
    iid = full_dataset.iid_field
    counts = _item_counts(full_dataset, iid) + _first_item_counts(full_dataset)
    for held_out in split_datasets[1:]:
        counts -= _item_counts(held_out, iid)
    counts[0] = 0
    return counts


def _build_with_counts(build):
    def build_and_count(self):
        datasets = build(self)
        counts = training_item_counts(self, datasets)
        for split in datasets:
            setattr(split, _COUNTS_ATTR, counts)
            setattr(split, _CACHE_ATTR, {})  # never share a cache made before the split
        return datasets

    build_and_count.__wrapped__ = build
    build_and_count.__doc__ = build.__doc__
    return build_and_count


def install():
    """Hook ``Dataset.build`` so every split data set carries the training-split counts; RecBole's results unchanged."""
    if not hasattr(Dataset.build, "__wrapped__"):
        Dataset.build = _build_with_counts(Dataset.build)


def head_tail_split(dataset, tail_ratio=None):
    """The head/tail split of ``dataset`` (any split of it) at ``tail_ratio``.

    ``tail_ratio`` defaults to the data set's ``config['tail_ratio']``, else
    (a RecBole ``Config`` without the key) to the plugin's default.
    """
    if tail_ratio is None:
        tail_ratio = dataset.config["tail_ratio"]
    if tail_ratio is None:
        tail_ratio = default_tail_ratio()
    cache = dataset.__dict__.setdefault(_CACHE_ATTR, {})
    if tail_ratio not in cache:
        counts = getattr(dataset, _COUNTS_ATTR, None)
        if counts is None:
            # not split through Dataset.build (e.g. a hand-made data set): count
            # what it holds, including each sequence's first item
            counts = _item_counts(dataset, dataset.iid_field) + _first_item_counts(dataset)
            counts[0] = 0
        tokens = dataset.field2id_token[dataset.iid_field]
        tail_mask, head_mask, digest = split_items(counts, tokens, tail_ratio)
        cache[tail_ratio] = HeadTailSplit(counts, tail_mask, head_mask, float(tail_ratio), digest)
    return cache[tail_ratio]
