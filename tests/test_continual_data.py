"""Table 1's data: Don't-Stop-Pretraining JSON-lines tasks (through a mirror folder, as the
hub), BBC News topics, their metrics, and their text as a continual pre-training corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest

from fem.data import check_task_source, download_task
from fem.errors import DataSourceError
from fem.finetuning.sweep import finetune
from fem.metrics import macro_f1, micro_f1
from fem.registry import get_task
from fem.settings import FinetuneSettings

CHEMPROT_LABELS = ["INHIBITOR", "SUBSTRATE", "ACTIVATOR", "AGONIST"]


def write_dsp_task(mirror, folder: str, rows: dict[str, list[tuple[str, str]]]) -> None:
    """JSON-lines files in DSP's format ({"text", "label", "metadata"}) under <mirror>/<hub id>."""
    base = mirror / "dont_stop_pretraining" / "data" / folder
    base.mkdir(parents=True)
    for split, examples in rows.items():
        with open(base / f"{split}.jsonl", "w") as handle:
            for i, (text, label) in enumerate(examples):
                handle.write(json.dumps({"text": text, "label": label, "metadata": {"i": i}}) + "\n")


def chemprot_rows(count: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    labels = [CHEMPROT_LABELS[i % 4] for i in range(count)]
    return [(f"<< compound {rng.integers(100)} >> binds [[ gene {i} ]] as {label.lower()}", label)
            for i, label in enumerate(labels)]  # fmt: skip


@pytest.fixture()
def dsp_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    write_dsp_task(mirror, "chemprot", {"train": chemprot_rows(40, 0), "dev": chemprot_rows(12, 1),
                                        "test": chemprot_rows(12, 2)})  # fmt: skip
    write_dsp_task(mirror, "citation_intent", {"train": [("we use their method", "USES"), ("as in prior work", "BACKGROUND")],
                                               "dev": [("unlike them", "COMPARES")], "test": [("see", "USES")]})  # fmt: skip
    return mirror


def test_jsonl_task_loads_from_a_mirror_with_labels_and_splits(dsp_mirror, tmp_path):
    counts = download_task("chemprot", tmp_path / "chemprot", str(dsp_mirror))
    assert counts == {"train": 40, "validation": 12, "test": 12}
    saved = datasets.load_from_disk(str(tmp_path / "chemprot"))
    names = saved["train"].features["label"].names
    assert names == sorted(CHEMPROT_LABELS)  # label ids: the train file's labels, sorted
    for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
        expected = [names.index(label) for _, label in chemprot_rows(len(saved[split]), seed)]
        assert saved[split]["label"] == expected
        assert saved[split]["idx"] == list(range(len(saved[split])))
        assert saved[split]["text"][0].startswith("<< compound")


def test_metric_choice_follows_dont_stop_pretraining(dsp_mirror, tmp_path, checkpoint):
    assert get_task("chemprot").metrics == ("micro_f1",) and get_task("rct").metrics == ("micro_f1",)
    assert get_task("citation_intent").metrics == ("macro_f1",)
    download_task("chemprot", tmp_path / "chemprot", str(dsp_mirror))
    settings = FinetuneSettings(seed=1, max_train_examples=None, max_eval_examples=None, max_length=32, epochs=1,
                                batch_size=8, learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.0)  # fmt: skip
    metrics = finetune(get_task("chemprot"), tmp_path / "chemprot", checkpoint, tmp_path / "out", settings,
                       run_labels={"strategy": "fe"})  # fmt: skip
    predictions = np.loadtxt(tmp_path / "out" / "predictions.csv", delimiter=",", skiprows=1, usecols=(2, 3))
    assert metrics["metric_names"] == ["micro_f1"]
    assert metrics["metrics"]["micro_f1"] == pytest.approx(micro_f1(predictions[:, 1], predictions[:, 0]))
    assert metrics["score"] == pytest.approx(np.mean(predictions[:, 0] == predictions[:, 1]))  # micro-F1 = accuracy


def test_dev_labels_missing_from_train_and_missing_files_are_named(dsp_mirror, tmp_path):
    with pytest.raises(DataSourceError, match=r"dev/test labels \['COMPARES'\] never occur in train"):
        download_task("citation_intent", tmp_path / "ci", str(dsp_mirror))
    (dsp_mirror / "dont_stop_pretraining" / "data" / "chemprot" / "test.jsonl").unlink()
    with pytest.raises(DataSourceError, match="chemprot.*test.jsonl"):
        check_task_source(get_task("chemprot"), str(dsp_mirror))


def test_bbc_news_is_a_fixed_seeded_five_topic_split(tmp_path):
    counts = download_task("bbc_news", tmp_path / "bbc")
    # 1781 / 222 / 222 assigned by the seeded split, less the exact copies dropped (tests/test_data.py)
    assert counts == {"train": 1719, "validation": 210, "test": 195}
    saved = datasets.load_from_disk(str(tmp_path / "bbc"))
    assert saved["train"].features["label"].names == ["business", "entertainment", "politics", "sports", "tech"]
    ids = [set(saved[s]["idx"]) for s in ("train", "validation", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again = download_task("bbc_news", tmp_path / "bbc2")
    assert (
        again == counts
        and datasets.load_from_disk(str(tmp_path / "bbc2"))["validation"]["idx"] == saved["validation"]["idx"]
    )


def test_task_text_becomes_a_corpus(dsp_mirror, tmp_path):
    download_task("chemprot", tmp_path / "chemprot", str(dsp_mirror))
    done = subprocess.run([sys.executable, "-m", "fem", "task-text", "--task", "chemprot", "--task-dir",
                           str(tmp_path / "chemprot"), "--out", str(tmp_path / "corpus")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    corpus = datasets.load_from_disk(str(tmp_path / "corpus"))
    assert corpus.column_names == ["text"] and corpus["text"] == [text for text, _ in chemprot_rows(40, 0)]


def test_macro_and_micro_f1_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp 2, predicted 2, gold 3 -> F1 0.8; class 1: 1, 2, 2 -> 0.5; class 2: 1, 2, 1 -> 2/3
    assert macro_f1(predictions, labels) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert micro_f1(predictions, labels) == pytest.approx(4 / 6)
    assert macro_f1(np.array([0, 0]), np.array([1, 1])) == 0.0  # classes never right count as 0
