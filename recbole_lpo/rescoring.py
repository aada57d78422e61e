"""Beyond the paper: a ranking-time tail bonus (``tail_score_bonus``; 0 = off, the paper).

With ``tail_score_bonus: b`` a model ranks by ``score + b`` for every tail item
(the training-split head/tail split, ``recbole_lpo.data.head_tail``) and by
its own score for head items. For a model trained with softmax cross-entropy
the score is a logit, so the bonus multiplies each tail item's softmax
probability by ``exp(b)`` before renormalising: a post-hoc logit adjustment
(Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) on the
binary head/tail split. Training is unchanged (the loss reads the backbone's
own logits); validation, test and ``recommend`` rank with the bonus, so early
stopping selects the epoch that is best WITH it.

``recbole_lpo.quick_start.create_model`` and
``recbole_lpo.inference.load_data_and_model`` attach it to any model
(``--model=SASRec --tail_score_bonus=1`` works as well as LPO4Rec);
``ranks_under_bonuses`` ranks the targets under many bonuses at once from
one scoring pass (``benchmarks/tail_bonus_sweep.py``).
"""

import math

import torch

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError


def tail_score_bonus(config):
    """The validated ``tail_score_bonus`` of ``config`` (0.0 when absent): a finite number."""
    value = config["tail_score_bonus"]
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserInputError(f"tail_score_bonus must be a finite number, got {value!r}")
    return float(value)


def add_tail_bonus(scores, tail_mask, bonus):
    """``scores`` [B N] (full sort over item ids) with ``bonus`` added in the tail columns.

    Masked scores (-inf, e.g. a user's history) stay -inf; padding (id 0) is
    never tail.
    """
    return scores + bonus * tail_mask.to(device=scores.device, dtype=scores.dtype)  # [B N]


def add_tail_bonus_to_items(scores, items, tail_mask, bonus):
    """``scores`` [B] of ``items`` [B] with ``bonus`` added where the item is tail."""
    return scores + bonus * tail_mask.to(scores.device)[items].to(scores.dtype)  # [B]


def attach_tail_bonus(model, config, dataset):
    """Make ``model``'s ``predict`` and ``full_sort_predict`` rank with the config's bonus.

    Nothing happens at bonus 0. The model's parameters and checkpoint keys do
    not change; ``model.tail_score_bonus`` records the value. Returns the bonus.
    """
    bonus = tail_score_bonus(config)
    model.tail_score_bonus = bonus
    if bonus == 0.0:
        return bonus
    tail_mask = head_tail_split(dataset, config["tail_ratio"]).tail_mask  # [n_items] bool
    full_sort_predict, predict = model.full_sort_predict, model.predict
    item_field = config["ITEM_ID_FIELD"]

    def full_sort_predict_with_bonus(interaction):
        return add_tail_bonus(full_sort_predict(interaction), tail_mask, bonus)

    def predict_with_bonus(interaction):
        return add_tail_bonus_to_items(predict(interaction), interaction[item_field], tail_mask, bonus)

    model.full_sort_predict = full_sort_predict_with_bonus
    model.predict = predict_with_bonus
    return bonus


def ranks_under_bonuses(scores, pos_items, tail_mask, bonuses):
    """Rank (1 = best) of each row's target under each bonus, from one score matrix.

    ``scores`` [P N]: one row per target, full-sort scores WITHOUT a bonus
    (history already masked to -inf, as the evaluator does); ``pos_items``
    [P]; ``bonuses``: floats. Returns a LongTensor [len(bonuses) P]; ties
    count in the target's favour (rank = 1 + number of strictly higher
    scores), as ``recbole_lpo.quick_start.test_ranks``.

    The bonus keeps the order within head items and within tail items, so
    each group is sorted once and every bonus costs one binary search per
    row; comparisons are made on the same float values ``score + bonus``
    that ``add_tail_bonus`` ranks.
    """
    tail = tail_mask.to(scores.device)
    head_sorted = scores[:, ~tail].sort(dim=1).values  # [P Nh] ascending
    tail_sorted = scores[:, tail].sort(dim=1).values  # [P Nt] ascending
    pos_scores = scores.gather(1, pos_items.unsqueeze(1))  # [P 1]
    pos_tail = tail[pos_items].unsqueeze(1)  # [P 1]
    ranks = []
    for bonus in bonuses:
        target = torch.where(pos_tail, pos_scores + bonus, pos_scores)  # [P 1], as add_tail_bonus computes it
        above_head = head_sorted.shape[1] - torch.searchsorted(head_sorted, target, right=True)  # [P 1]
        above_tail = tail_sorted.shape[1] - torch.searchsorted(tail_sorted + bonus, target, right=True)  # [P 1]
        ranks.append(1 + (above_head + above_tail).squeeze(1))
    return torch.stack(ranks)  # [len(bonuses) P]


def tail_share_under_bonuses(scores, tail_mask, bonuses, k):
    """Share of tail items in each row's top ``k`` under each bonus: FloatTensor [len(bonuses) P].

    ``scores`` [P N] as for ``ranks_under_bonuses``. The top k under any bonus
    is drawn from the top k head and the top k tail items, so only those are
    merged per bonus (its mean over users is TailItemShare@k; ties between a
    head and a tail score may resolve otherwise than one ``topk`` over all).
    """
    tail = tail_mask.to(scores.device)
    top_head = scores[:, ~tail].topk(min(k, int((~tail).sum())), dim=1).values  # [P kh]
    top_tail = scores[:, tail].topk(min(k, int(tail.sum())), dim=1).values  # [P kt]
    shares = []
    for bonus in bonuses:
        merged = torch.cat([top_head, top_tail + bonus], dim=1)  # [P kh+kt]
        chosen = merged.topk(k, dim=1).indices  # [P k]
        shares.append((chosen >= top_head.shape[1]).float().mean(dim=1))
    return torch.stack(shares)  # [len(bonuses) P]
