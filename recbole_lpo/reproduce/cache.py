"""Finished runs, cached as JSON under a key of the resolved config and the code.

``run_key`` hashes (a) the run's resolved RecBole config (every key that can
change a result; machine paths, devices and logging switches left out, and a
loaded checkpoint named by its producing run's key, not its path) and (b) the
git commit of the code the model runs: the last commit touching the plugin's
shared training modules and the model's own module, plus a hash of their
uncommitted changes. So editing MELT re-runs MELT only; editing a shared
module re-runs everything; editing tables, plots or tests re-runs nothing.
"""

import hashlib
import json
import os
from pathlib import Path

from recbole_lpo.checkpoint import RESULT_NEUTRAL_KEYS
from recbole_lpo.records import jsonable

# config keys that cannot change a result
VOLATILE_KEYS = RESULT_NEUTRAL_KEYS


def config_fingerprint(final_config_dict):
    return {k: jsonable(v) for k, v in sorted(final_config_dict.items()) if k not in VOLATILE_KEYS}


def run_key(config_fields, code):
    blob = json.dumps({"config": config_fields, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class RunCache:
    """``<root>/runs/<key>.json``: each finished run's result JSON plus its spec;
    ``<root>/bonus/<key>.bonus.json.gz``: its checkpoint ranked under tail score
    bonuses (``recbole_lpo.reproduce.bonus``)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path(self, key):
        return self.runs / f"{key}.json"

    def bonus_path(self, key):
        return self.root / "bonus" / f"{key}.bonus.json.gz"

    def get(self, key):
        path = self.path(key)
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def put(self, key, record):
        self.runs.mkdir(parents=True, exist_ok=True)
        tmp = self.path(key).with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, self.path(key))
        return self.path(key)
