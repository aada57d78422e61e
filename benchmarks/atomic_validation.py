"""Time of the atomic-file checks (``recbole_lpo.data.atomic``) on the shipped data sets.

    python benchmarks/atomic_validation.py              # all three, median of 5 runs each
    python benchmarks/atomic_validation.py --repeat 11 --datasets amazon-beauty

Prints, per data set, the rows and size of the ``.inter`` file, the median
and fastest wall time of ``validate_atomic_files`` with the data set's own
config, and for scale the time of the ``pandas.read_csv`` call RecBole's
``Dataset._load_feat`` makes on the same file (one run; ``--no-reference``
skips it).
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASETS = ("amazon-beauty", "amazon-sports-outdoors", "amazon-toys-games")


def recbole_read(path, config):
    """The read of RecBole 1.2.1's ``Dataset._load_feat`` for the loaded columns of an .inter file."""
    import numpy as np
    import pandas as pd

    with open(path, encoding="utf-8") as f:
        header = f.readline()[:-1].split(config["field_separator"])
    loaded = [field for field in header if field.partition(":")[0] in config["load_col"]["inter"]]
    dtype = {field: np.float64 if field.endswith(":float") else str for field in loaded}
    return pd.read_csv(path, delimiter=config["field_separator"], usecols=loaded, dtype=dtype, encoding="utf-8",
                       engine="python")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per data set (median reported)")
    parser.add_argument("--no-reference", action="store_true", help="skip timing RecBole's read_csv")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv itself

    from recbole_lpo.config import Config
    from recbole_lpo.data.atomic import validate_atomic_files

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| data set | rows | MB | checks median (s) | checks fastest (s) | RecBole read_csv (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        config = Config("SASRec", name, None, {"state": "ERROR"})
        path = Path(config["data_path"]) / f"{name}.inter"
        with open(path, "rb") as f:
            rows = sum(1 for _ in f) - 1
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            validate_atomic_files(config)
            times.append(time.perf_counter() - start)
        reference = "-"
        if not args.no_reference:
            start = time.perf_counter()
            recbole_read(path, config)
            reference = f"{time.perf_counter() - start:.2f}"
        print(f"| {name} | {rows:,} | {path.stat().st_size / 1e6:.1f} | {statistics.median(times):.3f} | "
              f"{min(times):.3f} | {reference} |")


if __name__ == "__main__":
    main()
