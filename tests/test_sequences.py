"""recbole_lpo.data.sequences: each user's training sequence rebuilt from the augmented rows."""

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_lpo.data.sequences import training_sequences

from conftest import FIXTURES, build_model


def _reference(max_length):
    """Brute force from the atomic file: each user's items by time minus the last two
    (valid and test under leave-one-out), and every window of the last ``max_length``."""
    frame = pd.read_csv(FIXTURES / "tiny" / "tiny.inter", sep="\t")
    frame.columns = ["user", "item", "timestamp"]
    frame = frame.sort_values(["user", "timestamp"], kind="stable")
    sequences = {user: list(items)[:-2] for user, items in frame.groupby("user", sort=False)["item"]}
    windows = {user: [items[max(0, t + 1 - max_length):t + 1] for t in range(len(items))]
               for user, items in sequences.items()}
    return sequences, windows


def _tokens(dataset, ids):
    return dataset.id2token(dataset.iid_field, np.asarray(ids)).tolist()


@pytest.mark.parametrize("max_length", [10, 3])
def test_sequences_are_the_training_interactions(max_length, workdir, tiny_config):
    """Every user's full training sequence, also where the histories are cut to L (L = 3)."""
    _, _, train_data, _ = build_model("SASRec", tiny_config(MAX_ITEM_LIST_LENGTH=max_length))
    dataset = train_data.dataset
    sequences = training_sequences(dataset)
    expected, expected_windows = _reference(max_length)

    users = dataset.id2token(dataset.uid_field, sequences.users).tolist()
    got = {user: _tokens(dataset, items) for user, items in zip(users, sequences.split())}
    assert got == expected
    if max_length == 3:  # most users have rows whose history is cut to L
        assert sum(len(items) > max_length + 1 for items in expected.values()) > 50
    assert np.array_equal(sequences.lengths, [len(expected[user]) for user in users])
    assert list(sequences.users) == sorted(sequences.users)

    windows, sizes = sequences.windows(max_length)
    assert windows.shape == (len(sequences.items), max_length)
    got_windows = [_tokens(dataset, w[:s]) for w, s in zip(windows, sizes)]
    assert got_windows == [w for user in users for w in expected_windows[user]]
    assert not windows[np.arange(max_length) >= sizes[:, None]].any()  # 0-padded on the right
    some = np.random.default_rng(0).permutation(len(sequences.items))[:40]
    assert all(np.array_equal(a, b[some]) for a, b in zip(sequences.windows(max_length, at=some), (windows, sizes)))

    # rows: a target's own row, whose history + target is the window; a first item's length-1 row
    feat = dataset.inter_feat
    history, lengths = feat[dataset.item_id_list_field].numpy(), feat[dataset.item_list_length_field].numpy()
    first, target = sequences.is_first, ~sequences.is_first
    assert np.array_equal(np.flatnonzero(first), sequences.offsets[:-1])
    assert sorted(sequences.rows[target]) == list(range(len(feat)))  # every row once
    assert np.array_equal(sequences.items[target], feat[dataset.iid_field].numpy()[sequences.rows[target]])
    assert (lengths[sequences.rows[first]] == 1).all()
    assert np.array_equal(sequences.items[first], history[sequences.rows[first], 0])
    for n in np.flatnonzero(target)[:: 7]:
        row = sequences.rows[n]
        assert list(windows[n, :sizes[n]]) == (list(history[row, :lengths[row]]) + [sequences.items[n]])[-max_length:]


def test_rows_of_users_may_interleave(workdir, tiny_config):
    _, _, train_data, _ = build_model("SASRec", tiny_config())
    dataset = train_data.dataset
    sequences = training_sequences(dataset)
    # each user's rows in time order, the users interleaved: row k of every user, then row k+1, ...
    users = dataset.inter_feat[dataset.uid_field].numpy()
    assert (np.diff(users) >= 0).all()
    rank = np.arange(len(users)) - np.searchsorted(users, users)  # rows are grouped by user here
    order = np.lexsort((users, rank))
    assert not np.array_equal(order, np.arange(len(order)))
    shuffled = training_sequences(dataset.copy(dataset.inter_feat[torch.from_numpy(order)]))
    for field in ("users", "offsets", "items"):
        assert np.array_equal(getattr(shuffled, field), getattr(sequences, field))
    assert np.array_equal(order[shuffled.rows], sequences.rows)


def test_layout_is_checked(workdir, tiny_config):
    _, _, train_data, _ = build_model("SASRec", tiny_config())
    dataset = train_data.dataset
    feat = dataset.inter_feat
    backwards = dataset.copy(feat[torch.arange(len(feat) - 1, -1, -1)])  # each user's rows newest first
    with pytest.raises(ValueError, match="not RecBole's augmented sequential layout"):
        training_sequences(backwards)
    broken = dataset.copy(feat[torch.arange(len(feat))])
    history = broken.inter_feat[dataset.item_id_list_field]
    row = int((broken.inter_feat[dataset.item_list_length_field] == 3).nonzero()[0])
    history[row, 2] = history[row, 2] % (dataset.item_num - 1) + 1  # not the previous row's target
    with pytest.raises(ValueError, match=f"at row {row} "):
        training_sequences(broken)
    without_first = dataset.copy(feat[torch.from_numpy(np.flatnonzero(feat[dataset.item_list_length_field] != 1))])
    with pytest.raises(ValueError, match="not RecBole's augmented sequential layout"):
        training_sequences(without_first)
