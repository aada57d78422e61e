"""Training cost per epoch: SASRec against the preference-loss models.

    python benchmarks/epoch_cost.py                       # SASRec vs LPO4Rec on amazon-beauty
    python benchmarks/epoch_cost.py --models SASRec LPO4Rec SimPO4Rec --epochs 4
    python benchmarks/epoch_cost.py --device cuda --models SASRec LPO4Rec DPO4Rec SDPO4Rec SimPO4Rec ORPO4Rec

Protocol: SASRec's default architecture, ``train_batch_size`` 256, training
only (no evaluation), one warm-up epoch, then the median of the remaining
epochs' wall time. Peak memory: CUDA max allocated when on a GPU, else the
process's peak RSS while training (polled every 2 ms) and its increase over
the RSS before training. Each model runs in its own process so peaks do not
mix. Prints a table with ratios to the first model (the baseline).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class RssPeak:
    """Poll this process's resident set size in a thread; keep the maximum."""

    def __init__(self, interval=0.002):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_reference(config_dict, dataset, workdir):
    """A SASRec checkpoint to serve as DPO/S-DPO reference (cost only: weights untrained)."""
    import torch
    from recbole_lpo.config import Config
    from recbole_lpo.data.cache import prepare_data
    from recbole_lpo.quick_start import create_model

    config = Config("SASRec", dataset, config_dict=config_dict)
    model = create_model(config, prepare_data(config).train_data.dataset)
    path = os.path.join(workdir, "reference.pth")
    torch.save({"config": config, "state_dict": model.state_dict(), "other_parameter": model.other_parameter()}, path)
    return path


def worker(args):
    import torch
    import recbole_lpo  # noqa: F401
    from recbole.utils import init_seed
    from recbole_lpo.config import Config
    from recbole_lpo.data.cache import prepare_data
    from recbole_lpo.quick_start import create_model
    from recbole_lpo.utils import get_trainer

    torch.set_num_threads(args.threads)
    from recbole_lpo.runtime import keep_freed_memory

    keep_freed_memory()  # as run_recbole_lpo.py does
    workdir = tempfile.mkdtemp(prefix="epoch_cost_")
    data_cache = os.path.abspath(args.data_cache)
    os.chdir(workdir)  # RecBole writes log/ into the working directory
    config_dict = {"train_batch_size": args.batch_size, "show_progress": False, "state": "WARNING",
                   "epochs": args.epochs, "checkpoint_dir": workdir, "data_cache_dir": data_cache,
                   "gpu_id": "0" if args.device == "cuda" else "", "use_gpu": args.device == "cuda"}
    if args.learning_rate is not None:
        config_dict["learning_rate"] = args.learning_rate
    model_name, _, loss = args.worker.partition("+")
    if loss:
        config_dict["preference_loss"] = loss
    if model_name in ("DPO4Rec", "SDPO4Rec") or loss in ("dpo", "sdpo"):
        config_dict["ref_model_path"] = make_reference(config_dict, args.dataset, workdir)
    config = Config(model_name, args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data = prepare_data(config).train_data
    init_seed(config["seed"], config["reproducibility"])
    model = create_model(config, train_data.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name, config)(config, model)
    cuda = config["device"].type == "cuda"
    if args.device == "cuda" and not cuda:
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with RssPeak() as rss:
        rss_before = rss.peak
        for epoch in range(args.epochs):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch, show_progress=False)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    result = {"model": args.worker, "epoch_times": times, "median_s": statistics.median(times[1:]),
              "batches": len(train_data), "device": str(config["device"]),
              "peak_rss_mb": rss.peak / 2**20, "train_rss_mb": (rss.peak - rss_before) / 2**20}
    if cuda:
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    print("RESULT " + json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "LPO4Rec"],
                        help="model names; MODEL+loss applies a preference loss to a built-in (GRU4Rec+lpo)")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model, the first is warm-up")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: timings synchronised, memory as CUDA max allocated")
    parser.add_argument("--learning-rate", type=float, default=None, help="RecBole's learning_rate (default: its own)")
    parser.add_argument("--data-cache", default="saved/data_cache", help="data_cache_dir of the runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (one warm-up epoch plus at least one timed)")
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(ROOT))
    results = []
    for model in args.models:
        cmd = [sys.executable, __file__, "--worker", model, "--dataset", args.dataset, "--batch-size",
               str(args.batch_size), "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--device", args.device, "--data-cache", args.data_cache]
        if args.learning_rate is not None:
            cmd += ["--learning-rate", str(args.learning_rate)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"{model} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"  {model}: {results[-1]['median_s']:.2f} s/epoch", file=sys.stderr, flush=True)

    base = results[0]
    mem_key = "cuda_peak_mb" if "cuda_peak_mb" in base else "peak_rss_mb"
    device = base.get("gpu", f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)")
    print(f"\nEpoch cost on {args.dataset}, batch {args.batch_size}, {base['batches']} batches/epoch, "
          f"median of {args.epochs - 1} epochs after 1 warm-up; {device}\n")
    header = f"| model | s/epoch | x {base['model']} | {mem_key} | x {base['model']} |"
    if mem_key == "peak_rss_mb":
        header += " train RSS increase MB |"
    print(header)
    print("|" + "---|" * header.count(" |"))
    for r in results:
        row = (f"| {r['model']} | {r['median_s']:.2f} | {r['median_s'] / base['median_s']:.2f} | "
               f"{r[mem_key]:.0f} | {r[mem_key] / base[mem_key]:.2f} |")
        if mem_key == "peak_rss_mb":
            row += f" {r['train_rss_mb']:.0f} |"
        print(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
