"""The head/tail split: METHOD.md's rule on a hand example and on shipped Beauty."""

import numpy as np
import pytest
from recbole.data import create_dataset, data_preparation

from recbole_lpo.config import Config
from recbole_lpo.data.head_tail import head_tail_split, split_items
from recbole_lpo.errors import UserInputError

from conftest import TINY_YAML

HAND_DATA = {  # user: items in time order
    "u1": ["a", "b", "c", "d"],  # training split: a b
    "u2": ["b", "c", "e"],  # training split: b
    "u3": ["c", "d", "e", "f", "g"],  # training split: c d e
}


def _build(workdir, tiny_config, data, tail_ratio):
    folder = workdir / "hand"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, items in data.items():
        rows += [f"{user}\t{item}\t{t}" for t, item in enumerate(items)]
    (folder / "hand.inter").write_text("\n".join(rows) + "\n")
    config = Config("SASRec", "hand", [TINY_YAML], tiny_config(data_path=str(workdir), tail_ratio=tail_ratio))
    train, valid, test = data_preparation(config, create_dataset(config))
    return train.dataset, valid.dataset, test.dataset


def test_counts_include_first_items_and_exclude_valid_test(workdir, tiny_config):
    train, valid, test = _build(workdir, tiny_config, HAND_DATA, tail_ratio=0.5)
    split = head_tail_split(train)
    tokens = train.field2id_token["item_id"]
    counts = {tokens[i]: int(c) for i, c in enumerate(split.item_counts) if i}
    assert counts == {"a": 1, "b": 2, "c": 2, "d": 1, "e": 1, "f": 0, "g": 0}
    # floor(0.5 * 7) = 3 tail items: zero counts first, then ties broken by token
    tail = {tokens[i] for i in np.flatnonzero(split.tail_mask.numpy())}
    assert tail == {"f", "g", "a"}
    assert not split.tail_mask[0] and not split.head_mask[0]
    assert (split.tail_mask ^ split.head_mask)[1:].all()
    # every split of the data set shares the same split object
    assert head_tail_split(valid) is not None
    assert head_tail_split(test).tail_hash == split.tail_hash


def test_split_is_cached_per_tail_ratio(workdir, tiny_config):
    train, _, _ = _build(workdir, tiny_config, HAND_DATA, tail_ratio=0.5)
    assert head_tail_split(train, 0.5) is head_tail_split(train, 0.5)
    assert head_tail_split(train, 0.3).n_tail == 2


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 0.05])
def test_bad_tail_ratio_is_refused(ratio):
    counts = np.array([0, 3, 2, 1, 5, 4])
    tokens = np.array(["[PAD]", "a", "b", "c", "d", "e"])
    with pytest.raises(UserInputError, match="tail_ratio"):
        split_items(counts, tokens, ratio)  # 0.05 * 5 items -> no tail item at all


def test_shipped_beauty_split(workdir, tiny_config):
    config = Config("SASRec", "amazon-beauty", config_dict={"state": "WARNING", "show_progress": False})
    train, _, test = data_preparation(config, create_dataset(config))
    split = head_tail_split(train.dataset)
    assert split.n_tail == 2420 and split.n_head == 12101 - 2420
    targets = test.dataset.inter_feat["item_id"]
    share = split.tail_mask[targets].double().mean().item()
    assert round(100 * share, 2) == 17.21
    # RecBole's item_counter (augmented training targets) misses each user's first item
    recbole_counts = np.zeros_like(split.item_counts)
    for item, count in train.dataset.item_counter.items():
        recbole_counts[item] = count
    assert split.item_counts.sum() == recbole_counts.sum() + 22363
