"""recbole_lpo: listwise preference alignment (LPO4Rec) and its rivals for RecBole.

Importing the package applies the RecBole 1.2.1 compatibility fixes
(``recbole_lpo.compat``), hooks the shared head/tail split into RecBole's
data sets, and registers the tail metrics, so scripts written against
RecBole's own API get them too.
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

from recbole_lpo.data import head_tail  # noqa: E402
from recbole_lpo.evaluation import collector, metrics  # noqa: E402

head_tail.install()
collector.install()
metrics.register_metrics()

__version__ = "0.1.0"
