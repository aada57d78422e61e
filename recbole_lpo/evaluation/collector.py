"""The plugin's collector resources, one top-k per batch, and RecBole's Counter fix.

Resources the plugin ADDS (requested through a metric's ``metric_need``):

- ``data.tail_items``: ``[n_items]`` bool mask of the shared tail set;
- ``data.train_item_counts``: ``[n_items]`` int64 training-split counts of
  the shared split (RecBole's ``data.count_items``, its ``item_counter``,
  misses each user's first item and stays as RecBole sets it);
- ``rec.tail_topk``: ``[n_users, max_k + 1]``: for each top-k position, 1 if
  it holds a TAIL positive of that user; last column: the user's number of
  tail positives (RecBole's ``rec.topk`` layout, restricted to tail items).

RecBole's own resources keep RecBole's values. ``get_data_struct`` moves only
tensors to the CPU (RecBole calls ``.cpu()`` on the Counter behind
``data.count_items`` too and crashes its own popularity metrics). Under DDP it
also gathers the per-user rows of every process, so each process computes
every metric over all users; RecBole then averages identical values. (The
distributed sampler pads shards by repeating up to world_size - 1 users.)
"""

import copy

import torch
import torch.distributed as dist
from recbole.evaluator.collector import Collector

from recbole_lpo.data.head_tail import head_tail_split

_ORIGINAL = {}
_SPLIT_KEYS = ("data.tail_items", "data.train_item_counts", "rec.tail_topk")


def data_collect(self, train_data):
    """RecBole's ``data_collect`` plus the plugin's resources; RecBole's own keys and results unchanged."""
    _ORIGINAL["data_collect"](self, train_data)
    if not any(self.register.need(key) for key in _SPLIT_KEYS):
        return
    split = head_tail_split(train_data.dataset, self.config["tail_ratio"])
    self.tail_mask = split.tail_mask.to(self.device)
    if self.register.need("data.tail_items"):
        self.data_struct.set("data.tail_items", split.tail_mask.clone())
    if self.register.need("data.train_item_counts"):
        self.data_struct.set("data.train_item_counts", torch.tensor(split.item_counts, dtype=torch.int64))


def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
    """One top-k per batch for RecBole's keys (RecBole's tensors exactly), plus ``rec.tail_topk``.

    RecBole computes the top-k once for ``rec.items`` and again for
    ``rec.topk``, and counts each user's positives by summing an
    [n_users, n_items] matrix (most of a CPU evaluation). When only these keys
    are needed, the same top-k (same call, same ties) serves all three and the
    counts come from the positives' indices: the same tensors as RecBole's.
    Other keys (``rec.meanrank``, ``rec.score``, ``data.label``) go through
    RecBole's own code, unchanged.
    """
    if any(self.register.need(key) for key in ("rec.meanrank", "rec.score", "data.label")):
        _ORIGINAL["eval_batch_collect"](self, scores_tensor, interaction, positive_u, positive_i)
        topk_idx = None
    else:
        topk_idx = _topk(self, scores_tensor)
        if self.register.need("rec.items"):
            self.data_struct.update_tensor("rec.items", topk_idx)
        if self.register.need("rec.topk"):
            self.data_struct.update_tensor("rec.topk", _topk_hits(scores_tensor, topk_idx, positive_u, positive_i))
    if not self.register.need("rec.tail_topk"):
        return
    if topk_idx is None:
        topk_idx = _topk(self, scores_tensor)
    n_users, max_k = topk_idx.shape
    positive_u = positive_u.to(topk_idx.device)
    positive_i = positive_i.to(topk_idx.device)
    is_tail_pos = self.tail_mask.to(topk_idx.device)[positive_i]  # [P]
    # a positive (u, i) is a tail hit at position j when topk_idx[u, j] == i
    match = (topk_idx[positive_u] == positive_i.unsqueeze(1)) & is_tail_pos.unsqueeze(1)  # [P maxk]
    hits = torch.zeros(n_users, max_k, dtype=torch.int64, device=topk_idx.device)
    hits.index_add_(0, positive_u, match.long())
    n_tail_pos = torch.zeros(n_users, dtype=torch.int64, device=topk_idx.device)
    n_tail_pos.index_add_(0, positive_u, is_tail_pos.long())
    self.data_struct.update_tensor("rec.tail_topk", torch.cat([hits, n_tail_pos.unsqueeze(1)], dim=1))


def _topk(self, scores_tensor):
    return torch.topk(scores_tensor, max(self.topk), dim=-1)[1]  # [B maxk], RecBole's call


def _topk_hits(scores_tensor, topk_idx, positive_u, positive_i):
    """RecBole's ``rec.topk`` rows: 1 where the top-k item is a positive, then the positive count.

    RecBole marks positives in an int32 [B, n_items] matrix (a repeated pair
    counts once) and gathers it; this marks the (user, item) pairs directly.
    """
    n_users, n_items = scores_tensor.shape
    device = topk_idx.device
    pairs = torch.unique(positive_u.to(device) * n_items + positive_i.to(device))  # distinct (u, i)
    users, items = pairs // n_items, pairs % n_items
    hits = torch.zeros(topk_idx.shape, dtype=torch.long, device=device)
    hits.index_add_(0, users, (topk_idx[users] == items.unsqueeze(1)).long())
    counts = torch.bincount(users, minlength=n_users).unsqueeze(1)  # [B 1]
    return torch.cat((hits, counts), dim=1)  # int64, as RecBole's int32 hits cat its int64 sums


def _gather_across_processes(tensor):
    """Under DDP, every process's rows (each process evaluates a shard of users)."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, tensor.cpu())
    return torch.cat(gathered, dim=0)


def get_data_struct(self):
    """Fixes RecBole's ``.cpu()`` on the Counter of ``data.count_items`` (its popularity metrics crashed).

    RecBole's numbers on one process; under DDP, metrics over all users' rows
    (RecBole averages per-process values, which for ItemCoverage is no
    coverage of all users).
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    for key, value in self.data_struct._data_dict.items():
        if isinstance(value, torch.Tensor):
            if distributed and (key.startswith("rec.") or key == "data.label"):
                # metrics on all users in every process, so RecBole's averaging over
                # processes returns them exactly (coverage is no average of shards)
                value = _gather_across_processes(value)
            self.data_struct._data_dict[key] = value.cpu()
    returned_struct = copy.deepcopy(self.data_struct)
    for key in ["rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label", "rec.tail_topk"]:
        if key in self.data_struct:
            del self.data_struct[key]
    return returned_struct


def install():
    """Patch RecBole's ``Collector`` with the three functions above (idempotent)."""
    if _ORIGINAL:
        return
    for name, replacement in (
        ("data_collect", data_collect),
        ("eval_batch_collect", eval_batch_collect),
        ("get_data_struct", get_data_struct),
    ):
        _ORIGINAL[name] = getattr(Collector, name)
        setattr(Collector, name, replacement)
