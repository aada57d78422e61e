"""Where the plugin finds its files: its YAML defaults, data sets and RecBole's own YAML.

Imports nothing of the plugin but its error type; every module that needs a
location reads it from here.

- YAML defaults: the repository's top-level ``properties/`` is the source;
  a wheel or regular ``pip install`` carries a copy as the package data
  ``recbole_lpo/properties`` (setup.cfg maps the folder there). An installed
  copy uses its packaged YAML, a checkout or editable install the checkout's.
- Data sets: ``--data_path``, else ``$RECBOLE_LPO_DATA``, else the checkout's
  ``dataset/`` (``default_data_path``).
"""

import importlib.util
import os
from pathlib import Path

from recbole_lpo.errors import UserInputError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # the checkout, when run from one
FROM_CHECKOUT = (PROJECT_ROOT / "setup.cfg").is_file() and (PROJECT_ROOT / "properties" / "overall.yaml").is_file()
_PACKAGED_PROPERTIES = PACKAGE_DIR / "properties"
PROPERTIES_DIR = _PACKAGED_PROPERTIES if _PACKAGED_PROPERTIES.is_dir() else PROJECT_ROOT / "properties"
DATASET_DIR = PROJECT_ROOT / "dataset"  # the shipped data sets, in a checkout only (not in a wheel)
DATA_PATH_ENV = "RECBOLE_LPO_DATA"
RECBOLE_PROPERTIES_DIR = Path(importlib.util.find_spec("recbole").origin).parent / "properties"


def default_data_path(data_path=None):
    """The folder of the data sets: ``data_path`` (the user's), else $RECBOLE_LPO_DATA, else the checkout's dataset/."""
    if data_path:
        return str(data_path)
    if os.environ.get(DATA_PATH_ENV):
        return os.environ[DATA_PATH_ENV]
    if FROM_CHECKOUT:
        return str(DATASET_DIR)
    raise UserInputError(
        f"no data folder: pass --data_path=DIR (DIR/<dataset>/<dataset>.inter), set {DATA_PATH_ENV}=DIR, "
        "or run from a checkout of recbole_lpo (its dataset/ folder)")
