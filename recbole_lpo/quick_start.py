"""Train and evaluate one model end to end (RecBole's ``run_recbole``, plugin-aware).

RecBole's own ``recbole.quick_start`` imports ray, so it is never imported
here. ``run_recbole_lpo`` returns RecBole's usual result dict and writes a
result JSON (``recbole_lpo.records.write_result``) beside it.
"""

import gc
import logging
import os
import shutil
import sys
from logging import getLogger

import numpy as np
import torch
import torch.multiprocessing as mp
from recbole.utils import init_logger, init_seed, set_color

from recbole_lpo.checkpoint import tag_model
from recbole_lpo.config import Config
from recbole_lpo.data.cache import prepare_data, store
from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import Interrupted, UserInputError
from recbole_lpo.inference import load_data_and_model  # noqa: F401  (RecBole's API, plugin-aware)
from recbole_lpo.objective import attach_preference_objective
from recbole_lpo.records import new_run_id, remove_stale_partials, unused_path, write_result
from recbole_lpo.rescoring import attach_tail_bonus
from recbole_lpo.utils import get_model, get_trainer


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1,
        world_size=-1, ip="localhost", port="5678", group_offset=0, resume=None, cmd_args=None):
    """Single process, or RecBole's multi-process (DDP) launch for ``nproc > 1``."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UserInputError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if nproc == 1 and world_size <= 0:
        return run_recbole_lpo(model, dataset, config_file_list, config_dict, saved, resume=resume,
                               cmd_args=cmd_args)
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size if world_size > 0 else nproc, "ip": ip,
                        "port": port, "nproc": nproc, "offset": group_offset,
                        "run_id": new_run_id()})  # one checkpoint name for all processes
    mp.spawn(_run_process, args=(model, dataset, config_file_list, config_dict, saved, queue, resume, cmd_args),
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
    for folder in (trainer.checkpoint_dir, config["result_dir"] or "saved"):
        for path in remove_stale_partials(folder):
            logger.info(f"removed {path}: a write that was killed")
    # this run's own name: RecBole's is <model>-<time>.pth, the same for runs started in one second
    trainer.saved_model_file = unused_path(
        os.path.join(trainer.checkpoint_dir, f"{config['model']}-{config['run_id']}.pth"))
    try:
        if resume:
            trainer.resume_checkpoint(resume)
            logger.info(f"resumed from {resume} at epoch {trainer.start_epoch}, "
                        f"continuing in {trainer.saved_model_file}")
    except UserInputError:
        trainer.tensorboard.close()
        shutil.rmtree(trainer.tensorboard.log_dir, ignore_errors=True)
        raise
    store(data)  # every input check has passed
    return train_data, valid_data, test_data, split, trainer


def create_model(config, dataset):
    """``config['model']`` built on ``dataset`` (the training split), on ``config['device']``.

    A built-in model with ``preference_loss`` set gets the preference
    objective; any model with ``tail_score_bonus`` set ranks with it
    (``recbole_lpo.rescoring``); the model records the data set's item tokens.
    """
    model = get_model(config["model"])(config, dataset)
    if config["preference_loss"] is not None and getattr(model, "preference_objective", None) is None:
        attach_preference_objective(model, config, dataset, config["preference_loss"])
    attach_tail_bonus(model, config, dataset)
    tag_model(model, dataset)
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


def _missing_folders(config):
    """The output folders a run may create that do not exist yet (deepest first)."""
    candidates = ["log", os.path.join("log", config["model"]), "log_tensorboard", config["checkpoint_dir"],
                  config["result_dir"] or "saved", config["data_cache_dir"]]
    return sorted({os.path.abspath(c) for c in candidates if c and not os.path.exists(c)}, key=len, reverse=True)


def _remove_empty(folders):
    """Remove each of ``folders`` (deepest first) that is empty: bad input leaves no empty folder."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            pass


def _interrupted_message(trainer, config, saved):
    path = trainer.saved_model_file
    if not saved or trainer.last_saved_epoch is None or not os.path.isfile(path):
        return "training stopped before its first checkpoint was saved; nothing to resume"
    return (f"last checkpoint {path} (epoch {trainer.last_saved_epoch}); continue with: python run_recbole_lpo.py "
            f"--model={config['model']} --dataset={config['dataset']} --resume={path} (and the same settings)")


def _run_process(rank, model, dataset, config_file_list, config_dict, saved, queue, resume, cmd_args):
    config_dict = dict(config_dict, local_rank=rank)
    run_recbole_lpo(model, dataset, config_file_list, config_dict, saved, queue=queue, resume=resume,
                    cmd_args=cmd_args)


def run_recbole_lpo(model=None, dataset=None, config_file_list=None, config_dict=None,
                    saved=True, queue=None, resume=None, cmd_args=None):
    """Train ``model`` on ``dataset``, select on validation, test the best checkpoint.

    ``resume``: a checkpoint of an interrupted run of the same model, data
    and settings (``epochs`` and ``stopping_step`` may change); training
    continues from it (random streams included) into a NEW checkpoint, never
    the file given. Ctrl-C during training raises ``Interrupted`` naming the
    last checkpoint. ``cmd_args``: ``["--key=value", ...]`` overrides
    above every other source (the command line's).

    Returns RecBole's dict (``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``) plus ``result_file``, the path of
    the result JSON, and ``checkpoint``, the best model's file (None unless
    ``saved``).
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, cmd_args=cmd_args)
    config["run_id"] = config["run_id"] or new_run_id()  # also makes RecBole's log file name unique
    init_seed(config["seed"], config["reproducibility"])
    new_folders = _missing_folders(config)
    start_logging(config)
    logger = getLogger()
    logger.info(sys.argv)
    if config.protocol_note:
        logger.info(config.protocol_note)
    try:
        train_data, valid_data, test_data, split, trainer = _prepare(config, resume, logger)
    except UserInputError:
        _discard_run_files()  # bad input: leave no log or tensorboard files behind
        _remove_empty(new_folders)
        raise
    logger.info(config)  # after every input check: an error line is never buried under it

    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"])
        test_result = trainer.evaluate(test_data, load_best_model=saved,
                                       show_progress=config["show_progress"])
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_message(trainer, config, saved)) from None
    finally:
        trainer.tensorboard.close()  # RecBole's trainer never does: its flush thread would outlive the run

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
        "checkpoint": trainer.saved_model_file if saved else None,
    }
    if getattr(trainer, "preference_history", None):
        result["preference_history"] = trainer.preference_history
    ranks = test_ranks(trainer, test_data, split)  # every process: each holds a shard of users
    if config["local_rank"] == 0:
        result["tail_user_share"] = ranks["tail_user_share"]
        logger.info(f"test users with a tail target: {100 * ranks['tail_user_share']:.2f} %")
        result["result_file"] = write_result(config, split, result, ranks, result["checkpoint"])
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
