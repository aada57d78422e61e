"""End to end on the tiny fixture: CLI, Python API, drop-in RecBole scripts."""

import json
import os

import pytest
import torch

from conftest import TINY_YAML, cli_on_fixture


def _run_api(model, tiny_config, saved=True, **overrides):
    from recbole_lpo.quick_start import run_recbole_lpo

    return run_recbole_lpo(model, "tiny", [TINY_YAML], tiny_config(**overrides), saved=saved)


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_python_api_writes_result_and_reloads_best_checkpoint(model, workdir, tiny_config):
    result = _run_api(model, tiny_config, epochs=2)
    for key in ("best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"):
        assert key in result
    assert {"hit@10", "ndcg@10", "tailhit@10", "tailndcg@10", "tailitemshare@10"} <= set(result["test_result"])

    record = json.loads(open(result["result_file"]).read())
    assert record["model"] == model and record["dataset"] == "tiny" and record["seed"] == 2020
    assert len(record["tail_set_hash"]) == 16 and record["n_tail_items"] == 12  # floor(0.2 * 60)
    assert record["machine"]["device"] == "cpu"
    assert record["config"]["tail_ratio"] == 0.2
    per_user = record["per_user"]
    assert len(per_user["user"]) == len(per_user["rank"]) == 120
    assert record["tail_user_share"] == pytest.approx(sum(per_user["tail"]) / 120)
    # per-user ranks reproduce the reported test metrics
    ranks = torch.tensor(per_user["rank"])
    assert (ranks <= 10).double().mean().item() == pytest.approx(result["test_result"]["hit@10"], abs=1e-4)
    tail = torch.tensor(per_user["tail"])
    assert (ranks[tail] <= 10).double().mean().item() == pytest.approx(
        result["test_result"]["tailhit@10"], abs=1e-4)
    # per-user top-k diagnostics reproduce the popularity-bias metrics
    for k in (5, 10):
        for metric in ("tailitemshare", "avgtrainpopularity"):
            values = per_user[f"{metric}@{k}"]
            assert len(values) == 120
            assert sum(values) / 120 == pytest.approx(result["test_result"][f"{metric}@{k}"], abs=1e-3)
    gaps = torch.tensor(per_user["tail_prob_gap"])
    assert gaps.shape == (120,) and torch.isfinite(gaps).all() and (gaps.abs() < 1).all()

    # the best checkpoint exists and holds what was tested
    checkpoint = torch.load(record["checkpoint"], weights_only=False)
    assert checkpoint["epoch"] <= 1 and set(checkpoint["state_dict"])


def test_checkpoints_never_overwrite(workdir, tiny_config, tensorboard_writers):
    first = _run_api("SASRec", tiny_config)
    second = _run_api("SASRec", tiny_config)
    # each run closed its trainer's tensorboard writer (and RecBole's hparams writer inside its folder);
    # a closed writer has no file writer
    runs = {os.path.normpath(w.log_dir).split(os.sep)[1] for w in tensorboard_writers}
    assert len(runs) == 2 and all(w.file_writer is None for w in tensorboard_writers)
    files = sorted(os.listdir(workdir / "saved"))
    assert len([f for f in files if f.endswith(".pth")]) == 2
    assert first["result_file"] != second["result_file"]


def test_tail_valid_metric_drives_early_stopping_in_recbole_trainer(workdir, tiny_config):
    result = _run_api("GRU4Rec", tiny_config, epochs=4, valid_metric="TailHit@10", stopping_step=1,
                      learning_rate=0.01)
    assert result["best_valid_score"] == result["best_valid_result"]["tailhit@10"]


def test_cli_end_to_end(workdir):
    out = cli_on_fixture(workdir, "--model=SASRec")
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(os.listdir(workdir / "results")) == 1
    assert any(f.endswith(".pth") for f in os.listdir(workdir / "saved"))


def test_drop_in_recbole_script_gets_tail_metrics(workdir, tiny_config):
    """A script written against RecBole's own API, after `import recbole_lpo`."""
    import recbole_lpo  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import GRU4Rec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(model=GRU4Rec, dataset="tiny", config_file_list=[TINY_YAML],
                    config_dict=tiny_config(tail_ratio=0.2))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = GRU4Rec(config, train_data.dataset)
    trainer = Trainer(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    assert {"tailhit@5", "tailndcg@10", "tailitemshare@10", "avgtrainpopularity@10"} <= set(result)
    assert 0 <= result["tailhit@10"] <= 1
