#!/usr/bin/env bash
# RecBole 1.2.1's OWN tests (metrics, config, data, sequential models), run three times:
#   bare     RecBole alone (on numpy 2 its Config cannot even start: informational)
#   without  RecBole + the plugin's stack fixes only (recbole_lpo/compat.py loaded on its own,
#            no recbole_lpo import: numpy aliases, torch.load of RecBole's checkpoints, ...)
#   with     pytest -p recbole_lpo (the whole plugin imported, every patch applied)
# and prints pass/fail counts per run. Fails (exit 1) when "with" collects a different set of
# tests than "without" or any test's outcome differs between the two.
#
# usage: RECBOLE_SRC=<RecBole source> bash benchmarks/recbole_own_tests.sh
#        make recbole-tests RECBOLE_SRC=<RecBole source>
# RECBOLE_SRC: a RecBole checkout at tag v1.2.1 (its tests/ folder is used), or any RecBole git
# repository, bare or not, that has the tag (tests/ is read from v1.2.1 with git archive).
# RecBole's tests are not part of its pip package and are never copied into this repository.
# Optional: PYTHON (default: python), RECBOLE_TESTS (space-separated pytest ids, default below),
# KEEP=1 keeps the scratch folder. About 20 minutes on 2 CPU cores (the sequential models
# train one epoch each, twice).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
: "${RECBOLE_SRC:?set RECBOLE_SRC to a RecBole source tree or git repository (tag v1.2.1)}"
DEFAULT_TESTS="tests/metrics/test_loss_metrics.py tests/metrics/test_rank_metrics.py
tests/metrics/test_topk_metrics.py tests/config/test_config.py tests/config/test_overall.py
tests/data/test_dataset.py tests/data/test_dataloader.py tests/data/test_transform.py
tests/model/test_model_auto.py::TestSequentialRecommender"
read -r -a TESTS <<< "$(echo ${RECBOLE_TESTS:-$DEFAULT_TESTS})"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/recbole-own-tests.XXXXXX")"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi

# RecBole's tests at v1.2.1, in a scratch folder (they write log/ and saved/ into the working directory)
if [ -d "$RECBOLE_SRC/tests/metrics" ]; then
    cp -r "$RECBOLE_SRC/tests" "$WORK/tests"
elif git -C "$RECBOLE_SRC" rev-parse --verify -q v1.2.1 > /dev/null; then
    git -C "$RECBOLE_SRC" archive v1.2.1 tests | tar -x -C "$WORK"
else
    echo "error: $RECBOLE_SRC has neither tests/ nor the git tag v1.2.1" >&2
    exit 2
fi

# shims, the same for every run:
# - ray: recbole.quick_start imports it at module level and objective_function calls tune.report
#   (the real ray breaks on numpy 2; RecBole is installed without it). A no-op stand-in.
# - recbole_stack_fixes: the "without" run's pytest plugin
mkdir -p "$WORK/shims/ray"
printf 'from ray import tune  # noqa: F401\n' > "$WORK/shims/ray/__init__.py"
printf 'def report(**kwargs):\n    """No-op stand-in for ray.tune.report."""\n' > "$WORK/shims/ray/tune.py"
cat > "$WORK/shims/recbole_stack_fixes.py" <<'EOF'
"""RecBole + recbole_lpo/compat.py's stack fixes, loaded on their own: no plugin patch applied."""
import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location("recbole_lpo_compat_alone", os.environ["RECBOLE_LPO_COMPAT"])
_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compat)
_compat.apply()
if any(name.split(".")[0] == "recbole_lpo" for name in sys.modules):
    raise ImportError("recbole_lpo/compat.py imported the plugin: the 'without' run would not be plugin-free")
EOF

run() {  # run NAME [pytest plugin args...]
    local name="$1"
    shift
    echo "== $name: $PYTHON -m pytest $* (log: $WORK/$name.log)" >&2
    (cd "$WORK" && env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONPATH="$WORK/shims:$REPO" \
        RECBOLE_LPO_COMPAT="$REPO/recbole_lpo/compat.py" \
        "$PYTHON" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -W ignore "$@" --junitxml="$WORK/$name.xml" "${TESTS[@]}" \
        > "$WORK/$name.log" 2>&1) || true
    rm -rf "$WORK/log" "$WORK/log_tensorboard" "$WORK/saved"
}

run bare
run without -p recbole_stack_fixes
run with -p recbole_lpo

"$PYTHON" - "$WORK" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from collections import Counter

work = sys.argv[1]


def outcomes(name):
    """{test id: passed|failed|error|skipped} from the run's JUnit XML."""
    result = {}
    for case in ET.parse(f"{work}/{name}.xml").iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[test] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
            kinds[0] if kinds else "", "passed")
    return result


def reason(name, test):
    for case in ET.parse(f"{work}/{name}.xml").iter("testcase"):
        if f"{case.get('classname')}::{case.get('name')}" == test:
            for child in case:
                if child.tag in ("failure", "error"):
                    return " ".join((child.get("message") or "").split())[:150]
    return ""


runs = {name: outcomes(name) for name in ("bare", "without", "with")}
counts = {name: Counter(result.values()) for name, result in runs.items()}
print(f"{'RecBole 1.2.1 tests':<22}" + "".join(f"{name:>9}" for name in runs))
for kind in ("passed", "failed", "error", "skipped"):
    print(f"{kind:<22}" + "".join(f"{counts[name][kind]:>9}" for name in runs))
print(f"{'total':<22}" + "".join(f"{len(result):>9}" for result in runs.values()))
not_passed = sorted(t for t, o in runs["without"].items() if o != "passed")
if not_passed:
    print("\nnot passing without the plugin (so not with it either, if the columns match):")
    for test in not_passed:
        print(f"  {test}: {runs['without'][test]}: {reason('without', test)}")
ok = True
if set(runs["with"]) != set(runs["without"]):
    ok = False
    print("\nDIFFERENT TEST SETS: only without:", sorted(set(runs["without"]) - set(runs["with"])),
          "only with:", sorted(set(runs["with"]) - set(runs["without"])))
changed = sorted(t for t in runs["without"] if t in runs["with"] and runs["with"][t] != runs["without"][t])
for test in changed:
    ok = False
    print(f"\nCHANGED BY THE PLUGIN: {test}: without {runs['without'][test]}, with {runs['with'][test]}: "
          f"{reason('with', test)}")
print("\nwithout == with: " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
EOF
