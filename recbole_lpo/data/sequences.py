"""Each user's training sequence, rebuilt from RecBole's augmented sequential data set.

Input layout (RecBole's ``SequentialDataset.data_augmentation``, then the
split): one row per target interaction. Row r of user u holds

- ``item_id``: the target, u's item at position t >= 1 (0-based, time order);
- ``item_id_list``: the up to ``L = MAX_ITEM_LIST_LENGTH`` items before it,
  left-aligned, 0-padded; ``item_length``: how many, min(t, L).

A user's first item (t = 0) is never a target: it appears only in the
history of the user's length-1 row. The rows of one user are in time order
(they may be interleaved with other users' rows); a split data set keeps a
prefix of each user's rows (leave-one-out: all but the last two targets), so
every user it holds has their length-1 row. ``training_sequences`` checks
this layout (each user's first row has length 1, each further row's history
has length min(t, L) and ends with the previous row's target) and raises
``ValueError`` otherwise. Long histories are cut to L items, the rebuilt
sequences never are: they are the first item followed by every target.

A user with one interaction has no row (nothing to predict), so no sequence.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainingSequences:
    """Every user's item ids in time order, one flat array.

    User ``users[k]``'s sequence is ``items[offsets[k]:offsets[k + 1]]``, its
    first item at ``offsets[k]``. ``rows[n]`` is the data set row holding
    ``items[n]``: the row whose target it is, or for a first item the user's
    length-1 row (whose history it is).
    """

    users: np.ndarray  # [U] user ids, ascending
    offsets: np.ndarray  # [U+1]
    items: np.ndarray  # [N] int64, N = number of rows + U
    rows: np.ndarray  # [N] row of inter_feat

    @property
    def lengths(self):
        """[U] each user's sequence length."""
        return np.diff(self.offsets)

    @property
    def is_first(self):
        """[N] bool: the position is its user's first item (in no row's target)."""
        first = np.zeros(len(self.items), dtype=bool)
        first[self.offsets[:-1]] = True
        return first

    def split(self):
        """One array of item ids per user (views of ``items``), in ``users`` order."""
        return np.split(self.items, self.offsets[1:-1]) if len(self.users) else []

    def windows(self, length, at=None):
        """The sequence up to and including each position ``at`` [M] (default: all N), its
        last ``length`` items.

        Returns ``windows`` [M length] (left-aligned, 0-padded, as RecBole pads) and
        ``sizes`` [M]. At a target's position this is the row's history with its target
        appended, cut to ``length``; at a user's last position, the user's last ``length``
        training items.
        """
        n = len(self.items)
        at = np.arange(n) if at is None else np.asarray(at, dtype=np.int64)
        user = np.repeat(np.arange(len(self.users)), self.lengths)[at]  # [M]
        sizes = np.minimum(at - self.offsets[:-1][user] + 1, length)  # [M]
        index = (at - sizes + 1)[:, None] + np.arange(length)  # [M length]
        index[np.arange(length) >= sizes[:, None]] = n  # past the window: the 0 appended below
        return np.append(self.items, 0)[index], sizes.astype(np.int64)


def training_sequences(dataset):
    """Rebuild every user's training sequence from ``dataset`` (layout: module docstring).

    ``dataset`` is an augmented sequential data set, in practice the training split
    (``train_data.dataset``). Vectorised: a stable sort of the rows by user, no loop.
    Returns ``TrainingSequences``.
    """
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].numpy()
    targets = feat[dataset.iid_field].numpy()
    lengths = feat[dataset.item_list_length_field].numpy()
    history = feat[dataset.item_id_list_field].numpy()  # [R L]
    order = np.argsort(users, kind="stable")  # rows of one user stay in time order
    sorted_users = users[order]
    starts = np.ones(len(order), dtype=bool)  # [R] the user's first row
    starts[1:] = sorted_users[1:] != sorted_users[:-1]
    user = np.cumsum(starts) - 1  # [R] index of the row's user in ``users``
    first_rows = order[starts]  # [U]

    # the layout: position t of each row (1 for the first), history length min(t, L),
    # history ending with the previous target
    position = np.arange(len(order)) - np.flatnonzero(starts)[user] + 1  # [R]
    expected = np.minimum(position, history.shape[1])
    bad = lengths[order] != expected
    chained = ~starts
    last = history[order[chained], lengths[order[chained]] - 1]
    bad[chained] |= last != targets[order[np.flatnonzero(chained) - 1]]
    if bad.any():
        row = int(order[np.flatnonzero(bad)[0]])
        raise ValueError(
            f"not RecBole's augmented sequential layout at row {row} (user id {int(users[row])}): each user's "
            f"rows must be in time order, the first with a length-1 history, each history ending with the "
            f"previous row's target")

    # each user's first item, then the targets: the first items shift row i by user[i] + 1
    n_users, n_rows = len(first_rows), len(order)
    at = np.arange(n_rows) + user + 1  # [R] position of each sorted row's target
    firsts = at[starts] - 1  # [U]
    items = np.empty(n_rows + n_users, dtype=np.int64)
    rows = np.empty(n_rows + n_users, dtype=np.int64)
    items[at], rows[at] = targets[order], order
    items[firsts], rows[firsts] = history[first_rows, 0], first_rows
    offsets = np.append(firsts, n_rows + n_users).astype(np.int64)
    return TrainingSequences(sorted_users[starts], offsets, items, rows)
