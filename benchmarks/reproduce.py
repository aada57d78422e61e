"""The paper's experiments in one command; see ``python -m recbole_lpo.reproduce --help``.

    python benchmarks/reproduce.py --datasets amazon-beauty --profile fast --jobs 2
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recbole_lpo.errors import run_cli  # noqa: E402
from recbole_lpo.reproduce.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
