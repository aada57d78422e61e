"""Train and evaluate one model end to end (RecBole's ``run_recbole``, plugin-aware).

RecBole's own ``recbole.quick_start`` imports ray, so it is never imported
here. ``run_recbole_lpo`` returns RecBole's usual result dict and writes a
result JSON (see ``write_result``) beside it.
"""

import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from logging import getLogger

import numpy as np
import torch
from recbole.utils import init_logger, init_seed, set_color

from recbole_lpo.config import Config
from recbole_lpo.data.cache import prepare_data, store
from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.inference import load_data_and_model  # noqa: F401  (RecBole's API, plugin-aware)
from recbole_lpo.objective import attach_preference_objective, tag_item_tokens
from recbole_lpo.paths import PROJECT_ROOT
from recbole_lpo.utils import get_model, get_trainer


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1,
        world_size=-1, ip="localhost", port="5678", group_offset=0, resume=None):
    """Single process, or RecBole's multi-process (DDP) launch for ``nproc > 1``."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_lpo(model, dataset, config_file_list, config_dict, saved, resume=resume)
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size if world_size > 0 else nproc, "ip": ip,
                        "port": port, "nproc": nproc, "offset": group_offset})
    mp.spawn(_run_process, args=(model, dataset, config_file_list, config_dict, saved, queue, resume),
             nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _prepare(config, resume, logger):
    """Data, split, model and trainer for ``config``; every input check happens here."""
    data = prepare_data(config, check=check_interactions_per_user)
    logger.info(data.dataset)
    train_data, valid_data, test_data = data.train_data, data.valid_data, data.test_data
    split = head_tail_split(train_data.dataset, config["tail_ratio"])
    logger.info(f"head/tail split: {split.n_head} head, {split.n_tail} tail items "
                f"(tail_ratio={split.tail_ratio}, tail-set hash {split.tail_hash})")

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = create_model(config, train_data._dataset)
    logger.info(model)

    trainer = get_trainer(config["MODEL_TYPE"], config["model"], config)(config, model)
    try:
        if resume:
            trainer.resume_checkpoint(resume)
            logger.info(f"resumed from {resume} at epoch {trainer.start_epoch}")
        else:
            trainer.saved_model_file = unused_path(trainer.saved_model_file)
    except UserInputError:
        trainer.tensorboard.close()
        shutil.rmtree(trainer.tensorboard.log_dir, ignore_errors=True)
        raise
    store(data)  # every input check has passed
    return train_data, valid_data, test_data, split, trainer


def create_model(config, dataset):
    """``config['model']`` built on ``dataset`` (the training split), on ``config['device']``.

    A built-in model with ``preference_loss`` set gets the preference
    objective; the model records the data set's item tokens.
    """
    model = get_model(config["model"])(config, dataset)
    if config["preference_loss"] is not None and getattr(model, "preference_objective", None) is None:
        attach_preference_objective(model, config, dataset, config["preference_loss"])
    tag_item_tokens(model, dataset)
    return model.to(config["device"])


def check_interactions_per_user(dataset, config):
    """Leave-one-out needs, per user, one interaction per split (train, valid, test)."""
    split = config["eval_args"]["split"]
    if "LS" not in split:
        return
    needed = 3 if split["LS"] == "valid_and_test" else 2
    # before build(): one row per interaction (sequential augmentation happens in build)
    per_user = np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field]), minlength=dataset.user_num)[1:]
    short = int(((per_user > 0) & (per_user < needed)).sum())
    if not (per_user > 0).any():
        raise UserInputError(f"no user left in '{config['dataset']}' after filtering")
    if short:
        raise UserInputError(
            f"{short} users have fewer than {needed} interactions after filtering; leave-one-out "
            f"({split['LS']}) needs {needed} per user: set user_inter_num_interval: \"[{needed},inf)\"")


def start_logging(config):
    """RecBole's ``init_logger``, once per run even within one process.

    RecBole installs its handlers with ``logging.basicConfig``, which does
    nothing when the root logger already has handlers: a second run in the
    same process (hyper-parameter trials, tests) would log into the first
    run's file and leave an empty file of its own. The previous run's
    handlers are closed first; handlers that are not ours (pytest's) stay.
    """
    root = logging.getLogger()
    others = []
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if getattr(handler, "recbole_lpo_run", False):
            handler.close()
        else:
            others.append(handler)
    init_logger(config)
    for handler in root.handlers:
        handler.recbole_lpo_run = True
    for handler in others:
        root.addHandler(handler)


def _discard_run_files():
    """Close and delete the log file this run opened."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "recbole_lpo_run", False) and isinstance(handler, logging.FileHandler):
            handler.close()
            root.removeHandler(handler)
            if os.path.exists(handler.baseFilename):
                os.remove(handler.baseFilename)


def _run_process(rank, model, dataset, config_file_list, config_dict, saved, queue, resume):
    config_dict = dict(config_dict, local_rank=rank)
    run_recbole_lpo(model, dataset, config_file_list, config_dict, saved, queue=queue, resume=resume)


def run_recbole_lpo(model=None, dataset=None, config_file_list=None, config_dict=None,
                    saved=True, queue=None, resume=None):
    """Train ``model`` on ``dataset``, select on validation, test the best checkpoint.

    ``resume``: a checkpoint of an interrupted run of the same model and
    config; training continues from it (random streams included) and keeps
    writing that checkpoint.

    Returns RecBole's dict (``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``) plus ``result_file``, the path of
    the result JSON.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    start_logging(config)
    logger = getLogger()
    logger.info(sys.argv)
    if config.protocol_note:
        logger.info(config.protocol_note)
    logger.info(config)
    try:
        train_data, valid_data, test_data, split, trainer = _prepare(config, resume, logger)
    except UserInputError:
        _discard_run_files()  # bad input: leave no log or tensorboard files behind
        raise

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=saved,
                                   show_progress=config["show_progress"])

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    epochs_trained = max(trainer.train_loss_dict, default=-1) + 1  # counts resumed epochs too
    result = {
        "epochs_trained": epochs_trained,
        # early stopping counts evaluations since the best one
        "best_epoch": epochs_trained - 1 - trainer.cur_step * max(config["eval_step"], 1),
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    if getattr(trainer, "preference_history", None):
        result["preference_history"] = trainer.preference_history
    ranks = test_ranks(trainer, test_data, split)  # every process: each holds a shard of users
    if config["local_rank"] == 0:
        result["tail_user_share"] = ranks["tail_user_share"]
        logger.info(f"test users with a tail target: {100 * ranks['tail_user_share']:.2f} %")
        result["result_file"] = write_result(
            config, split, result, ranks, trainer.saved_model_file if saved else None)
        logger.info(f"result written to {result['result_file']}")
    if not config["single_spec"]:
        _close_distributed(trainer)
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


@torch.no_grad()
def test_ranks(trainer, eval_data, split):
    """Per evaluation target: its rank (1 = best) and the user's top-k diagnostics.

    Uses the trainer's own full-sort scoring (padding and, if configured,
    history masked exactly as in evaluation); ties count in the item's favour
    (rank = 1 + number of strictly higher scores). Per user and k in
    ``topk``: the tail share and the mean training-split popularity of the
    top-k list (their means are TailItemShare@k and AvgTrainPopularity@k),
    and ``tail_prob_gap``: the mean softmax probability of a tail item minus
    that of an item overall (paper Fig. 5).
    """
    trainer.model.eval()
    dataset = eval_data.dataset
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    topk = sorted(trainer.config["topk"])
    tail_mask = split.tail_mask
    counts = torch.as_tensor(split.item_counts, dtype=torch.float64)
    n_real_items = int(tail_mask.numel()) - 1  # padding excluded
    columns = []  # per batch: user, item, rank, tail_prob_gap, then tail share and popularity per k
    for batched_data in eval_data:
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batched_data)
        positive_u, positive_i = positive_u.to(scores.device), positive_i.to(scores.device)
        pos_scores = scores[positive_u, positive_i]  # [P]
        rank = 1 + (scores[positive_u] > pos_scores.unsqueeze(1)).sum(dim=1)
        scores = scores[positive_u].float().cpu()  # [P n_items], one row per target
        top_items = scores.topk(topk[-1], dim=1).indices  # [P kmax], as RecBole's evaluator
        tail_in_top = tail_mask[top_items].cumsum(dim=1)
        pop_in_top = counts[top_items].cumsum(dim=1)
        probs = torch.softmax(scores.double(), dim=1)
        gap = probs[:, tail_mask].mean(dim=1) - 1.0 / n_real_items
        users = interaction[uid_field].to(positive_u.device)[positive_u]
        columns.append([users.cpu(), positive_i.cpu(), rank.cpu(), gap]
                       + [tail_in_top[:, k - 1].double() / k for k in topk]
                       + [pop_in_top[:, k - 1] / k for k in topk])
    columns = [torch.cat(parts) for parts in zip(*columns)]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        columns = _gather_unique_rows(columns)
    users, items, ranks, gap = columns[:4]
    is_tail = tail_mask[items]
    per_k = columns[4:]
    out = {
        "user": dataset.id2token(uid_field, users.numpy()).tolist(),
        "item": dataset.id2token(iid_field, items.numpy()).tolist(),
        "rank": ranks.tolist(),
        "tail": is_tail.tolist(),
        "tail_prob_gap": [float(f"{v:.6g}") for v in gap.tolist()],
        "tail_user_share": float(is_tail.float().mean()) if len(is_tail) else 0.0,
    }
    for k, share, pop in zip(topk, per_k[: len(topk)], per_k[len(topk):]):
        out[f"tailitemshare@{k}"] = [round(v, 6) for v in share.tolist()]
        out[f"avgtrainpopularity@{k}"] = [round(v, 4) for v in pop.tolist()]
    return out


def _close_distributed(trainer):
    """Tear DDP down in order: the DDP wrapper (it holds the process group) first, then,
    once every process got here, the group. A process leaving while another is still
    in a collective, or a live DDP reducer at exit, aborts ("terminate called ...")."""
    import gc

    trainer.distributed_model = None
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _gather_unique_rows(columns):
    """All processes' rows (columns: user, item, ...), without the distributed sampler's padding repeats."""
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, [c.cpu() for c in columns])
    seen, rows = set(), []
    for part in gathered:
        for row in zip(*(c.tolist() for c in part)):
            if row[:2] not in seen:
                seen.add(row[:2])
                rows.append(row)
    rows.sort(key=lambda row: row[:2])
    return [torch.tensor(column) for column in zip(*rows)]


def machine_info(config):
    device = str(config["device"])
    info = {"host": platform.node(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "device": device,
            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(config["device"])
    return info


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return str(value)


def unused_path(path):
    """``path`` if free, else ``stem-1.ext``, ``stem-2.ext`` ...: never overwrite."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def write_result(config, split, result, ranks, checkpoint):
    """Write the run's result JSON and return its path.

    Holds the resolved config, seed, git commit, machine and device, the
    tail-set hash, overall and tail metrics (valid and test), the share of
    test users with a tail target, and per-user ranks of the test item.
    """
    result_dir = config["result_dir"] or "saved"
    os.makedirs(result_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = unused_path(os.path.join(result_dir, f"{config['model']}-{config['dataset']}-{stamp}.json"))
    record = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "git_commit": git_commit(),
        "machine": machine_info(config),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "tail_ratio": split.tail_ratio,
        "tail_set_hash": split.tail_hash,
        "n_head_items": split.n_head,
        "n_tail_items": split.n_tail,
        "tail_user_share": ranks["tail_user_share"],
        "epochs_trained": result["epochs_trained"],
        "best_epoch": result["best_epoch"],
        "best_valid_score": result["best_valid_score"],
        "best_valid_result": _jsonable(result["best_valid_result"]),
        "test_result": _jsonable(result["test_result"]),
        "checkpoint": checkpoint,
        "preference_history": _jsonable(result.get("preference_history", {})),
        "config": _jsonable(config.final_config_dict),
    }
    if config["save_per_user_ranks"]:
        record["per_user"] = {k: v for k, v in ranks.items() if k != "tail_user_share"}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path
