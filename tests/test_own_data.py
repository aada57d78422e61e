"""A user's own atomic file, no YAML: the default sequential protocol (properties/dataset/default-sequential.yaml)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

NOTE = "using the default sequential protocol"
TINY_MODEL = {"epochs": 1, "n_layers": 1, "n_heads": 1, "hidden_size": 16, "inner_size": 32,
              "train_batch_size": 64, "show_progress": False}
PLUGIN_MODELS = ["LPO4Rec", "DPO4Rec", "SDPO4Rec", "SimPO4Rec", "ORPO4Rec", "R2Rec", "MELT", "CITIES"]


def write_inter(folder, header="user_id:token\titem_id:token\ttimestamp:float", n_users=30, n_items=40):
    """``folder/mydata/mydata.inter``: 7 to 9 interactions per user at distinct times, rows shuffled
    (file order is not time order). Returns the rows as (user, item, time) tuples."""
    rng = np.random.RandomState(3)
    rows = []
    for user in range(n_users):
        times = rng.choice(np.arange(1000, 2000), size=rng.randint(7, 10), replace=False)
        rows += [(f"u{user}", f"i{rng.randint(n_items)}", float(t)) for t in times]
    order = rng.permutation(len(rows))
    (folder / "mydata").mkdir(parents=True)
    lines = [header] + ["\t".join(map(str, rows[i])) for i in order]
    (folder / "mydata" / "mydata.inter").write_text("\n".join(lines) + "\n")
    return rows


@pytest.fixture
def own_data(tmp_path, monkeypatch):
    """A fresh data set in tmp_path/data; the working directory is another folder."""
    rows = write_inter(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outputs = {"data_path": str(tmp_path / "data"), "checkpoint_dir": str(elsewhere / "saved"),
               "result_dir": str(elsewhere / "results")}
    return rows, outputs


def _config(model, outputs, config_files=None, cmd_args=None, **overrides):
    from recbole_lpo.config import Config

    return Config(model, "mydata", config_files, dict(outputs, **overrides), cmd_args=cmd_args)


def test_default_protocol_is_leave_one_out_in_time_order(own_data):
    from recbole.data import create_dataset, data_preparation

    rows, outputs = own_data
    config = _config("SASRec", outputs)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert config["valid_metric"] == "NDCG@10" and "TailNDCG" in config["metrics"]
    assert config["train_neg_sample_args"]["distribution"] == "none" and config["MAX_ITEM_LIST_LENGTH"] == 10
    assert NOTE in config.protocol_note

    train, valid, test = data_preparation(config, create_dataset(config))
    by_user = {}
    for user, item, time in rows:
        by_user.setdefault(user, []).append((time, item))
    for split, back in ((test, 1), (valid, 2)):
        data = split.dataset
        users = data.id2token("user_id", data.inter_feat["user_id"].numpy())
        items = data.id2token("item_id", data.inter_feat["item_id"].numpy())
        times = data.inter_feat["timestamp"].numpy()
        assert sorted(users) == sorted(by_user)  # exactly one target per user
        for user, item, time in zip(users, items, times):
            assert (time, item) == sorted(by_user[user])[-back]  # the latest (valid: second latest) by time
    assert len(train.dataset.inter_feat) == sum(len(v) - 3 for v in by_user.values())  # the rest trains


def test_key_value_and_config_files_win_over_the_default_protocol(own_data, tmp_path, monkeypatch):
    _, outputs = own_data
    user_yaml = tmp_path / "my.yaml"
    user_yaml.write_text("topk: [3]\nvalid_metric: Hit@3\nMAX_ITEM_LIST_LENGTH: 7\n")
    config = _config("LPO4Rec", outputs, [str(user_yaml)], cmd_args=["--MAX_ITEM_LIST_LENGTH=5"])
    assert config["topk"] == [3] and config["valid_metric"] == "Hit@3"
    assert config["MAX_ITEM_LIST_LENGTH"] == 5  # command line > config file > default protocol
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}  # the rest stays
    in_force = config.protocol_note.split("in force from properties/dataset/default-sequential.yaml: ")[1]
    assert "eval_args" in in_force and "topk" not in in_force and "MAX_ITEM_LIST_LENGTH" not in in_force


def test_default_protocol_accepts_what_recbole_accepts(own_data):
    _, outputs = own_data
    config = _config("SASRec", outputs, topk=10, metrics="Hit", valid_metric="Hit@10")
    assert config["topk"] == [10] and config["metrics"] == ["Hit"]


def test_no_note_when_every_protocol_key_is_set(own_data, tmp_path):
    import yaml

    _, outputs = own_data
    with open(ROOT / "properties" / "dataset" / "default-sequential.yaml") as f:
        protocol = yaml.safe_load(f)
    config = _config("SASRec", outputs, load_col={"inter": ["user_id", "item_id", "timestamp"]}, **protocol)
    assert config.protocol_note is None


def test_own_yaml_or_non_sequential_model_gets_no_default_protocol(own_data):
    from recbole_lpo.config import Config

    _, outputs = own_data
    assert Config("BPR", "mydata", None, dict(outputs)).protocol_note is None
    shipped = Config("SASRec", "amazon-beauty", None, {})
    assert shipped.protocol_note is None and shipped["topk"] == [5, 10, 20]


@pytest.mark.parametrize("header,needle", [
    ("user_id:token\titem_id:token", "has no column 'timestamp' (TIME_FIELD)"),
    ("user_id:token\titem_id:token\ttimestamp:token", "time column 'timestamp' is typed token, expected float"),
    ("user:token\titem_id:token\ttimestamp:float", "has no column 'user_id' (USER_ID_FIELD)"),
])
def test_missing_or_mistyped_column_is_one_clear_error(header, needle, tmp_path, monkeypatch):
    from recbole_lpo.errors import UserInputError

    write_inter(tmp_path, header=header)
    with pytest.raises(UserInputError) as error:
        _config("SASRec", {"data_path": str(tmp_path)})
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_time_field_named_in_the_header(tmp_path, monkeypatch):
    write_inter(tmp_path, header="user_id:token\titem_id:token\tts:float")
    config = _config("SASRec", {"data_path": str(tmp_path), "TIME_FIELD": "ts"})
    assert config["load_col"] == {"inter": ["user_id", "item_id", "ts"]}


@pytest.mark.parametrize("model,extra", [(m, {}) for m in PLUGIN_MODELS] + [("GRU4Rec", {"preference_loss": "lpo"})])
def test_model_yaml_alone_makes_the_model_trainable(model, extra, own_data, tmp_path, monkeypatch):
    """CE and no sampled negatives come from the model's YAML, not only from a protocol."""
    import recbole_lpo.config
    from recbole_lpo.errors import UserInputError

    _, outputs = own_data
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    monkeypatch.setattr(recbole_lpo.config, "DEFAULT_PROTOCOL", empty)
    config = _config(model, outputs, **extra)
    assert config["loss_type"] == "CE" and config["train_neg_sample_args"]["distribution"] == "none"
    with pytest.raises(UserInputError, match="train_neg_sample_args"):
        _config("SASRec", outputs)  # RecBole's own YAML leaves the sampled default in place


def test_sasrec_trains_and_evaluates_with_tail_metrics_logging_the_protocol_once(own_data, caplog):
    from recbole_lpo.quick_start import run_recbole_lpo

    _, outputs = own_data
    result = run_recbole_lpo("SASRec", "mydata", None, dict(outputs, **TINY_MODEL))
    assert {"hit@10", "ndcg@10", "tailhit@10", "tailndcg@10", "tailitemshare@10"} <= set(result["test_result"])
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10"]
    assert sum(NOTE in record.getMessage() for record in caplog.records) == 1
    assert os.path.dirname(result["result_file"]) == outputs["result_dir"]


def test_cli_runs_lpo4rec_on_own_data_with_only_data_path(own_data):
    """The issue's command: no YAML, only --data_path, from another working directory."""
    _, outputs = own_data
    tiny = [f"--{key}={value}" for key, value in TINY_MODEL.items()]
    command = [sys.executable, str(ROOT / "run_recbole_lpo.py"), "--model=LPO4Rec", "--dataset=mydata",
               f"--data_path={outputs['data_path']}", f"--checkpoint_dir={outputs['checkpoint_dir']}",
               f"--result_dir={outputs['result_dir']}", *tiny]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=os.getcwd(),
                         env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (out.stdout + out.stderr).count(NOTE) == 1
    (result_file,) = os.listdir(outputs["result_dir"])
    record = json.loads(open(os.path.join(outputs["result_dir"], result_file)).read())
    assert record["model"] == "LPO4Rec" and record["dataset"] == "mydata"
    assert 0 <= record["test_result"]["tailndcg@10"] <= 1 and len(record["per_user"]["rank"]) == 30


def test_config_reads_overrides_from_cmd_args_never_sys_argv(own_data, monkeypatch):
    """A script's own command line is not a config source; cmd_args is, in RecBole's --key=value form."""
    from recbole_lpo.errors import UserInputError

    _, outputs = own_data
    monkeypatch.setattr(sys, "argv", ["my_script.py", "--epochs=7", "--whatever"])
    assert _config("SASRec", outputs)["epochs"] != 7
    assert _config("SASRec", outputs, cmd_args=["--epochs=7"])["epochs"] == 7
    with pytest.raises(UserInputError, match="unrecognised argument 'epochs=7'"):
        _config("SASRec", outputs, cmd_args=["epochs=7"])
    with pytest.raises(UserInputError, match="--epochs is given twice"):
        _config("SASRec", outputs, cmd_args=["--epochs=7", "--epochs=8"])
