"""Where a training epoch goes: data loader, encoder forward, loss, backward, optimizer.

    python benchmarks/epoch_profile.py                          # SASRec and LPO4Rec on amazon-beauty
    python benchmarks/epoch_profile.py --models SASRec DPO4Rec --batches 200 --batch-size 1024

Runs ``--batches`` training steps of each model (after ``--warmup`` steps),
in RecBole's order (``calculate_loss``, ``backward``, ``optimizer.step``),
timing each phase with ``time.perf_counter`` (and ``cuda.synchronize`` on a
GPU). The encoder forward is timed by wrapping the model's ``forward``; the
negative sampler and the reference model's scoring by wrapping them, so
"loss" is ``calculate_loss`` minus the encoder forward, and "sampler" and
"reference" are parts of it. Each model runs in its own process. Prints one
table of milliseconds per batch and the share of each phase.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("loader", "forward", "loss", "sampler", "reference", "backward", "optimizer")


def worker(args):
    import torch
    import recbole_lpo  # noqa: F401
    import recbole_lpo.objective as objective
    from recbole.utils import init_seed
    from recbole_lpo.config import Config
    from recbole_lpo.data.cache import prepare_data
    from recbole_lpo.quick_start import create_model

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from epoch_cost import make_reference

    torch.set_num_threads(args.threads)
    from recbole_lpo.runtime import keep_freed_memory

    keep_freed_memory()  # as run_recbole_lpo.py does
    workdir = tempfile.mkdtemp(prefix="epoch_profile_")
    data_cache = os.path.abspath(args.data_cache)
    os.chdir(workdir)  # RecBole writes log/ into the working directory
    config_dict = {"train_batch_size": args.batch_size, "show_progress": False, "state": "WARNING",
                   "checkpoint_dir": workdir, "data_cache_dir": data_cache,
                   "gpu_id": "0" if args.device == "cuda" else "", "use_gpu": args.device == "cuda"}
    model_name, _, loss = args.worker.partition("+")
    if loss:
        config_dict["preference_loss"] = loss
    if model_name in ("DPO4Rec", "SDPO4Rec") or loss in ("dpo", "sdpo"):
        config_dict["ref_model_path"] = make_reference(config_dict, args.dataset, workdir)
    config = Config(model_name, args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = create_model(config, data.train_data.dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    cuda = config["device"].type == "cuda"
    if args.device == "cuda" and not cuda:
        sys.exit("error: --device cuda, but torch sees no CUDA device")

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = now()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += now() - start
        return wrapper

    objective.sample_negatives = timed("sampler", objective.sample_negatives)
    objective.PreferenceObjective.reference_scores = timed(
        "reference", objective.PreferenceObjective.reference_scores)
    model.forward = timed("forward", model.forward)  # calculate_loss calls self.forward, not hooks

    model.train()
    steps, batches = 0, iter(data.train_data)
    while steps < args.warmup + args.batches:
        if steps == args.warmup:
            spent = dict.fromkeys(PHASES, 0.0)
        start = now()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(data.train_data)
            continue
        batch = batch.to(config["device"])
        loaded = now()
        optimizer.zero_grad()
        before = dict(spent)
        loss_value = model.calculate_loss(batch)
        computed = now()
        loss_value.backward()
        backward = now()
        optimizer.step()
        stepped = now()
        # the loss is calculate_loss minus the encoder forward (sampler and reference are inside it)
        spent["loader"] += loaded - start
        spent["loss"] += (computed - loaded) - (spent["forward"] - before["forward"])
        spent["backward"] += backward - computed
        spent["optimizer"] += stepped - backward
        steps += 1
    per_batch = {name: 1e3 * value / args.batches for name, value in spent.items()}
    result = {"model": args.worker, "ms": per_batch, "device": str(config["device"])}
    if cuda:
        result["gpu"] = torch.cuda.get_device_name()
    print("RESULT " + json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "LPO4Rec"])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=150, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data-cache", default="saved/data_cache", help="data_cache_dir of the runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = []
    for model in args.models:
        cmd = [sys.executable, __file__, "--worker", model, "--dataset", args.dataset, "--batch-size",
               str(args.batch_size), "--batches", str(args.batches), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--device", args.device, "--data-cache", args.data_cache]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"{model} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    device = results[0].get("gpu", f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)")
    print(f"\nms per training batch on {args.dataset}, batch {args.batch_size}, mean of {args.batches} "
          f"after {args.warmup} warm-up; {device}. sampler and reference are parts of loss.\n")
    print("| model | " + " | ".join(PHASES) + " | total |")
    print("|---" * (len(PHASES) + 2) + "|")
    for r in results:
        ms = r["ms"]
        total = sum(v for k, v in ms.items() if k not in ("sampler", "reference"))
        cells = [f"{ms[p]:.1f} ({100 * ms[p] / total:.0f} %)" for p in PHASES]
        print(f"| {r['model']} | " + " | ".join(cells) + f" | {total:.1f} |")


if __name__ == "__main__":
    main()
