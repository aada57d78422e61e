"""tail_score_bonus (beyond the paper): ranking-time bonus on tail items, any model."""

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_YAML, build_model, cli_on_fixture
from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.inference import load_data_and_model
from recbole_lpo.quick_start import run_recbole_lpo
from recbole_lpo.reproduce.bonus import markdown_lines, record, sweep_table
from recbole_lpo.rescoring import add_tail_bonus, add_tail_bonus_to_items, ranks_under_bonuses, tail_share_under_bonuses


def test_add_tail_bonus_by_hand():
    scores = torch.tensor([[-math.inf, 1.0, 2.0, 3.0], [0.0, -math.inf, 0.5, -1.0]])
    tail = torch.tensor([False, True, False, True])
    out = add_tail_bonus(scores, tail, 1.5)
    assert torch.equal(out, torch.tensor([[-math.inf, 2.5, 2.0, 4.5], [0.0, -math.inf, 0.5, 0.5]]))
    items = torch.tensor([3, 2])
    assert torch.equal(add_tail_bonus_to_items(torch.tensor([3.0, 0.5]), items, tail, 1.5), torch.tensor([4.5, 0.5]))


def test_ranks_under_bonuses_match_sorting():
    """Each bonus's ranks equal those from sorting the shifted scores (brute force)."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 30, generator=generator)
    scores[:, 0] = -math.inf
    scores[torch.rand(40, 30, generator=generator) < 0.1] = -math.inf  # masked history
    pos = torch.randint(1, 30, (40,), generator=generator)
    scores[torch.arange(40), pos] = torch.randn(40, generator=generator)  # the target is never masked
    tail = torch.rand(30, generator=generator) < 0.4
    tail[0] = False
    bonuses = [0.0, 0.3, 1.0, -0.5, 4.0]
    ranks = ranks_under_bonuses(scores, pos, tail, bonuses)
    for i, bonus in enumerate(bonuses):
        shifted = scores + bonus * tail.float()
        for row in range(40):
            order = [int(j) for j in torch.argsort(shifted[row], descending=True, stable=True)]
            better = [j for j in order if shifted[row, j] > shifted[row, pos[row]]]
            assert ranks[i, row] == len(better) + 1 == order.index(int(pos[row])) + 1 - sum(
                1 for j in order[: order.index(int(pos[row]))] if shifted[row, j] == shifted[row, pos[row]])
    assert (ranks[4][tail[pos]] <= ranks[0][tail[pos]]).all()  # a bonus never demotes a tail target
    shares = tail_share_under_bonuses(scores, tail, bonuses, k=5)
    for i, bonus in enumerate(bonuses):
        for row in range(40):
            top = sorted(range(30), key=lambda j: -float(scores[row, j] + bonus * tail[j]))[:5]
            assert shares[i, row] == pytest.approx(sum(bool(tail[j]) for j in top) / 5)
    assert (shares[4] >= shares[0]).all()


@pytest.mark.parametrize("model_name", ["SASRec", "LPO4Rec"])
def test_models_rank_with_the_bonus(tiny_config, model_name):
    """full_sort_predict and predict add the bonus to tail items only; parameters and keys unchanged."""
    _, plain, _, valid_data = build_model(model_name, tiny_config())
    config, boosted, _, _ = build_model(model_name, tiny_config(tail_score_bonus=2.0))
    assert set(plain.state_dict()) == set(boosted.state_dict())
    boosted.load_state_dict(plain.state_dict())
    plain.eval()
    boosted.eval()
    tail = head_tail_split(valid_data.dataset, config["tail_ratio"]).tail_mask
    assert tail.any() and (~tail[1:]).any()
    interaction = next(iter(valid_data))[0]
    with torch.no_grad():
        base, shifted = plain.full_sort_predict(interaction), boosted.full_sort_predict(interaction)
        assert torch.allclose(shifted - base, 2.0 * tail.float().expand_as(base))
        item_field = config["ITEM_ID_FIELD"]
        interaction.update(type(interaction)({item_field: torch.arange(1, len(interaction) + 1) % tail.numel()}))
        items = interaction[item_field]
        assert torch.allclose(boosted.predict(interaction) - plain.predict(interaction), 2.0 * tail[items].float())
    assert boosted.tail_score_bonus == 2.0 and plain.tail_score_bonus == 0.0


def test_bonus_off_changes_nothing(tiny_config):
    """tail_score_bonus 0 (the default) leaves the run bit-identical to a run without the key."""
    default = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=2), saved=False)
    zero = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=2, tail_score_bonus=0.0), saved=False)
    assert default["test_result"] == zero["test_result"]


@pytest.mark.parametrize("value", ["high", True, math.nan, math.inf])
def test_bad_bonus_is_one_error(tiny_config, value):
    with pytest.raises(UserInputError, match="tail_score_bonus must be"):
        run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(tail_score_bonus=value), saved=False)


def test_bonus_run_inference_and_sweep_agree(workdir, tiny_config):
    """A run with the bonus: its recorded test metrics equal the sweep's at that bonus; the
    loaded checkpoint ranks with it; the sweep at bonus 0 of a plain run reproduces that run."""
    plain = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=3), saved=True)
    boosted = run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=3, tail_score_bonus=1.0),
                              saved=True)
    _, model, _, train_data, _, _ = load_data_and_model(boosted["checkpoint"])
    assert model.tail_score_bonus == 1.0

    out = workdir / "sweep.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "tail_bonus_sweep.py"), plain["checkpoint"],
               boosted["checkpoint"], "--bonus", "0", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    by_bonus = {(r["setting"], r["tail_score_bonus"]): r for r in rows}
    trained = "SASRec (trained with tail_score_bonus=1)"
    assert set(by_bonus) == {("SASRec", 0.0), ("SASRec", 1.0), (trained, 1.0), (trained, 2.0)}
    for run, key in ((plain, ("SASRec", 0.0)), (boosted, (trained, 1.0))):
        test = by_bonus[key]["test"]
        for metric in ("hit@10", "ndcg@10", "tailhit@10", "tailndcg@10", "tailitemshare@10"):
            assert test[metric]["mean_std"][0] == pytest.approx(run["test_result"][metric], abs=1e-4)
    # benchmarks/compare_results.py --pool: one row per setting, against the first file's
    pooled = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_results.py"), "--pool",
                             plain["result_file"], boosted["result_file"]], capture_output=True, text=True, timeout=120)
    assert pooled.returncode == 0, pooled.stderr
    base_row, bonus_row = pooled.stdout.splitlines()[2:4]
    assert base_row.startswith("| SASRec | ") and base_row.count("(1.00x, p=nan)") >= 2 and base_row.count("p=nan)") == 4
    assert bonus_row.startswith("| SASRec tail_score_bonus=1.0 | ")
    assert f"| {boosted['test_result']['tailhit@10']:.4f} (" in bonus_row  # one seed: no ± (no spread measured)
    # the JSON is never overwritten: one error line
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert again.returncode == 2 and "sweep.json exists" in again.stderr and "Traceback" not in again.stderr


def _leaves(tree, path=""):
    """[(path, leaf)] of nested dicts and lists, in order."""
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in _leaves(tree[key], f"{path}/{key}")]
    if isinstance(tree, list):
        return [leaf for i, item in enumerate(tree) for leaf in _leaves(item, f"{path}/{i}")]
    return [(path, tree)]


def test_sweep_records_reproduce_the_sweep(workdir, tiny_config):
    """--save-records keeps per checkpoint what the table needs: a sweep of the records (no
    checkpoint) gives the same rows as the sweep of the checkpoints; records are never overwritten."""
    runs = [run_recbole_lpo("SASRec", "tiny", [TINY_YAML], tiny_config(epochs=2, seed=seed), saved=True)
            for seed in (1, 2)]
    script = [sys.executable, str(ROOT / "benchmarks" / "tail_bonus_sweep.py")]
    checkpoints = [r["checkpoint"] for r in runs]
    first = subprocess.run(script + checkpoints + ["--bonus", "0.5", "2", "--json", "a.json",
                                                   "--save-records", "records"],
                           capture_output=True, text=True, timeout=300, cwd=workdir)
    assert first.returncode == 0, first.stderr
    records = sorted((workdir / "records").glob("*.bonus.json.gz"))
    assert [r.name.removesuffix(".bonus.json.gz") for r in records] == sorted(
        Path(c).name.removesuffix(".pth") for c in checkpoints)
    saved = json.loads(gzip.decompress(records[0].read_bytes()))
    assert saved["setting"] == "SASRec" and saved["splits"]["test"]["bonus"] == [0.0, 0.5, 2.0]
    assert max(max(r) for r in saved["splits"]["test"]["rank"]) <= 11  # ranks past 10 stored as 11
    second = subprocess.run(script + [str(r) for r in records] + ["--json", "b.json"],
                            capture_output=True, text=True, timeout=300, cwd=workdir)
    assert second.returncode == 0, second.stderr
    rows_a = json.loads((workdir / "a.json").read_text())["rows"]
    rows_b = json.loads((workdir / "b.json").read_text())["rows"]
    assert len(rows_a) == 3
    flat_a, flat_b = _leaves(rows_a), _leaves(rows_b)
    assert [k for k, _ in flat_b] == [k for k, _ in flat_a]
    for (key, a), (_, b) in zip(flat_a, flat_b):  # sums over users run in set order: last bits differ
        assert b == (pytest.approx(a, rel=1e-12, nan_ok=True) if isinstance(a, float) else a), key
    again = subprocess.run(script + checkpoints[:1] + ["--save-records", "records"],
                           capture_output=True, text=True, timeout=300, cwd=workdir)
    assert again.returncode == 2 and "exists; saved records are never overwritten" in again.stderr


def test_cli_records_the_bonus(workdir):
    done = cli_on_fixture(workdir, "--model=SASRec", "--epochs=1", "--tail_score_bonus=0.5")
    assert done.returncode == 0, done.stderr
    (result_file,) = (workdir / "results").glob("*.json*")
    data = result_file.read_bytes()
    record = json.loads(gzip.decompress(data) if result_file.suffix == ".gz" else data)
    assert record["config"]["tail_score_bonus"] == 0.5


def _ranked(valid_ranks, test_ranks, tails):
    """A checkpoint's {(split, bonus): record} at bonus 0 (users u0.., the same users in both splits)."""
    users = [f"u{i}" for i in range(len(tails))]
    return {(split, 0.0): record(users, tails, ranks, [0.0] * len(users))
            for split, ranks in (("valid", valid_ranks), ("test", test_ranks))}


def test_sweep_selects_only_rows_with_the_baselines_seed_count():
    """A one-seed screen beside three-seed rows is shown but not selected, even when it scores best on
    validation; with min_runs 1 it is the pick."""
    tails = [True, False, True, False]
    sasrec = [_ranked([1, 1, 20, 20], [1, 1, 20, 20], tails) for _ in range(3)]
    screen = [_ranked([1, 1, 1, 20], [1, 1, 1, 20], tails)]  # higher valid NDCG@10 and tail NDCG@10
    groups, seeds = {"SASRec": sasrec, "screen": screen}, {"SASRec": [1, 2, 3], "screen": [1]}
    rows, _, selected = sweep_table(groups, "SASRec", seeds=seeds, min_runs=3)
    by_setting = {r["setting"]: r for r in rows}
    assert by_setting["screen"]["qualifies"] and by_setting["screen"]["screen_only"]
    assert not by_setting["SASRec"]["screen_only"] and selected is by_setting["SASRec"]
    text = "\n".join(markdown_lines(rows, selected))
    assert "yes (screen: 1 seed, not selectable)" in text and "Selected on validation: SASRec" in text
    rows, _, selected = sweep_table(groups, "SASRec", seeds=seeds)
    assert selected["setting"] == "screen"
