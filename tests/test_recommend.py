"""Inference: checkpoints load back (plugin models, DPO without its reference),
``recommend`` ranks the item after each user's last one, and the command line."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from recbole.trainer import Trainer

from recbole_lpo.data.head_tail import head_tail_split
from recbole_lpo.errors import UserInputError
from recbole_lpo.inference import full_sort_scores, load_data_and_model, recommend
from recbole_lpo import quick_start  # not `import test_ranks`: pytest would collect it

from conftest import FIXTURES, ROOT, TINY_YAML

MODELS = ("SASRec", "LPO4Rec", "DPO4Rec")
USER = "u1"  # 12 interactions: more than MAX_ITEM_LIST_LENGTH (10) + 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of SASRec, LPO4Rec and DPO4Rec on the fixture (once per module).

    DPO4Rec's reference is a copy of SASRec's checkpoint, deleted after training.
    Returns model name -> (checkpoint path, result dict).
    """
    folder = tmp_path_factory.mktemp("recommend")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)

        def train(model, **overrides):
            config = {"data_path": str(FIXTURES), "checkpoint_dir": str(folder / "saved"),
                      "result_dir": str(folder / "results"), **overrides}
            result = quick_start.run_recbole_lpo(model, "tiny", [TINY_YAML], config, saved=True)
            with open(result["result_file"], encoding="utf-8") as f:
                return json.load(f)["checkpoint"], result

        runs = {"SASRec": train("SASRec"), "LPO4Rec": train("LPO4Rec")}
        reference = str(folder / "reference.pth")
        shutil.copy(runs["SASRec"][0], reference)
        runs["DPO4Rec"] = train("DPO4Rec", ref_model_path=reference)
        os.remove(reference)
        yield runs


@pytest.fixture(scope="module")
def loaded(trained):
    """model name -> load_data_and_model(checkpoint), loaded on first use."""
    cache = {}

    def load(model):
        if model not in cache:
            cache[model] = load_data_and_model(trained[model][0])
        return cache[model]

    return load


def _raw_history(user):
    """The user's item tokens from the atomic file itself, oldest first."""
    with open(FIXTURES / "tiny" / "tiny.inter", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f, delimiter="\t") if row["user_id:token"] == user]
    rows.sort(key=lambda row: float(row["timestamp:float"]))  # stable, as RecBole sorts
    return [row["item_id:token"] for row in rows]


def _sasrec_scores(model, dataset, item_tokens):
    """SASRec's scores [N] of every item after ``item_tokens`` (computed here, not by inference.py)."""
    ids = [dataset.token2id(dataset.iid_field, token) for token in item_tokens][-model.max_seq_length:]
    item_seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)  # [1 L]
    item_seq[0, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        seq_output = model.forward(item_seq, torch.tensor([len(ids)]))  # [1 H]
        return (seq_output @ model.item_embedding.weight.T)[0]  # [N]


@pytest.mark.parametrize("model_name", MODELS)
def test_loaded_model_reproduces_its_test_run(model_name, trained, loaded):
    config, model, dataset, train_data, valid_data, test_data = loaded(model_name)
    checkpoint, result = trained[model_name]
    if model_name == "DPO4Rec":
        assert not os.path.exists(config["ref_model_path"])  # loads without its reference
    assert config["model"] == model_name and type(model).__name__ == "SASRec"  # the backbone
    assert not model.training
    # same data, same weights: the test metrics and every test user's rank, exactly
    trainer = Trainer(config, model)
    trainer.eval_collector.data_collect(train_data)  # fit() does this: training-split counts, tail set
    assert trainer.evaluate(test_data, load_best_model=False, show_progress=False) == result["test_result"]
    with open(result["result_file"], encoding="utf-8") as f:
        per_user = json.load(f)["per_user"]
    ranks = quick_start.test_ranks(trainer, test_data, head_tail_split(train_data.dataset, config["tail_ratio"]))
    assert ranks["user"] == per_user["user"] and ranks["rank"] == per_user["rank"]


@pytest.mark.parametrize("model_name", MODELS)
def test_recommends_the_item_after_the_last_one(model_name, loaded):
    _, model, dataset, *_ = loaded(model_name)
    history = _raw_history(USER)
    expected = _sasrec_scores(model, dataset, history)  # [N]
    scores, _ = full_sort_scores(model, dataset, [USER])  # [1 N]
    torch.testing.assert_close(scores[0], expected)
    # not the test row RecBole's case study scores (history without the last item)
    assert not torch.allclose(scores[0], _sasrec_scores(model, dataset, history[:-1]))
    best = dataset.id2token(dataset.iid_field, int(expected[1:].argmax()) + 1)  # [1:]: no padding
    assert recommend(model, dataset, [USER], k=1) == {USER: [best]}


def test_top_k_lists(loaded):
    _, model, dataset, *_ = loaded("LPO4Rec")
    items = set(dataset.field2id_token[dataset.iid_field][1:])
    top = recommend(model, dataset, [USER, "u2", USER], k=10)
    assert list(top) == [USER, "u2"]  # one list per distinct user, in order
    for tokens in top.values():
        assert len(tokens) == 10 and len(set(tokens)) == 10 and set(tokens) <= items
    # asking for more than there are: every real item once, never padding
    everything = recommend(model, dataset, USER, k=dataset.item_num + 5)[USER]
    assert sorted(everything) == sorted(items) and "[PAD]" not in everything


def test_exclude_history(loaded):
    _, model, dataset, *_ = loaded("SASRec")
    seen = set(_raw_history(USER))
    n_items = dataset.item_num - 1  # without padding
    kept = recommend(model, dataset, USER, k=n_items)[USER]
    assert seen <= set(kept)  # without the flag, seen items may come back
    fresh = recommend(model, dataset, USER, k=n_items, exclude_history=True)[USER]
    assert not seen & set(fresh) and len(fresh) == n_items - len(seen)
    assert fresh == [item for item in kept if item not in seen]  # same order otherwise
    assert not seen & set(recommend(model, dataset, USER, k=10, exclude_history=True)[USER])


def test_bad_user_and_k(loaded):
    _, model, dataset, *_ = loaded("SASRec")
    with pytest.raises(UserInputError, match=r"unknown user 'nobody' in data set 'tiny' \(120 users, e\.g\. u1"):
        recommend(model, dataset, [USER, "nobody"])
    with pytest.raises(UserInputError, match="unknown user"):
        recommend(model, dataset, ["[PAD]"])
    with pytest.raises(UserInputError, match="k must be a positive integer"):
        recommend(model, dataset, [USER], k=0)


def test_bad_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint\n")
    not_recbole = tmp_path / "weights.pth"
    torch.save({"weights": torch.zeros(2)}, not_recbole)
    for path, needle in [(tmp_path / "missing.pth", "does not exist"), (garbage, "cannot read checkpoint"),
                         (not_recbole, "is not a RecBole checkpoint")]:
        with pytest.raises(UserInputError, match=needle) as error:
            load_data_and_model(str(path))
        assert str(path) in str(error.value)


def _cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "recbole_lpo.recommend", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli(trained, loaded, tmp_path):
    checkpoint = trained["LPO4Rec"][0]
    _, model, dataset, *_ = loaded("LPO4Rec")
    done = _cli("--checkpoint", checkpoint, "--user", USER, "--user", "u2", "-k", "5", "--exclude-history",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = recommend(model, dataset, [USER, "u2"], k=5, exclude_history=True)
    assert done.stdout.splitlines() == [f"{user}\t{' '.join(items)}" for user, items in expected.items()]
    assert not list(tmp_path.iterdir())  # no log folders in the working directory

    garbage = tmp_path / "garbage.pth"
    garbage.write_text("garbage")
    for args, needle in [(["--checkpoint", checkpoint, "--user", "nobody"], "unknown user 'nobody'"),
                         (["--checkpoint", str(garbage), "--user", USER], f"cannot read checkpoint '{garbage}'")]:
        done = _cli(*args, cwd=tmp_path)
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
