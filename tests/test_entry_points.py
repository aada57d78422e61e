"""The README's "From Python" section: its snippets run, and its table of RecBole entry points holds."""

import importlib
import re

import pytest

from conftest import FIXTURES, ROOT


def _snippets():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("index", range(2))
def test_readme_snippet_runs(index, workdir, monkeypatch, capsys):
    """Each snippet as written, on the tiny fixture: the data set name is the only change."""
    snippets = _snippets()
    assert len(snippets) == 2, "the section's snippets changed: update this test"
    monkeypatch.setenv("RECBOLE_LPO_DATA", str(FIXTURES))  # the default data folder (paths.default_data_path)
    code = snippets[index].replace('"amazon-beauty"', '"tiny"')
    namespace = {}
    exec(compile(code, f"README snippet {index + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "tailndcg@10" in printed or "0." in printed
    if index == 0:
        assert type(namespace["model"]).__name__ == "SASRec"  # LPO4Rec loads as its backbone
        assert namespace["config"]["model"] == "LPO4Rec"
    else:
        assert type(namespace["trainer"]).__name__ == "PreferenceTrainer"
        assert set(namespace["trainer"].evaluate(namespace["test_data"])) >= {"hit@10", "tailhit@10"}


def test_recbole_entry_points_the_table_says_do_not_find_plugin_models():
    import recbole_lpo  # noqa: F401
    from recbole.utils import get_model

    with pytest.raises(Exception):
        get_model("LPO4Rec")
    from recbole_lpo.utils import get_model as plugin_get_model

    assert plugin_get_model("LPO4Rec").__name__ == "LPO4Rec"


def test_recbole_quick_start_is_not_importable_here():
    """The README says so (RecBole imports ray and thop there); if it ever imports, update the README."""
    with pytest.raises(ImportError):
        importlib.import_module("recbole.quick_start")
