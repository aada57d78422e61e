"""Run a grid: resolve each run's config and cache key, train what is missing.

Each run trains in its own process through ``run_recbole_lpo`` (early stopping
on the data set's ``valid_metric``, best checkpoint for test), ``jobs`` at a
time with ``threads`` threads each; a run waits for the runs whose checkpoints
it loads (DPO's reference, CITIES's base model). Finished runs land in the
cache; a finished key is never trained again. A run in training holds a lock
(``<cache>/running/<key>``, the worker's pid), so two grid commands can share a
cache: each waits for the other's runs instead of training them twice.

A run keeps its checkpoints in ``<cache>/checkpoints/<key>/``. A run that did
not finish (its process killed: a session's end, a reboot, Ctrl-C) resumes
on the next call from its newest unfinished checkpoint there, through the
trainer's ``resume_checkpoint``: from its best epoch so far, replaying the
epochs after it with the same random state, so it ends with the metrics of an
uninterrupted run. ``<key>/attempts.json`` logs each attempt's start and, for
an interrupted one, its end (the last write to the run's log), so the cost
the report sums counts every attempt.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from logging import getLogger
from pathlib import Path

from recbole_lpo.checkpoint import read_checkpoint
from recbole_lpo.config import Config
from recbole_lpo.errors import UserInputError
from recbole_lpo.paths import PROJECT_ROOT
from recbole_lpo.records import code_version, read_result
from recbole_lpo.reproduce import bonus as tail_bonus
from recbole_lpo.reproduce.cache import RunCache, config_fingerprint, run_key
from recbole_lpo.reproduce.catalogue import load_profile
from recbole_lpo.runtime import MALLOC_ENV  # the workers keep freed memory (runtime.py)



# what a grid worker records of its run's cost
TIMING = ("threads", "train_seconds", "bonus_seconds", "earlier_attempts_seconds", "resumed_from")


@dataclass
class Resolved:
    run: object
    key: str
    config_dict: dict  # what the worker trains with (dependencies' checkpoints still as run keys)
    config_files: list
    code: str  # code_version of the model when the key was made
    fingerprint: dict  # the config part of the key


def base_overrides(run, user_overrides):
    """Profile < experiment < the user's --set, then the seed."""
    exp = run.experiment
    config = dict(load_profile(run.profile))
    config.update(exp.overrides)
    config.update(user_overrides or {})
    config.update({"seed": run.seed, "show_progress": False})
    return config


def resolve(runs, user_overrides=None, config_files=None):
    """A ``Resolved`` per run, in order; dependencies' checkpoints named ``run:<key>``."""
    keys, resolved = {}, []
    for run in runs:
        exp = run.experiment
        config_dict = base_overrides(run, user_overrides)
        for config_key, label in exp.needs.items():
            dep = next(d for d in run.dependencies() if d.label == label)
            config_dict[config_key] = f"run:{keys[dep]}"
        config = Config(model=exp.model, dataset=run.dataset, config_file_list=config_files,
                        config_dict=config_dict)
        code = code_version(exp.model)
        fingerprint = config_fingerprint(config.final_config_dict)
        keys[run] = run_key(fingerprint, code)
        resolved.append(Resolved(run, keys[run], config_dict, list(config_files or []), code, fingerprint))
    return resolved


def adopt(paths, resolved, cache_root, log=print, dry_run=False):
    """Put runs trained outside the grid into its cache; returns how many were added.

    ``paths``: result JSONs of ``run_recbole_lpo`` (the command line,
    ``benchmarks/head_to_head.py``; ``.json`` or ``.json.gz``), and
    optionally their checkpoints' tail-bonus records (``*.bonus.json.gz`` of
    ``benchmarks/tail_bonus_sweep.py --save-records``, matched by checkpoint
    name). A run is adopted under the key of the planned run with the same
    resolved config and code version, i.e. the run the grid would have
    trained; any other is logged with the reason and left out. A run that
    loads another run's checkpoint (DPO's reference, CITIES's base) is keyed
    by that run's key, not by the path it loaded: a grid run (``--export``)
    records the key and is adopted; one trained outside the grid is not.
    ``dry_run``: only log what would be adopted.
    """
    cache = RunCache(cache_root)
    by_key = {item.key: item for item in resolved}
    bonus_files = {}  # checkpoint name -> records file
    for path in [p for p in paths if str(p).endswith(tail_bonus.RECORDS_SUFFIX)]:
        bonus_files[tail_bonus.load_records(path)[0]["checkpoint"]] = path
    adopted = 0
    for path in [p for p in paths if not str(p).endswith(tail_bonus.RECORDS_SUFFIX)]:
        record = read_result(path)
        code = record.get("code_version") or code_version(record["model"], record.get("git_commit"))
        fingerprint = json.loads(json.dumps(config_fingerprint(record["config"]), default=str))
        # a grid run that loaded another run's checkpoint: its spec names that run ("run:<key>")
        spec = (record.get("reproduce") or {}).get("config_dict") or {}
        fingerprint.update({k: v for k, v in spec.items() if k in fingerprint and str(v).startswith("run:")})
        item = by_key.get(run_key(fingerprint, code))
        name = os.path.basename(path)
        if item is None:
            log(f"not adopted {name}: {_why_not_planned(record, fingerprint, code, resolved)}")
            continue
        where = f"{item.run.label} / {item.run.dataset} / seed {item.run.seed}"
        ranks_file = bonus_files.get(os.path.basename(record.get("checkpoint") or ""))
        if dry_run:
            state = "cached" if cache.get(item.key) is not None else "would adopt"
            log(f"{state}: {name}{' and ' + os.path.basename(ranks_file) if ranks_file else ''} as {where}")
            continue
        if ranks_file is not None and not cache.bonus_path(item.key).exists():
            cache.bonus_path(item.key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ranks_file, cache.bonus_path(item.key))
            log(f"adopted {os.path.basename(ranks_file)} for {where}")
        if cache.get(item.key) is not None:
            log(f"already cached {where}: {name} not adopted")
            continue
        timing = {k: v for k, v in (record.get("reproduce") or {}).items() if k in TIMING}  # an exported grid run's
        cache.put(item.key, dict(record, reproduce=dict(_spec(item), **timing), adopted_from=name))
        adopted += 1
        log(f"adopted {name} as {where} (key {item.key})")
    return adopted


def export(resolved, cache_root, folder, log=print):
    """Copy the planned runs' cached results out for ``adopt``: ``<folder>/<dataset>/<label>-seed<seed>-<key>.json.gz``
    (machine paths made relative to the checkout, see ``portable``) and their checkpoints' tail-bonus
    records ``<checkpoint>.bonus.json.gz``; an existing file is kept, never overwritten. Returns the
    files written."""
    cache = RunCache(cache_root)
    roots = [PROJECT_ROOT, *(p.parent for p in Path(cache_root).resolve().parents if p.name == "saved")]
    written = []
    for item in resolved:
        record = cache.get(item.key)
        if record is None:
            continue
        where = Path(folder) / item.run.dataset
        where.mkdir(parents=True, exist_ok=True)
        label = re.sub(r"[^A-Za-z0-9.=-]+", "_", item.run.label).strip("_")
        targets = [(where / f"{label}-seed{item.run.seed}-{item.key}.json.gz", portable(record, roots), None)]
        ranks = cache.bonus_path(item.key)
        if ranks.is_file():
            targets.append((where / (Path(record["checkpoint"]).stem + tail_bonus.RECORDS_SUFFIX), None, ranks))
        for path, data, source in targets:
            if path.exists():
                log(f"kept {path} (exists)")
                continue
            if source is not None:
                shutil.copyfile(source, path)
            else:
                with gzip.GzipFile(path, "xb", mtime=0) as f:  # mode x: never overwrite
                    f.write(json.dumps(data).encode("utf-8"))
            written.append(path)
            log(f"exported {item.run.label} / {item.run.dataset} / seed {item.run.seed}: {path}")
    return written


def portable(value, roots):
    """``value`` with every absolute path under one of ``roots`` made relative to it, and any other
    absolute path cut to its file name: no machine paths in files kept in the repository."""
    if isinstance(value, dict):
        return {k: portable(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, roots) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        for root in roots:
            root = str(root).rstrip(os.sep) + os.sep
            if value.startswith(root):
                return value[len(root):]
        return os.path.basename(value)
    return value


def _why_not_planned(record, fingerprint, code, resolved):
    """Why a result JSON matches no planned run, in one line."""
    if code is None:
        return "its code version is unknown (trained with uncommitted changes, or outside this repository)"
    same = [item for item in resolved if item.run.experiment.model == record["model"]
            and item.run.dataset == record["dataset"] and item.run.seed == record["seed"]]
    if not same:
        return (f"no planned run of {record['model']} on {record['dataset']} with seed {record['seed']} "
                "(see --datasets, --groups, --labels, --seeds, --profile)")
    planned = [(item, json.loads(json.dumps(item.fingerprint, default=str))) for item in same]
    if any(fp == fingerprint for _, fp in planned):
        item = next(item for item, fp in planned if fp == fingerprint)
        return f"trained with other code ({code[:12]}; the grid runs {item.code[:12]})"
    item, fp = min(planned, key=lambda pair: sum(pair[1].get(k) != fingerprint.get(k)
                                                  for k in set(pair[1]) | set(fingerprint)))
    diff = sorted(k for k in set(fp) | set(fingerprint) if fp.get(k) != fingerprint.get(k))
    shown = ", ".join(f"{k}={fingerprint.get(k)!r} (grid: {fp.get(k)!r})" for k in diff[:4])
    return f"its settings differ from the nearest planned run '{item.run.label}': {shown}" + (
        f" and {len(diff) - 4} more" if len(diff) > 4 else "")


def _spec(item):
    """What the cache records of the grid run a record stands for."""
    return {"label": item.run.label, "dataset": item.run.dataset, "seed": item.run.seed,
            "profile": item.run.profile, "config_dict": item.config_dict, "key": item.key}


def execute(resolved, cache_root, jobs=1, threads=1, log=print, poll=1.0):
    """Train every resolved run missing from the cache, at most ``jobs`` trainings on this cache
    at once (counting other grid commands' runs). Returns {key: error} of failed runs."""
    cache = RunCache(cache_root)
    todo, failed, running = [], {}, {}
    slot_wait_logged = False
    for item in resolved:
        if cache.get(item.key) is None and item.key not in {t.key for t in todo}:
            todo.append(item)
    unique = {item.key for item in resolved}
    log(f"{len(unique)} runs, {len(unique) - len(todo)} cached, {len(todo)} to train "
        f"({jobs} at a time, {threads} threads each)")
    needs_of = {item.key: [v[4:] for v in item.config_dict.values() if isinstance(v, str) and v.startswith("run:")]
                for item in resolved}
    while todo or running:
        for key, (proc, item, started, log_file, _) in list(running.items()):
            if proc.poll() is None:
                continue
            log_file.close()
            _unlock(cache, key)
            del running[key]
            if proc.returncode == 0 and cache.get(key) is not None:
                log(f"done {item.run.label} / {item.run.dataset} / seed {item.run.seed} "
                    f"in {time.time() - started:.0f} s")
            else:
                failed[key] = f"exit {proc.returncode}, see {log_file.name}"
                log(f"FAILED {item.run.label} / {item.run.dataset} / seed {item.run.seed}: {failed[key]}")
        waiting = False  # on a run another grid command is training in the same cache
        for item in list(todo):
            if cache.get(item.key) is not None:
                todo.remove(item)
                log(f"done elsewhere {item.run.label} / {item.run.dataset} / seed {item.run.seed}")
                continue
            if _locked(cache, item.key):
                waiting = True
                continue
            if _live_locks(cache) >= jobs:  # trainings on this cache, by any grid command
                if not running and not slot_wait_logged:
                    log(f"waiting: {jobs} training(s) of other grid commands hold this cache's slots")
                    slot_wait_logged = True
                waiting = True  # a slot frees when one of them ends
                break
            deps = needs_of[item.key]
            if any(d in failed for d in deps):
                failed[item.key] = "a run it depends on failed"
                todo.remove(item)
                log(f"skipped {item.run.label} / seed {item.run.seed}: {failed[item.key]}")
                continue
            if any(cache.get(d) is None for d in deps):
                waiting = waiting or any(_locked(cache, d) for d in deps)
                continue
            todo.remove(item)
            missing = _missing_checkpoint(cache, deps)
            if missing:
                failed[item.key] = missing
                log(f"skipped {item.run.label} / seed {item.run.seed}: {missing}")
                continue
            if code_version(item.run.experiment.model) != item.code:
                failed[item.key] = "its code changed after the grid started (run the command again)"
                log(f"skipped {item.run.label} / seed {item.run.seed}: {failed[item.key]}")
                continue
            running[item.key] = _start(item, cache, threads)
            resumed = running[item.key][4]
            log(f"{'resume' if resumed else 'start'} {item.run.label} / {item.run.dataset} / seed {item.run.seed} "
                f"(key {item.key}" + (f"; from {resumed}" if resumed else "") + ")")
        if running or waiting:
            time.sleep(poll)
        elif todo:  # nothing running and nothing startable: unresolvable dependencies
            for item in todo:
                failed[item.key] = "its dependencies are not in the plan"
            break
    return failed


def run_state(cache_root, key):
    """What a call would do with run ``key`` (``--dry-run``): cached, training (by another
    call), to resume (an interrupted attempt's best epoch) or to train."""
    cache = RunCache(cache_root)
    if cache.get(key) is not None:
        return "cached"
    if _locked(cache, key):
        return "training"
    checkpoint, epoch = interrupted_checkpoint(cache.root / "checkpoints" / key)
    return f"to resume (best epoch {epoch})" if checkpoint else "to train"


def _missing_checkpoint(cache, deps):
    """Why a run cannot load its dependencies' checkpoints, or None: a cached run adopted with
    ``--adopt`` (or whose checkpoint was deleted) has its result but not its weights."""
    for dep in deps:
        record = cache.get(dep)
        path = record.get("checkpoint")
        if not path or not os.path.isfile(path):
            spec = record.get("reproduce") or {}
            return (f"it loads the checkpoint of {spec.get('label', record.get('model'))} / seed "
                    f"{spec.get('seed', record.get('seed'))}, which is not on disk ({path or 'none recorded'}; "
                    f"an adopted run keeps no weights): delete {cache.runs / (dep + '.json')} "
                    f"to train that run again, or put its checkpoint there")
    return None


def _lock_path(cache, key):
    return cache.root / "running" / key


def _locked(cache, key):
    """Whether a live process (of any grid command on this cache) is training ``key``."""
    path = _lock_path(cache, key)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)  # stale: its process died
        return False
    except PermissionError:
        pass
    return True


def _live_locks(cache):
    folder = cache.root / "running"
    return sum(_locked(cache, path.name) for path in folder.iterdir()) if folder.is_dir() else 0


def _unlock(cache, key):
    _lock_path(cache, key).unlink(missing_ok=True)


def _start(item, cache, threads):
    """Start the worker of ``item``: ``(process, item, start time, log file, resumed)``, where
    ``resumed`` names the checkpoint and epoch an interrupted attempt is resumed from, or is None."""
    config_dict = dict(item.config_dict)
    for config_key, value in item.config_dict.items():
        if isinstance(value, str) and value.startswith("run:"):
            config_dict[config_key] = cache.get(value[4:])["checkpoint"]
    checkpoints = cache.root / "checkpoints" / item.key
    log_path = cache.root / "logs" / f"{item.key}.log"
    resume, epoch = interrupted_checkpoint(checkpoints)
    earlier_seconds = _new_attempt(checkpoints, log_path)
    config_dict.update({"checkpoint_dir": str(checkpoints), "result_dir": str(cache.root / "incoming" / item.key)})
    payload = {"model": item.run.experiment.model, "dataset": item.run.dataset, "config_dict": config_dict,
               "config_files": item.config_files, "key": item.key, "cache_root": str(cache.root),
               "threads": threads, "spec": _spec(item), "resume": resume and str(resume),
               "earlier_attempts_seconds": earlier_seconds}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "a" if resume else "w")  # a resumed run's log follows its earlier attempts'
    resumed = f"{resume.name}, best epoch {epoch}" if resume else None
    if resume:
        log_file.write(f"\n=== resumed from {resumed} ===\n")
        log_file.flush()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **MALLOC_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "recbole_lpo.reproduce.worker", json.dumps(payload)],
                            stdout=log_file, stderr=subprocess.STDOUT, env=env)
    _lock_path(cache, item.key).parent.mkdir(parents=True, exist_ok=True)
    _lock_path(cache, item.key).write_text(str(proc.pid))
    return proc, item, time.time(), log_file, resumed


def interrupted_checkpoint(folder):
    """``(path, epoch)`` of the newest unfinished checkpoint in a run's checkpoint folder (the
    best epoch so far of an attempt that did not end), or ``(None, None)``: no checkpoint yet,
    or the newest one's run finished (then the run trains from the start)."""
    folder = Path(folder)
    checkpoints = sorted(folder.glob("*.pth"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not checkpoints:
        return None, None
    state = read_checkpoint(checkpoints[-1])
    if state.get("finished"):
        return None, None
    return checkpoints[-1], state["epoch"]


def _new_attempt(folder, log_path):
    """Log a new attempt of the run in ``<folder>/attempts.json``; returns the wall seconds of the
    earlier attempts (an interrupted attempt ended at the last write to the run's log)."""
    ledger = Path(folder) / "attempts.json"
    attempts = json.loads(ledger.read_text()) if ledger.is_file() else []
    for attempt in attempts:
        if attempt.get("ended") is None:
            last_write = log_path.stat().st_mtime if log_path.is_file() else attempt["started"]
            attempt["ended"] = max(attempt["started"], last_write)
    earlier = sum(a["ended"] - a["started"] for a in attempts)
    attempts.append({"started": time.time(), "ended": None})
    ledger.parent.mkdir(parents=True, exist_ok=True)
    tmp = ledger.with_suffix(".tmp")
    tmp.write_text(json.dumps(attempts))
    os.replace(tmp, ledger)
    return round(earlier, 1)


def load_records(resolved, cache_root):
    """{Run: cached record} for the resolved runs that finished."""
    cache = RunCache(cache_root)
    records = {}
    for item in resolved:
        record = cache.get(item.key)
        if record is not None:
            records[item.run] = record
    return records


def check_comparable(records):
    """Refuse to put runs with different tail sets in one table."""
    hashes = {}
    for run, record in records.items():
        hashes.setdefault((run.dataset, record["tail_set_hash"]), []).append(run.label)
    by_dataset = {}
    for (dataset, digest), labels in hashes.items():
        by_dataset.setdefault(dataset, []).append((digest, labels))
    for dataset, entries in by_dataset.items():
        if len(entries) > 1:
            detail = "; ".join(f"{digest}: {', '.join(sorted(set(labels))[:3])}" for digest, labels in entries)
            raise UserInputError(f"results on {dataset} use different tail sets ({detail}): "
                                 "they cannot share a table")
    getLogger().debug("tail sets consistent")
