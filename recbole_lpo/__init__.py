"""recbole_lpo: listwise preference alignment (LPO4Rec) and its rivals for RecBole.

Importing the package applies ``recbole_lpo.compat.PATCHES``: the RecBole
1.2.1 fixes for today's stack, the training-split counts behind the shared
head/tail split, and the plugin's metrics in RecBole's registry, so scripts
written against RecBole's own API get them too.
"""

try:
    import recbole  # noqa: F401
except ImportError as error:  # pragma: no cover - install hint only
    raise ImportError(
        "recbole_lpo needs RecBole 1.2.1 installed without its ray dependency: "
        "pip install --no-deps recbole==1.2.1 (see README)"
    ) from error

from recbole_lpo import compat

compat.apply()

__version__ = "0.1.0"
