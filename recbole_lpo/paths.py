"""Where the plugin finds its files: its YAML defaults, data sets and RecBole's own YAML.

Imports nothing from the plugin; every module that needs a location reads it
from here.
"""

import importlib.util
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROPERTIES_DIR = PROJECT_ROOT / "properties"
DATASET_DIR = PROJECT_ROOT / "dataset"
RECBOLE_PROPERTIES_DIR = Path(importlib.util.find_spec("recbole").origin).parent / "properties"
