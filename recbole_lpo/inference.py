"""Inference: load a trained checkpoint back and recommend top-k items per user.

``load_data_and_model`` is RecBole's ``recbole.quick_start.load_data_and_model``
made plugin-aware (RecBole's cannot find ``LPO4Rec`` and friends, and its
module imports ray); ``recommend`` turns the model's full-sort scores into
item tokens, the data set's own vocabulary, for the command line
``python -m recbole_lpo.recommend``.

Preference-trained models (``preference_loss`` set: LPO4Rec, DPO4Rec, ...,
or ``--model=GRU4Rec --preference_loss=lpo``) load as their RecBole
backbone. The objective only shapes training: it owns no parameters and no
persistent buffers, so the checkpoint's ``state_dict`` has exactly the
backbone's keys, and ``forward``/``full_sort_predict`` are the backbone's,
with the run's ``tail_score_bonus`` (``recbole_lpo.rescoring``) added to the
tail items' scores when it is not 0, as in the run's own evaluation.
Building the backbone also means DPO4Rec/SDPO4Rec never read their frozen
reference (``ref_model_path``): a policy loads after that file is deleted.
"""

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import ModelType, init_seed

from recbole_lpo.checkpoint import backbone_class, item_token_hash, one_line, read_checkpoint, recorded
from recbole_lpo.checks import check_dataset_exists
from recbole_lpo.data.cache import prepare_data
from recbole_lpo.errors import UserInputError
from recbole_lpo.rescoring import attach_tail_bonus
from recbole_lpo.utils import get_model

PAD_TOKEN = "[PAD]"  # RecBole's padding token, internal id 0 of every token field


def inference_model_class(config):
    """The class to rebuild a checkpoint's model with (see the module docstring).

    Without a preference loss: the model class itself (plugin first). With
    one: its RecBole backbone (``LPO4Rec`` -> ``SASRec``), whose parameters
    are exactly the trained model's and which needs no reference model.
    """
    model_class = get_model(config["model"])
    if config["preference_loss"] is not None:
        return backbone_class(model_class)
    return model_class


def _prepare_config(config):
    """Adapt the training config to this process: CPU if its GPU is absent, one
    process (a DDP run's config would ask the loaders for a distributed sampler)."""
    device = torch.device(config["device"] or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        config["device"], config["use_gpu"] = torch.device("cpu"), False
    config["single_spec"], config["local_rank"] = True, 0
    return config


def load_data_and_model(model_file):
    r"""Load the data and the trained model of a checkpoint, ready for inference.

    Like RecBole's ``load_data_and_model``, but plugin-aware:

    - the data set is rebuilt from the checkpoint's own config
      (``checkpoint["config"]``), seeded as training was, so ids, splits and
      loaders are the ones the model was trained and tested on;
    - the model class comes from ``recbole_lpo.utils.get_model`` (plugin
      first); a model trained with a preference loss is rebuilt as its
      backbone (``inference_model_class``), so DPO4Rec/SDPO4Rec load even if
      their reference checkpoint has since been deleted, and
      ``type(model)`` is e.g. ``SASRec`` while ``config["model"]`` still
      names ``LPO4Rec``;
    - the item tokens recorded in the checkpoint must match the rebuilt data
      (a changed data file would silently shuffle the item ids otherwise).

    The model is in eval mode on the config's device (CPU when that GPU is
    absent). Logging is left unconfigured (call ``recbole.utils.init_logger``
    for RecBole's log file), so the command line stays quiet.

    Security: the checkpoint is unpickled with ``weights_only=False``
    (``recbole_lpo.checkpoint.trusted_load``; RecBole checkpoints hold a pickled
    ``Config``), which can run code: load only files you or a run you trust
    wrote.

    Args:
        model_file (str): path of a ``.pth`` checkpoint written by
            ``run_recbole_lpo`` or RecBole's trainer.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``,
        ``dataset`` being the whole filtered data set.

    Raises:
        UserInputError: the file is missing, unreadable, not a RecBole
            checkpoint, or does not fit its rebuilt data and model.
    """
    checkpoint = read_checkpoint(model_file)
    config = _prepare_config(checkpoint["config"])
    check_dataset_exists(config["data_path"], config["dataset"])
    init_seed(config["seed"], config["reproducibility"])
    data = prepare_data(config)  # read from the data cache, never written here
    dataset, train_data, valid_data, test_data = data.dataset, data.train_data, data.valid_data, data.test_data

    tokens = recorded(checkpoint, "item_token_hash")
    if tokens is not None and tokens != item_token_hash(dataset):
        raise UserInputError(
            f"checkpoint '{model_file}' was trained on other items than data set '{config['dataset']}' "
            f"in {config['data_path']} now holds (its atomic files changed since training)")

    init_seed(config["seed"], config["reproducibility"])
    model_class = inference_model_class(config)
    model = model_class(config, train_data._dataset).to(config["device"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:  # missing/unexpected keys, shape mismatches
        raise UserInputError(
            f"checkpoint '{model_file}' does not fit the {model_class.__name__} built from its config: "
            f"{one_line(error)}") from error
    model.load_other_parameter(checkpoint.get("other_parameter"))
    attach_tail_bonus(model, config, train_data._dataset)  # ranks as in training's evaluation
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data


# --- recommending ---------------------------------------------------------

def user_ids(dataset, user_tokens):
    """Internal ids [U] of ``user_tokens``; ``UserInputError`` for an unknown one."""
    uid_field = dataset.uid_field
    token2id = dataset.field2token_id[uid_field]
    ids = []
    for token in user_tokens:
        if token == PAD_TOKEN or token not in token2id:
            known = dataset.field2id_token[uid_field][1:]  # [0] is the padding token
            examples = ", ".join(map(str, known[:5]))
            raise UserInputError(
                f"unknown user '{token}' in data set '{dataset.dataset_name}' "
                f"({len(known)} users, e.g. {examples})")
        ids.append(token2id[token])
    return torch.tensor(ids, dtype=torch.long)


def _user_rows(dataset, uid):
    """Row indices [R] of ``uid`` in ``dataset.inter_feat``, oldest first.

    The rows are already in time order under RecBole's ``order: TO``; the
    stable sort by time keeps that order among equal timestamps and fixes a
    randomly ordered (``RO``) data set.
    """
    inter_feat = dataset.inter_feat
    rows = (inter_feat[dataset.uid_field] == uid).nonzero(as_tuple=True)[0]  # [R]
    time_field = dataset.time_field
    if time_field is not None and time_field in inter_feat and len(rows) > 1:
        order = np.argsort(inter_feat[time_field][rows].numpy(), kind="stable")
        rows = rows[torch.from_numpy(order)]
    return rows


def _seen_items(dataset, rows, list_field=None):
    """Distinct item ids [S] of the user's interactions (padding 0 dropped)."""
    inter_feat = dataset.inter_feat
    items = [inter_feat[dataset.iid_field][rows]]  # [R] targets
    if list_field is not None:  # sequential rows: the first item only appears in a history
        items.append(inter_feat[list_field][rows].flatten())  # [R*L]
    items = torch.cat(items).unique()
    return items[items != 0]


def _latest_sequence_row(dataset, model, rows, token):
    """The model's history input for one user: the last ``MAX_ITEM_LIST_LENGTH``
    of ALL their items, the last one included, as a dict field -> [L, ...].

    RecBole's sequential data set holds one augmented row per target item:
    ``item_id_list`` = the up to L items before it, ``item_id`` = the item.
    The user's latest row (the test row under leave-one-out) thus has the
    last item as its *target*, not in its history (RecBole's case study
    scores exactly that row: it re-predicts the test item). To recommend
    what comes after the last known interaction, the latest row's target is
    appended to its history and the oldest item dropped, for every list
    field (items, timestamps, ...), as ``data_augmentation`` builds lists.
    The whole data set is used, not the train split, which stops two items
    before the end under leave-one-out.
    """
    if len(rows) == 0:
        raise UserInputError(f"user '{token}' has no item sequence in the data set (one interaction only)")
    inter_feat, suffix = dataset.inter_feat, dataset.config["LIST_SUFFIX"]
    max_len, last = model.max_seq_length, rows[-1]
    length = int(inter_feat[model.ITEM_SEQ_LEN][last])
    fields = {}
    for field in inter_feat.columns:
        if field + suffix not in inter_feat.columns:
            continue
        history = inter_feat[field + suffix][last][:length]  # [len, ...]
        sequence = torch.cat([history, inter_feat[field][last].unsqueeze(0)])[-max_len:]  # [<=L, ...]
        padded = torch.zeros((max_len,) + tuple(sequence.shape[1:]), dtype=sequence.dtype)  # [L, ...]
        padded[: len(sequence)] = sequence  # right padding, as RecBole pads
        fields[field + suffix] = padded
    fields[model.ITEM_SEQ_LEN] = torch.tensor(min(length + 1, max_len))
    return fields


def _model_input(model, dataset, uids, user_tokens):
    """The model's input Interaction for users ``uids`` [U] and each one's seen items."""
    sequential = model.type == ModelType.SEQUENTIAL
    list_field = model.ITEM_SEQ if sequential else None
    fields, seen = {dataset.uid_field: uids}, []
    per_user = []
    for uid, token in zip(uids.tolist(), user_tokens):
        rows = _user_rows(dataset, uid)
        seen.append(_seen_items(dataset, rows, list_field))
        if sequential:
            per_user.append(_latest_sequence_row(dataset, model, rows, token))
    if sequential:
        for field in per_user[0]:
            fields[field] = torch.stack([row[field] for row in per_user])  # [U L ...] / [U]
    # user features, if the data set has them (RecBole's case study joins them too)
    return dataset.join(Interaction(fields)), seen


@torch.no_grad()
def full_sort_scores(model, dataset, user_tokens):
    """Scores [U N] of every item for each user (N = ``dataset.item_num``).

    Sequential models score the item after each user's last known one (see
    ``_latest_sequence_row``). Nothing is masked here, padding included.
    Returns ``(scores, seen)``, ``seen[u]`` the item ids [S] user u has
    interacted with in the whole data set.
    """
    user_tokens = [str(token) for token in user_tokens]
    uids = user_ids(dataset, user_tokens)  # [U]
    interaction, seen = _model_input(model, dataset, uids, user_tokens)
    device = next(model.parameters(), torch.empty(0)).device  # where the model is now
    interaction = interaction.to(device)
    model.eval()
    try:
        scores = model.full_sort_predict(interaction)
    except NotImplementedError:  # score every (user, item) pair, as RecBole's case study does
        interaction = interaction.repeat_interleave(dataset.item_num)
        interaction.update(dataset.get_item_feature().to(device).repeat(len(uids)))
        scores = model.predict(interaction)
    return scores.view(len(uids), dataset.item_num).float().cpu(), seen


def recommend(model, dataset, user_tokens, k=10, exclude_history=False):
    """Top-``k`` item tokens for each user, best first.

    Args:
        model: a loaded model (``load_data_and_model``), any RecBole type.
        dataset: the whole data set from ``load_data_and_model``.
        user_tokens (str or list of str): users, as tokens of the atomic files.
        k (int): list length; fewer items come back only if fewer are left.
        exclude_history (bool): drop every item the user has interacted with
            anywhere in the data set (train, valid and test interactions).
            Off by default: with repeat consumption a seen item is a fair
            next item, and RecBole's sequential evaluation keeps them too.

    Returns:
        dict: user token -> list of up to ``k`` distinct item tokens. The
        padding item is never recommended.

    Raises:
        UserInputError: an unknown user, or ``k < 1``.
    """
    if isinstance(user_tokens, str):
        user_tokens = [user_tokens]
    user_tokens = list(dict.fromkeys(str(token) for token in user_tokens))  # unique, in order
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserInputError(f"k must be a positive integer, got {k!r}")
    if not user_tokens:
        return {}
    scores, seen = full_sort_scores(model, dataset, user_tokens)  # [U N]
    allowed = torch.ones_like(scores, dtype=torch.bool)  # [U N]
    allowed[:, 0] = False  # padding
    if exclude_history:
        for row, items in enumerate(seen):
            allowed[row, items] = False
    scores = scores.masked_fill(~allowed, -torch.inf)
    top = torch.topk(scores, min(k, dataset.item_num), dim=1).indices  # [U k]
    result = {}
    for row, token in enumerate(user_tokens):
        items = [i for i in top[row].tolist() if allowed[row, i]]  # drop masked items topk had to fill in
        result[token] = dataset.id2token(dataset.iid_field, items).tolist()
    return result
