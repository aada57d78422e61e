"""The built-data-set cache (recbole_lpo/data/cache.py): hits, misses, staleness, same results."""

import shutil

import pytest
import torch

import recbole_lpo.data.cache as cache
from recbole_lpo.config import Config
from recbole_lpo.quick_start import run_recbole_lpo

from conftest import FIXTURES, TINY_YAML


@pytest.fixture
def data_copy(workdir):
    """A private copy of the tiny data set (tests edit it) and a cache folder."""
    shutil.copytree(FIXTURES / "tiny", workdir / "data" / "tiny")
    return workdir / "data", workdir / "data_cache"


@pytest.fixture
def count_builds(monkeypatch):
    builds = []
    real = cache.create_dataset

    def counting(config):
        builds.append(config["dataset"])
        return real(config)

    monkeypatch.setattr(cache, "create_dataset", counting)
    return builds


def _config(data_path, cache_dir, **extra):
    return Config("SASRec", "tiny", [TINY_YAML],
                  dict({"data_path": str(data_path), "data_cache_dir": str(cache_dir)}, **extra))


def _prepare(config):
    prepared = cache.prepare_data(config)
    cache.store(prepared)
    return prepared.dataset, prepared.train_data, prepared.valid_data, prepared.test_data


def _entries(cache_dir):
    return sorted(p.name for p in cache_dir.glob("*.pkl"))


def test_second_load_comes_from_the_cache_and_equals_a_build(data_copy, count_builds):
    data_path, cache_dir = data_copy
    first = _prepare(_config(data_path, cache_dir))
    assert count_builds == ["tiny"] and len(_entries(cache_dir)) == 1
    config = _config(data_path, cache_dir, seed=5)  # seed is part of the key
    _prepare(config)
    assert len(count_builds) == 2 and len(_entries(cache_dir)) == 2
    config = _config(data_path, cache_dir, seed=5, train_batch_size=7)  # a training key is not
    second = _prepare(config)
    assert len(count_builds) == 2, "served from the cache"
    for built, loaded in zip(first[1:], second[1:]):
        for field in built.dataset.inter_feat.columns:
            assert torch.equal(built.dataset.inter_feat[field], loaded.dataset.inter_feat[field])
        assert loaded.dataset.config is config and loaded.config is config
    assert second[0].config is config and second[1].batch_size == 7


def test_edited_file_is_rebuilt_and_the_stale_entry_removed(data_copy, count_builds):
    data_path, cache_dir = data_copy
    before = len(_prepare(_config(data_path, cache_dir))[0].inter_feat)
    stale = _entries(cache_dir)
    inter = data_path / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines(keepends=True)
    inter.write_text("".join(lines[:-1]))  # the same size class, one interaction less
    dataset, train, _, _ = _prepare(_config(data_path, cache_dir))
    assert len(count_builds) == 2
    assert len(dataset.inter_feat) == before - 1  # the dropped interaction (a sequence sample)
    assert len(_entries(cache_dir)) == 1 and _entries(cache_dir) != stale


def test_data_config_change_is_a_new_entry(data_copy, count_builds):
    data_path, cache_dir = data_copy
    _prepare(_config(data_path, cache_dir))
    _, train, _, _ = _prepare(_config(data_path, cache_dir, MAX_ITEM_LIST_LENGTH=4))
    assert len(count_builds) == 2 and len(_entries(cache_dir)) == 2
    assert train.dataset.item_id_list_field and train.dataset.inter_feat["item_id_list"].shape[1] == 4


def test_cache_off_and_unreadable_entry(data_copy, count_builds):
    data_path, cache_dir = data_copy
    config = Config("SASRec", "tiny", [TINY_YAML], {"data_path": str(data_path), "data_cache_dir": None})
    _prepare(config)
    assert not cache_dir.exists()
    _prepare(_config(data_path, cache_dir))
    (entry,) = cache_dir.glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    _prepare(_config(data_path, cache_dir))  # rebuilt, rewritten
    assert len(count_builds) == 3 and entry.stat().st_size > 100


def test_run_from_the_cache_gives_the_same_result(data_copy, tiny_config, count_builds):
    data_path, cache_dir = data_copy
    settings = tiny_config(data_path=str(data_path), data_cache_dir=str(cache_dir), epochs=2)
    built = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], settings)
    cached = run_recbole_lpo("LPO4Rec", "tiny", [TINY_YAML], settings)
    assert len(count_builds) == 1
    assert built["best_valid_result"] == cached["best_valid_result"]
    assert built["test_result"] == cached["test_result"]
