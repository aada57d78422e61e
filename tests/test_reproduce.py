"""The reproduction grid (recbole_lpo.reproduce) on the tiny fixture: two models, one seed, one epoch."""

import gzip
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from scipy import stats

from conftest import FIXTURES, ROOT, TINY_YAML
from recbole_lpo.errors import UserInputError
from recbole_lpo.records import code_version
from recbole_lpo.reproduce import catalogue
from recbole_lpo.reproduce.bonus import BONUSES, load_records
from recbole_lpo.reproduce.stats import paired_ttest, per_user_values, select_default

LABELS = ["SASRec", "LPO4Rec (paper)"]


def grid_command(workdir, *extra, labels=LABELS):
    return [sys.executable, "-m", "recbole_lpo.reproduce", "--datasets", "tiny", "--labels", *labels,
            "--seeds", "2020", "--config_files", TINY_YAML, "--cache", str(workdir / "cache"),
            "--out", str(workdir / "out"), "--set", f"data_path={FIXTURES}", "epochs=1", *extra]


# `-m recbole_lpo.reproduce` from a temporary folder: this checkout's package, not an installed one
CHECKOUT_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def run_grid(workdir, *extra, labels=LABELS):
    out = subprocess.run(grid_command(workdir, *extra, labels=labels), capture_output=True, text=True,
                         cwd=workdir, timeout=600, env=CHECKOUT_ENV)
    return out


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid")
    out = run_grid(workdir)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return workdir, out


def cached_records(workdir):
    return {p.stem: json.loads(p.read_text()) for p in (workdir / "cache" / "runs").glob("*.json")}


def test_grid_trains_writes_tables_and_plots(finished_grid):
    workdir, out = finished_grid
    assert "2 runs, 0 cached, 2 to train" in out.stdout
    records = cached_records(workdir)
    assert sorted(r["reproduce"]["label"] for r in records.values()) == sorted(LABELS)
    for key, record in records.items():
        assert record["reproduce"]["key"] == key and record["epochs_trained"] == 1
        assert record["reproduce"]["threads"] == 1 and record["reproduce"]["train_seconds"] > 0
        # the table's per-user values reproduce RecBole's reported metrics
        hits = per_user_values(record, "hit@10")
        assert sum(hits.values()) / len(hits) == pytest.approx(record["test_result"]["hit@10"], abs=1e-4)
        tail = per_user_values(record, "tailndcg@10")
        assert len(tail) == sum(record["per_user"]["tail"])
        assert sum(tail.values()) / len(tail) == pytest.approx(record["test_result"]["tailndcg@10"], abs=1e-4)
    report = (workdir / "out" / "tiny-fast.md").read_text()
    assert "profile `fast`" in report
    for label in LABELS:
        assert f"| {label} | 1 | 1 (0)† |" in report  # epochs=1: the cap stopped it, and the table says so
    assert "†: stopped by the epoch cap" in report
    assert "| GRU4Rec | not run |" in report
    hours = sum((r["reproduce"]["train_seconds"] + r["reproduce"]["bonus_seconds"]) / 3600 for r in records.values())
    assert f"- cost: {hours:.1f} thread-hours of wall time (training, test and the bonus ranking) over the 2 runs" \
        in report
    assert "diff, paired t-test" in report
    # every run's checkpoint ranked under the grid's tail score bonuses: the bonus section's rows
    # at bonus 0 are the runs' own test metrics
    for key, record in records.items():
        info, ranked = load_records(workdir / "cache" / "bonus" / f"{key}.bonus.json.gz")
        assert info["seed"] == 2020 and sorted({b for _, b in ranked}) == [0.0, *BONUSES]
        test = ranked[("test", 0.0)]
        for metric in ("hit@10", "tailndcg@10", "tailitemshare@10"):
            values = per_user_values(test, metric)
            assert sum(values.values()) / len(values) == pytest.approx(record["test_result"][metric], abs=1e-4)
    assert "## Tail score bonus (beyond the paper; ranking time, post hoc)" in report
    assert "| SASRec | 0.25 |" in report and "| LPO4Rec (paper) | 3 |" in report
    assert "Selected on validation: " in report
    selection = json.loads((workdir / "out" / "tiny-fast-selection.json").read_text())
    assert selection["tail_score_bonus"]["selected"][0] in LABELS
    # the headline rows (README table): SASRec is the baseline; the paper row is its own row unless
    # LPO4Rec's defaults are the paper's values (then one row), and the defaults' row has not run here
    headline = json.loads((workdir / "out" / "tiny-fast-headline.json").read_text())
    assert headline["profile"] == "fast" and headline["dataset"] == "tiny"
    rows = {row["row"]: row for row in headline["rows"]}
    assert rows["SASRec"]["baseline"] and rows["SASRec"]["test"]["hit@10"]["ratio"] == pytest.approx(1.0)
    if catalogue.DEFAULTS_ARE_PAPER:
        lpo = rows["LPO4Rec (default = paper values)"]
    else:
        lpo = rows["LPO4Rec (paper values)"]
        assert rows["LPO4Rec (default)"]["test"] is None and "| tiny | LPO4Rec (default) | not run |" in \
            (workdir / "out" / "headline-fast.md").read_text()
    lpo_record = next(r for r in records.values() if r["reproduce"]["label"] == "LPO4Rec (paper)")
    sas_record = next(r for r in records.values() if r["reproduce"]["label"] == "SASRec")
    for metric in ("hit@10", "tailndcg@10"):
        assert lpo["test"][metric]["mean_std"][0] == pytest.approx(lpo_record["test_result"][metric], abs=1e-4)
        if sas_record["test_result"][metric]:
            assert lpo["test"][metric]["ratio"] == pytest.approx(
                lpo_record["test_result"][metric] / sas_record["test_result"][metric], rel=1e-3)
    assert rows["best tail baseline (R2Rec, CITIES)"]["test"] is None  # not run
    table = (workdir / "out" / "headline-fast.md").read_text()
    assert "| tiny | SASRec† | 1 |" in table and "| tiny | best tail baseline (R2Rec, CITIES) | not run |" in table
    for name in ("frontier", "tail-probability"):
        png = workdir / "out" / f"tiny-fast-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_skips_finished_runs_and_reruns_changed_config(finished_grid):
    workdir, _ = finished_grid
    before = {k: (workdir / "cache" / "runs" / f"{k}.json").stat().st_mtime_ns for k in cached_records(workdir)}
    again = run_grid(workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 runs, 2 cached, 0 to train" in again.stdout
    assert {k: (workdir / "cache" / "runs" / f"{k}.json").stat().st_mtime_ns for k in before} == before

    changed = run_grid(workdir, "learning_rate=0.01", labels=["SASRec"])
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "1 runs, 0 cached, 1 to train" in changed.stdout
    new = set(cached_records(workdir)) - set(before)
    assert len(new) == 1
    assert cached_records(workdir)[new.pop()]["config"]["learning_rate"] == 0.01


def test_tables_refuse_mixed_tail_sets(finished_grid, tmp_path):
    workdir, _ = finished_grid
    copy = tmp_path / "copy"
    shutil.copytree(workdir / "cache", copy / "cache")
    path = next(p for p in (copy / "cache" / "runs").glob("*.json")
                if json.loads(p.read_text())["reproduce"]["label"] == "SASRec"
                and json.loads(p.read_text())["config"]["learning_rate"] != 0.01)
    record = json.loads(path.read_text())
    record["tail_set_hash"] = "0" * 16
    path.write_text(json.dumps(record))
    out = run_grid(copy, "--tables-only")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: results on tiny use different tail sets")
    assert not (copy / "out").exists() or not list((copy / "out").glob("*.md"))


def test_adopt_adds_runs_trained_outside_the_grid(finished_grid, tmp_path):
    """--adopt puts a result JSON (here a gzipped copy of the grid's own SASRec run) into an empty
    cache under the planned run's key; never twice; a run with other settings is refused with the
    key that differs; a file that is not a result is one error line."""
    workdir, _ = finished_grid
    key, record = next((k, r) for k, r in cached_records(workdir).items()
                       if r["reproduce"]["label"] == "SASRec" and r["config"]["learning_rate"] != 0.01)
    del record["reproduce"]
    (tmp_path / "runs").mkdir()
    kept = tmp_path / "runs" / "SASRec-tiny.json.gz"
    kept.write_bytes(gzip.compress(json.dumps(record).encode()))
    other = tmp_path / "runs" / "SASRec-tiny-lr.json"
    other.write_text(json.dumps(dict(record, config=dict(record["config"], learning_rate=0.5))))

    checkpoint = Path(record["checkpoint"]).name
    ranks = tmp_path / "runs" / (checkpoint.removesuffix(".pth") + ".bonus.json.gz")
    shutil.copyfile(workdir / "cache" / "bonus" / f"{key}.bonus.json.gz", ranks)

    dry = run_grid(tmp_path, "--dry-run", "--adopt", str(kept), str(ranks), labels=["SASRec"])
    assert f"would adopt: SASRec-tiny.json.gz and {ranks.name} as SASRec / tiny / seed 2020" in dry.stdout
    assert not (tmp_path / "cache").exists()  # a dry run writes nothing
    out = run_grid(tmp_path, "--tables-only", "--adopt", str(kept), str(other), str(ranks), labels=["SASRec"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"adopted SASRec-tiny.json.gz as SASRec / tiny / seed 2020 (key {key})" in out.stdout
    assert f"adopted {ranks.name} for SASRec / tiny / seed 2020" in out.stdout
    assert (tmp_path / "cache" / "bonus" / f"{key}.bonus.json.gz").read_bytes() == ranks.read_bytes()
    assert ("not adopted SASRec-tiny-lr.json: its settings differ from the nearest planned run 'SASRec': "
            f"learning_rate=0.5 (grid: {record['config']['learning_rate']!r})") in out.stdout
    (adopted,) = cached_records(tmp_path).values()
    assert adopted["reproduce"]["key"] == key and adopted["test_result"] == record["test_result"]
    report = (tmp_path / "out" / "tiny-fast.md").read_text()
    assert "| SASRec |" in report and "| SASRec | 1.25 |" in report  # the bonus section, from the records
    assert (tmp_path / "out" / "tiny-fast-frontier.png").is_file()  # one point, but the bonus curve
    assert "- adopted (`--adopt`; trained outside the grid with the same config and code): 1 runs: SASRec-tiny.json.gz" in report
    assert "--labels SASRec --seeds 2020 --adopt runs/*`" in report  # the command that rebuilds it
    again = run_grid(tmp_path, "--tables-only", "--adopt", str(kept), labels=["SASRec"])
    assert "already cached SASRec / tiny / seed 2020: SASRec-tiny.json.gz not adopted" in again.stdout

    (tmp_path / "notes.json").write_text("[1, 2]")
    bad = run_grid(tmp_path, "--tables-only", "--adopt", str(tmp_path / "notes.json"), labels=["SASRec"])
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"error: {tmp_path / 'notes.json'} is not a run's result JSON (no model, dataset, seed, config, test_result)")


def test_tables_only_names_the_runs_missing_from_the_cache(finished_grid, tmp_path):
    """--tables-only never trains: runs not in the cache are named per data set (their rows left
    out), and a cache holding none of the planned runs is one error line, not an empty folder."""
    empty = run_grid(tmp_path, "--tables-only")
    assert empty.returncode == 2 and empty.stderr.strip() == (
        f"error: none of the 2 planned runs is in the cache {tmp_path / 'cache'} "
        "(train them without --tables-only, or add result JSONs with --adopt)")
    assert not (tmp_path / "out").exists()

    workdir, _ = finished_grid
    partial = tmp_path / "partial"
    shutil.copytree(workdir / "cache", partial / "cache")
    for path in (partial / "cache" / "runs").glob("*.json"):
        if json.loads(path.read_text())["reproduce"]["label"] == "LPO4Rec (paper)":
            path.unlink()
    out = run_grid(partial, "--tables-only")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (f"tiny: 1 of 2 planned runs not in the cache {partial / 'cache'}; their rows are left out"
            in out.stderr)
    report = (partial / "out" / "tiny-fast.md").read_text()
    assert "| SASRec | 1 |" in report and "| LPO4Rec (paper) | 1 |" not in report


def test_code_version_of_a_past_commit():
    """A run's code version from its git commit: the last commit touching the model's code at or
    before it; unknown for a dirty or unknown commit."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert code_version("SASRec", head) == code_version("SASRec").split("+")[0]
    assert code_version("SASRec", head + "-dirty") is None
    assert code_version("SASRec", "0" * 40) is None


def test_code_version_skips_commits_declared_result_neutral(tmp_path, monkeypatch):
    """A commit whose message has a ``Result-neutral:`` line leaves the code version (the cache key's
    code part) where it was; any other commit to the model's code moves it, as does an uncommitted change."""
    import recbole_lpo.records as records

    def git(*args):
        out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def commit(path, text, message):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        git("add", "-A")
        git("commit", "-q", "-m", message)
        return git("rev-parse", "HEAD")

    git("init", "-q")
    monkeypatch.setattr(records, "PROJECT_ROOT", tmp_path)
    own = "recbole_lpo/model/sequential_recommender/lpo4rec.py"
    first = commit("recbole_lpo/trainer.py", "x = 1\n", "trainer")
    neutral = commit("recbole_lpo/trainer.py", "x = 1  # one\n", "trainer: a comment\n\nResult-neutral: a comment")
    assert records.code_version("SASRec") == first and records.code_version("SASRec", neutral) == first
    quoted = commit("recbole_lpo/trainer.py", "x = 2\n", "trainer: x = 2 (not Result-neutral: the line must start it)")
    assert records.code_version("SASRec") == quoted and records.code_version("SASRec", neutral) == first
    own_commit = commit(own, "y = 1\n", "lpo4rec")
    assert records.code_version("LPO4Rec") == own_commit and records.code_version("SASRec") == quoted
    commit(own, "y = 1  # doc\n", "lpo4rec: doc\n\nResult-neutral: a comment")
    commit("README.md", "text\n", "docs")  # outside the model code
    assert records.code_version("LPO4Rec") == own_commit
    (tmp_path / own).write_text("y = 3\n")  # uncommitted: never neutral
    assert records.code_version("LPO4Rec").startswith(own_commit + "+")


def test_paired_ttest_matches_scipy_over_users():
    rng = random.Random(0)
    users = [f"u{i}" for i in range(50)]
    a = {u: rng.random() for u in users}
    b = {u: a[u] - 0.1 + 0.2 * rng.random() for u in users}
    b["only_in_b"] = 5.0  # unpaired users are ignored
    shuffled = dict(sorted(b.items(), key=lambda _: rng.random()))
    n, diff, t, p = paired_ttest(a, shuffled)
    expected = stats.ttest_rel([a[u] for u in users], [b[u] for u in users])
    assert n == 50
    assert t == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert diff == pytest.approx(sum(a[u] - b[u] for u in users) / 50)
    # hand check on a tiny case: differences (1, 2, 3) -> t = mean / (sd / sqrt(n)) = 2 / (1 / sqrt(3))
    n, diff, t, p = paired_ttest({"x": 1, "y": 2, "z": 3}, {"x": 0, "y": 0, "z": 0})
    assert (n, diff) == (3, 2.0) and t == pytest.approx(2 * math.sqrt(3))
    # identical differences: no variance, no test
    assert math.isnan(paired_ttest({"x": 1, "y": 2}, {"x": 0, "y": 1})[3])


def test_selection_rule_on_validation():
    sasrec = [0.030, 0.032, 0.034]  # mean 0.032, std 0.002 -> threshold 0.030
    candidates = [("paper", {"ndcg@10": 0.020, "tailndcg@10": 0.050}),  # best tail, fails the bar
                  ("a", {"ndcg@10": 0.031, "tailndcg@10": 0.020}),
                  ("b", {"ndcg@10": 0.030, "tailndcg@10": 0.025}),  # exactly at the bar: qualifies
                  ("c", {"ndcg@10": 0.036, "tailndcg@10": 0.010})]
    chosen, threshold, qualifying = select_default(candidates, sasrec)
    assert threshold == pytest.approx(0.030) and chosen == "b" and qualifying == ["a", "b", "c"]
    chosen, _, qualifying = select_default(candidates[:1], sasrec)
    assert chosen == "paper" and qualifying == []


def test_lpo4rec_default_is_selected_among_tuning_and_screened_settings():
    """LPO4Rec's selection reads its tuning grid and the screen (the rivals only their tuning grid);
    the report names the selected values and whether --model=LPO4Rec trains them."""
    from types import SimpleNamespace

    from recbole_lpo.reproduce.report import Grid, selection_section

    screen = [catalogue.screen_label(o) for o in catalogue.SCREEN]
    assert catalogue.selection_candidates("LPO4Rec") == catalogue.tuning_labels("LPO4Rec") + screen
    assert catalogue.selection_candidates("DPO") == catalogue.tuning_labels("DPO")
    valid = {"SASRec": [(0.030, 0.01), (0.032, 0.01), (0.034, 0.01)],  # threshold 0.030
             "LPO4Rec (paper)": [(0.020, 0.050)], screen[0]: [(0.031, 0.020)], screen[4]: [(0.029, 0.040)]}
    resolved, records = [], {}
    for label, seeds in valid.items():
        for seed, (ndcg, tail) in enumerate(seeds):
            run = catalogue.Run(label, "d", seed, "cpu")
            resolved.append(SimpleNamespace(run=run, key=f"{label}-{seed}", code="c"))
            records[run] = {"best_valid_result": {"ndcg@10": ndcg, "tailndcg@10": tail},
                            "test_result": {"hit@10": 0.1, "tailhit@10": 0.05}}
    selection = Grid("d", resolved, records).selection["LPO4Rec"]
    assert selection["selected"] == screen[0] and selection["qualifying"] == [screen[0]]
    assert not selection["complete"]  # most candidates have not run
    text = "\n".join(selection_section(Grid("d", resolved, records)))
    changed = ", ".join(f"{k}={v}" for k, v in catalogue.SCREEN[0].items() if catalogue.LPO_PAPER[k] != v)
    assert f"- LPO4Rec's selected values: {changed}; `--model=LPO4Rec` " in text
    trains = "trains them" in text
    assert trains == catalogue.defaults_are(catalogue.EXPERIMENTS[screen[0]].overrides)
    assert f"| LPO4Rec | {screen[4]} | 0.0290 | 0.0400 | no |" in text

    # none qualifies: the rule's fallback is named as such, never as a selection to adopt
    records = {run: record for run, record in records.items() if run.label != screen[0]}
    resolved = [item for item in resolved if item.run.label != screen[0]]
    text = "\n".join(selection_section(Grid("d", resolved, records)))
    assert "| LPO4Rec | LPO4Rec (paper) | 0.0200 | 0.0500 | no | fallback (none qualifies) |" in text
    assert "no setting qualifies, so the rule falls back to its first, LPO4Rec (paper)" in text
    assert "selected values" not in text and "**selected**" not in text


def test_catalogue_plan_orders_dependencies_and_seeds():
    runs = catalogue.plan(["amazon-beauty"], ["table"], [1, 2, 3], "fast", labels=["DPO", "LPO4Rec (paper)"])
    labels = [(r.label, r.seed) for r in runs]
    assert labels.index(("SASRec", 1)) < labels.index(("DPO", 1))  # the reference trains first
    assert [s for label, s in labels if label == "LPO4Rec (paper)"] == [1, 2, 3]
    assert [s for label, s in labels if label == "DPO"] == [1]
    # the headline's tail baselines run with every seed; CITIES after the SASRec run of its own seed
    runs = catalogue.plan(["amazon-beauty"], ["table"], [1, 2, 3], "cpu", labels=["R2Rec", "CITIES"])
    labels = [(r.label, r.seed) for r in runs]
    assert sorted(s for label, s in labels if label == "CITIES") == [1, 2, 3]
    assert all(labels.index(("SASRec", s)) < labels.index(("CITIES", s)) for s in (1, 2, 3))
    assert sorted(s for label, s in labels if label == "R2Rec") == [1, 2, 3]
    # the converged profile's reports are the repository's result tables
    assert catalogue.report_stem("amazon-beauty", catalogue.PRIMARY_PROFILE) == "amazon-beauty"
    assert catalogue.report_stem("amazon-beauty", "fast") == "amazon-beauty-fast"
    with pytest.raises(UserInputError, match="unknown experiment 'LPO'"):
        catalogue.plan(["amazon-beauty"], ["table"], [1], "fast", labels=["LPO"])
    with pytest.raises(UserInputError, match="unknown profile 'slow': valid profiles are cpu, fast, paper"):
        catalogue.load_profile("slow")
    # equal tuning budget for LPO4Rec and every rival
    assert {len(catalogue.tuning_labels(f)) for f in catalogue.TUNING_FAMILIES} == {3}


def test_benchmark_script_is_the_same_cli():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--tables-only" in out.stdout


def test_run_locks_are_shared_between_grid_commands(tmp_path):
    from recbole_lpo.reproduce.cache import RunCache
    from recbole_lpo.reproduce.runner import _live_locks, _lock_path, _locked

    cache = RunCache(tmp_path)
    assert _live_locks(cache) == 0
    _lock_path(cache, "alive").parent.mkdir(parents=True)
    _lock_path(cache, "alive").write_text(str(os.getpid()))  # a live process trains "alive"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    _lock_path(cache, "stale").write_text(str(finished.pid))  # its process is gone
    assert _locked(cache, "alive") and not _locked(cache, "stale")
    assert not _lock_path(cache, "stale").exists()  # stale locks are cleared
    assert _live_locks(cache) == 1


def test_grid_waits_for_a_slot_held_by_another_grid_command(tmp_path, monkeypatch):
    """With every slot (``--jobs``) taken by another grid command's training on the same cache,
    a run waits for the slot and then trains; it is not failed as unresolvable."""
    from types import SimpleNamespace

    from recbole_lpo.reproduce import runner
    from recbole_lpo.reproduce.cache import RunCache

    cache = RunCache(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    threading.Thread(target=other.wait, daemon=True).start()  # reaped when it ends, as by its grid command
    runner._lock_path(cache, "other").parent.mkdir(parents=True)
    runner._lock_path(cache, "other").write_text(str(other.pid))
    started = []

    def fake_start(item, cache_, threads):
        started.append(other.poll())  # the other command's training has ended by now
        cache_.put(item.key, {"model": "SASRec"})
        return SimpleNamespace(poll=lambda: 0, returncode=0), item, 0.0, open(tmp_path / "log", "w"), None

    monkeypatch.setattr(runner, "_start", fake_start)
    run = SimpleNamespace(label="SASRec", dataset="d", seed=1, experiment=SimpleNamespace(model="SASRec"))
    item = SimpleNamespace(run=run, key="mine", config_dict={}, code=code_version("SASRec"))
    lines = []
    failed = runner.execute([item], tmp_path, jobs=1, log=lines.append, poll=0.05)
    assert failed == {} and started == [0]
    assert any(line.startswith("waiting: 1 training(s) of other grid commands") for line in lines)
    assert sum(line.startswith("waiting") for line in lines) == 1 and lines[-1].startswith("done SASRec")


def test_set_overrides_are_typed_and_malformed_ones_refused(tmp_path):
    from recbole_lpo.utils import parse_overrides

    assert parse_overrides(["epochs=3", "learning_rate=1e-3", "reweight=False", "sampler_seed=~", "neg_sampler=topk"]) \
        == {"epochs": 3, "learning_rate": 0.001, "reweight": False, "sampler_seed": None, "neg_sampler": "topk"}
    out = subprocess.run([sys.executable, "-m", "recbole_lpo.reproduce", "--dry-run", "--set", "epochs"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, env=CHECKOUT_ENV)
    assert out.returncode == 2 and out.stderr.strip() == "error: --set takes KEY=VALUE, got 'epochs'"


@pytest.mark.parametrize("profile", ["fast", "cpu", "paper"])
def test_every_profile_is_a_valid_config(profile):
    from recbole_lpo.config import Config

    overrides = catalogue.load_profile(profile)
    config = Config("LPO4Rec", "tiny", [TINY_YAML], dict(overrides, data_path=str(FIXTURES)))
    assert all(config[key] == value for key, value in overrides.items())


def test_screen_group_holds_the_no_regret_candidates_outside_the_default_grid():
    labels = catalogue.group_labels("screen")
    assert labels[:2] == ["SASRec", "LPO4Rec (paper)"] and len(labels) == 2 + len(catalogue.SCREEN)
    for label, overrides in zip(labels[2:], catalogue.SCREEN):
        assert catalogue.EXPERIMENTS[label].overrides == dict(catalogue.LPO_PAPER, **overrides)
    default = {run.label for run in catalogue.plan(["tiny"], catalogue.DEFAULT_GROUPS, [1], "cpu")}
    assert not default & set(labels[2:])


def _ranked(ranks, tails):
    """A result-like record of per-user ranks (users u0, u1, ...)."""
    return {"model": "x", "per_user": {"user": [f"u{i}" for i in range(len(ranks))], "tail": tails, "rank": ranks}}


def test_comparison_with_the_baseline_and_the_no_regret_target_by_hand():
    from recbole_lpo.reproduce.stats import baseline_means, compare, meets_target

    tails = [True, True, False, False]
    base = baseline_means([_ranked([1, 20, 1, 20], tails), _ranked([20, 20, 1, 20], tails)])
    # two seeds: HR@10 per user (1, 1, 1, 0) and (1, 0, 1, 0) -> seed means 0.75 and 0.5; user means
    # (1, .5, 1, 0) vs the baseline's (.5, 0, 1, 0): ratio 0.625 / 0.375; tail users u0, u1: (1, .5) vs (.5, 0)
    out = compare([_ranked([1, 1, 1, 20], tails), _ranked([1, 20, 1, 20], tails)], base)
    assert out["hit@10"]["mean_std"] == pytest.approx((0.625, stats.tstd([0.75, 0.5])))
    assert out["hit@10"]["ratio"] == pytest.approx(0.625 / 0.375) and out["hit@10"]["diff"] == pytest.approx(0.25)
    assert out["hit@10"]["p"] == pytest.approx(stats.ttest_rel([1, .5, 1, 0], [.5, 0, 1, 0]).pvalue)
    assert out["tailhit@10"]["ratio"] == pytest.approx(0.75 / 0.25)
    assert out["ndcg@10"]["ratio"] == pytest.approx(out["hit@10"]["ratio"])  # every hit at rank 1
    assert meets_target(out)  # higher overall means, 3x tail HR@10
    assert not meets_target(out, target_ratio=3.5)
    # a significant overall drop fails however much the tail gains
    drop = {m: dict(out[m]) for m in out}
    drop["ndcg@10"].update(diff=-0.01, p=0.01)
    assert not meets_target(drop)
    drop["ndcg@10"].update(p=0.2)  # a drop that is not significant passes
    assert meets_target(drop)


def test_headline_keeps_other_data_sets_rows(tmp_path):
    from recbole_lpo.reproduce.report import write_headline

    def row(dataset, name):
        test = {m: {"mean_std": [0.1, 0.0], "ratio": 1.0, "diff": 0.0, "p": None}
                for m in ("hit@10", "ndcg@10", "tailhit@10", "tailndcg@10")}
        return {"dataset": dataset, "row": name, "setting": name, "baseline": name == "SASRec", "seeds": [1],
                "test": test, "meets_target": None if name == "SASRec" else False, "epochs": [[5, 2, False]]}

    for dataset, profile in (("amazon-toys-games", "cpu"), ("amazon-beauty", "cpu"), ("amazon-beauty", "fast")):
        stem = catalogue.report_stem(dataset, profile)
        (tmp_path / f"{stem}-headline.json").write_text(json.dumps(
            {"profile": profile, "dataset": dataset, "rows": [row(dataset, "SASRec"), row(dataset, profile)]}))
    text = write_headline(tmp_path, "cpu").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| amazon")]
    assert [line.split(" | ")[:2] for line in lines] == [["| amazon-beauty", "SASRec"], ["| amazon-beauty", "cpu"],
                                                          ["| amazon-toys-games", "SASRec"],
                                                          ["| amazon-toys-games", "cpu"]]
    assert lines[1].endswith("| 1 | 0.1000 (1.00x, no variance) | 0.1000 (1.00x, no variance) | 0.1000 (1.00x, no variance) "
                             "| 0.1000 (1.00x, no variance) | not met |")  # one seed: no ± (no spread measured)
    assert (tmp_path / "headline.md").is_file() and not (tmp_path / "headline-fast.md").exists()
    assert "| amazon-beauty | fast |" in write_headline(tmp_path, "fast").read_text()


def test_defaults_are_paper_agrees_with_the_resolved_config():
    """The report shows one LPO4Rec row when --model=LPO4Rec trains the paper's values; the catalogue
    reads that from the YAML files: it must agree with what Config resolves."""
    from recbole_lpo.config import Config

    config = Config("LPO4Rec", "tiny", None, {"data_path": str(FIXTURES)})
    assert catalogue.DEFAULTS_ARE_PAPER == all(config[k] == v for k, v in catalogue.LPO_PAPER.items())


def test_export_writes_adoptable_runs_without_machine_paths(finished_grid, tmp_path):
    """--export copies the cached runs (gzipped, paths relative) and their tail-bonus records out;
    --adopt of those files fills an empty cache with the same runs; existing files are kept."""
    workdir, _ = finished_grid
    kept = tmp_path / "kept"
    out = run_grid(workdir, "--tables-only", "--export", str(kept))
    assert out.returncode == 0, out.stderr[-2000:]
    files = sorted(p.name for p in (kept / "tiny").iterdir())
    keys = {r["reproduce"]["label"]: k for k, r in cached_records(workdir).items()
            if r["config"]["learning_rate"] != 0.01}
    assert f"SASRec-seed2020-{keys['SASRec']}.json.gz" in files
    assert f"LPO4Rec_paper-seed2020-{keys['LPO4Rec (paper)']}.json.gz" in files
    assert sum(name.endswith(".bonus.json.gz") for name in files) == 2
    for path in (kept / "tiny").glob("*-seed*.json.gz"):
        text = gzip.decompress(path.read_bytes()).decode()
        assert str(tmp_path) not in text and str(ROOT) not in text and str(FIXTURES) not in text
        assert json.loads(text)["config"]["data_path"] == os.path.relpath(FIXTURES / "tiny", ROOT)
    again = run_grid(workdir, "--tables-only", "--export", str(kept))
    assert again.stdout.count("(exists)") == 4 and "exported" not in again.stdout

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    adopted = run_grid(fresh, "--tables-only", "--adopt", *map(str, (kept / "tiny").iterdir()))
    assert adopted.returncode == 0, adopted.stderr[-2000:]
    assert adopted.stdout.count("adopted ") == 4  # two runs, two bonus records
    assert {k: r["test_result"] for k, r in cached_records(fresh).items()} == \
        {k: r["test_result"] for k, r in cached_records(workdir).items() if k in keys.values()}
    for key, record in cached_records(fresh).items():  # the grid's timing travels with the run
        assert record["reproduce"]["train_seconds"] == cached_records(workdir)[key]["reproduce"]["train_seconds"]


def test_exported_second_stage_run_is_adopted_by_its_base_runs_key(finished_grid, tmp_path):
    """CITIES loads its seed's SASRec checkpoint, so its key names that SASRec run, not the path: its
    exported record is adopted back (the tables rebuild without any checkpoint); a copy trained outside
    the grid (no grid spec: only the path it loaded) is not."""
    workdir, _ = finished_grid
    shutil.copytree(workdir / "cache", tmp_path / "cache")
    labels = ["SASRec", "CITIES"]
    trained = run_grid(tmp_path, labels=labels)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    kept = tmp_path / "kept"
    assert run_grid(tmp_path, "--tables-only", "--export", str(kept), labels=labels).returncode == 0
    cities = next(kept.glob("tiny/CITIES-seed2020-*.json.gz"))
    record = json.loads(gzip.decompress(cities.read_bytes()))
    assert record["config"]["base_model_path"].endswith(".pth")  # the path it loaded
    assert record["reproduce"]["config_dict"]["base_model_path"].startswith("run:")

    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(dict(record, reproduce=None)))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    adopted = run_grid(fresh, "--tables-only", "--adopt", *map(str, (kept / "tiny").iterdir()), str(outside),
                       labels=labels)
    assert adopted.returncode == 0, adopted.stderr[-2000:]
    assert f"adopted {cities.name} as CITIES / tiny / seed 2020" in adopted.stdout
    assert "not adopted outside.json: its settings differ from the nearest planned run 'CITIES': " \
           "base_model_path=" in adopted.stdout
    report = (fresh / "out" / "tiny-fast.md").read_text()
    assert "| CITIES | 1 | 1 (0)† |" in report


def test_portable_paths():
    from recbole_lpo.reproduce.runner import portable

    record = {"config": {"data_path": "/home/a/repo/dataset/beauty", "x": ["/tmp/other/file.pth", "rel/p"]},
              "n": 3, "checkpoint": "/home/a/repo/saved/m.pth"}
    assert portable(record, ["/home/a/repo"]) == {"config": {"data_path": "dataset/beauty",
                                                            "x": ["file.pth", "rel/p"]},
                                                 "n": 3, "checkpoint": "saved/m.pth"}


def test_run_whose_dependency_has_no_checkpoint_fails_with_the_reason(finished_grid, tmp_path):
    """CITIES loads its seed's SASRec checkpoint; a cached SASRec without one (an adopted run keeps
    no weights) stops that run with one line saying how to get it, and trains nothing."""
    workdir, _ = finished_grid
    shutil.copytree(workdir / "cache", tmp_path / "cache")
    key, record = next((k, r) for k, r in cached_records(tmp_path).items()
                       if r["reproduce"]["label"] == "SASRec" and r["config"]["learning_rate"] != 0.01)
    record["checkpoint"] = str(tmp_path / "cache" / "checkpoints" / "gone.pth")  # the fixture's own stays
    (tmp_path / "cache" / "runs" / f"{key}.json").write_text(json.dumps(record))
    out = run_grid(tmp_path, labels=["SASRec", "CITIES"])
    assert out.returncode == 1
    assert "skipped CITIES / seed 2020: it loads the checkpoint of SASRec / seed 2020, which is not on disk" in out.stdout
    assert f"delete {tmp_path / 'cache' / 'runs' / (key + '.json')} to train that run again" in out.stdout
    assert "start " not in out.stdout and not list((tmp_path / "cache" / "running").glob("*"))


def test_frontier_points_are_seed_means():
    """The frontier puts a setting at the mean of its seeds, where its tail-bonus curve (seed means) starts."""
    from types import SimpleNamespace

    from recbole_lpo.reproduce.plots import frontier_points, pareto_front

    def run(hit, tail):
        return {"test_result": {"hit@10": hit, "tailhit@10": tail}}
    grid = SimpleNamespace(rows={"SASRec": [run(0.08, 0.03), run(0.10, 0.05)], "R2Rec": [run(0.07, 0.06)],
                                 "MELT": [run(0.05, 0.02)], "CITIES": []})
    points = frontier_points(grid)
    assert [p[0] for p in points] == ["SASRec", "R2Rec", "MELT"]
    assert points[0][1:] == pytest.approx((0.09, 0.04)) and points[1][1:] == (0.07, 0.06)
    assert [p[0] for p in pareto_front(points)] == ["R2Rec", "SASRec"]  # MELT is dominated


def test_best_tail_baseline_needs_as_many_seeds_as_sasrec():
    """The headline's tail baseline is chosen on valid tail NDCG@10, but a baseline with fewer seeds
    than SASRec (one still running) is picked only when no baseline has them all."""
    from types import SimpleNamespace

    from recbole_lpo.reproduce.report import best_tail_baseline

    def run(tail_ndcg):
        return {"best_valid_result": {"tailndcg@10": tail_ndcg}}
    sasrec = [run(0.01)] * 3
    grid = SimpleNamespace(rows={"SASRec": sasrec, "R2Rec": [run(0.02)] * 3, "CITIES": [run(0.05)]},
                           has=lambda label: bool(grid.rows.get(label)))
    assert best_tail_baseline(grid) == "R2Rec"  # CITIES scores higher on one seed only
    grid.rows["CITIES"] = [run(0.05)] * 3
    assert best_tail_baseline(grid) == "CITIES"
    grid.rows["CITIES"] = [run(0.01)] * 3
    assert best_tail_baseline(grid) == "R2Rec"
    grid.rows.update({"R2Rec": [run(0.02)], "CITIES": [run(0.03), run(0.05)]})
    assert best_tail_baseline(grid) == "CITIES"  # none complete: the best of those that ran
    grid.rows.update({"R2Rec": [], "CITIES": []})
    assert best_tail_baseline(grid) is None


def test_provenance_counts_a_run_shared_by_two_labels_once():
    """--model=LPO4Rec and the screened setting it defaults to resolve to one config, so one key: the
    report's run count, adopted files and cost count that run once."""
    from types import SimpleNamespace

    from recbole_lpo.reproduce.report import Grid, provenance

    def record(name, seconds):
        return {"git_commit": "abc", "adopted_from": name, "n_tail_items": 2, "tail_ratio": 0.2,
                "tail_set_hash": "h", "tail_user_share": 0.5,
                "machine": {"processor": "x86_64", "cpu_count": 2, "device": "cpu", "torch": "2", "torch_threads": 1},
                "reproduce": {"train_seconds": seconds, "bonus_seconds": 0, "threads": 1}}

    screen = catalogue.screen_label(catalogue.SCREEN[2])
    runs = [(screen, 2020, "k0", record("shared.json.gz", 3600)), ("LPO4Rec", 2020, "k0", record("shared.json.gz", 3600)),
            ("LPO4Rec", 2021, "k1", record("own.json.gz", 1800))]
    resolved, records = [], {}
    for label, seed, key, rec in runs:
        run = catalogue.Run(label, "d", seed, "cpu")
        resolved.append(SimpleNamespace(run=run, key=key, code="c"))
        records[run] = rec
    text = "\n".join(provenance(Grid("d", resolved, records)))
    assert "2 runs: own.json.gz, shared.json.gz" in text
    assert "- cost: 1.5 thread-hours of wall time (training, test and the bonus ranking) over the 2 runs" in text
    assert "- runs: 2;" in text


KILL_HOOK = """
import os
if os.environ.get("KILL_AFTER_VALIDATIONS"):  # this test's worker: die like a killed process
    import recbole_lpo.trainer as trainer_module
    valid_epoch, calls = trainer_module.Trainer._valid_epoch, []
    def valid_then_die(self, *args, **kwargs):
        result = valid_epoch(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == int(os.environ["KILL_AFTER_VALIDATIONS"]):
            os._exit(9)
        return result
    trainer_module.Trainer._valid_epoch = valid_then_die
if os.environ.get("RECORD_EPOCHS"):  # this test's worker: note each epoch it trains
    import recbole_lpo.trainer as trainer_module
    train_epoch = trainer_module.Trainer._train_epoch
    def noted_train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        with open(os.environ["RECORD_EPOCHS"], "a") as f:
            f.write(f"{epoch_idx} ")
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)
    trainer_module.Trainer._train_epoch = noted_train_epoch
"""


def test_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    """A grid run whose worker dies after epoch 1 resumes on the next call from its checkpoint
    (not from epoch 0) and caches the result an uninterrupted run gets; the cost counts both attempts."""
    from recbole_lpo.reproduce.runner import interrupted_checkpoint

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)  # imported by every Python started with it on the path
    extra = ("epochs=4", "learning_rate=0.01")
    uninterrupted_dir, interrupted_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    for folder in (uninterrupted_dir, interrupted_dir):
        folder.mkdir()
    assert run_grid(uninterrupted_dir, *extra, labels=["SASRec"]).returncode == 0

    killed_env = dict(CHECKOUT_ENV, KILL_AFTER_VALIDATIONS="2",
                      PYTHONPATH=os.pathsep.join([str(hook), CHECKOUT_ENV["PYTHONPATH"]]))
    killed = subprocess.run(grid_command(interrupted_dir, *extra, labels=["SASRec"]), capture_output=True,
                            text=True, cwd=interrupted_dir, timeout=600, env=killed_env)
    assert "FAILED SASRec / tiny / seed 2020: exit 9" in killed.stdout, killed.stdout + killed.stderr[-2000:]
    assert not cached_records(interrupted_dir)
    (key,) = [p.name for p in (interrupted_dir / "cache" / "checkpoints").iterdir()]
    checkpoint, epoch = interrupted_checkpoint(interrupted_dir / "cache" / "checkpoints" / key)
    assert checkpoint is not None and epoch in (0, 1)
    dry = run_grid(interrupted_dir, *extra, "--dry-run", labels=["SASRec"])
    assert f"{key}  to resume (best epoch {epoch})  tiny  seed 2020  SASRec" in dry.stdout, dry.stdout + dry.stderr

    epochs_file = tmp_path / "epochs"
    resumed = subprocess.run(grid_command(interrupted_dir, *extra, labels=["SASRec"]), capture_output=True, text=True,
                             cwd=interrupted_dir, timeout=600,
                             env=dict(killed_env, KILL_AFTER_VALIDATIONS="", RECORD_EPOCHS=str(epochs_file)))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert epochs_file.read_text().split() == [str(e) for e in range(epoch + 1, 4)]  # not from epoch 0
    assert f"resume SASRec / tiny / seed 2020 (key {key}; from {checkpoint.name}, best epoch {epoch})" \
        in resumed.stdout
    (expected,), (record,) = cached_records(uninterrupted_dir).values(), cached_records(interrupted_dir).values()
    assert record["reproduce"]["key"] == expected["reproduce"]["key"] == key  # where checkpoints go is no setting
    assert record["epochs_trained"] == expected["epochs_trained"] == 4
    assert record["test_result"] == expected["test_result"] and record["per_user"] == expected["per_user"]
    assert record["best_valid_score"] == expected["best_valid_score"]
    assert record["reproduce"]["resumed_from"] == checkpoint.name
    assert record["reproduce"]["earlier_attempts_seconds"] > 0
    assert "resumed from" in (interrupted_dir / "cache" / "logs" / f"{key}.log").read_text()
    attempts = json.loads((interrupted_dir / "cache" / "checkpoints" / key / "attempts.json").read_text())
    assert len(attempts) == 2 and attempts[0]["ended"] >= attempts[0]["started"]
    assert interrupted_checkpoint(interrupted_dir / "cache" / "checkpoints" / key) == (None, None)  # finished
    assert "1 of them resumed after an interrupted attempt" in (interrupted_dir / "out" / "tiny-fast.md").read_text()


def test_headline_cell_without_a_ratio():
    """SASRec's mean 0 (no tail hit on a small data set): the ratio is undefined, shown as —."""
    from recbole_lpo.reproduce.report import headline_cell

    for ratio in (None, math.nan):
        assert headline_cell({"mean_std": [0.0769, None], "ratio": ratio, "p": 0.34}, False, 1) == "0.0769 (—, p=0.34)"
    assert headline_cell({"mean_std": [0.3, None], "ratio": 1.5, "p": 0.01}, False, 1) == "0.3000 (1.50x, p=0.01)"
