import csv

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from fem.data import get_task
from fem.finetuning import finetune
from fem.modeling import build_bert
from fem.settings import FinetuneSettings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny randomly initialised BERT saved like a pre-training checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "model"
    torch.manual_seed(0)
    build_bert(len(tokenizer), 32, 1, 2, 64).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def task_data(tmp_path, mirror, name: str, n_train: int = 40, n_dev: int = 30):
    loaded = datasets.load_dataset(str(mirror / "nyu-mll" / "glue"), name)
    data = datasets.DatasetDict({"train": loaded["train"].select(range(n_train)),
                                 "validation": loaded["validation"].select(range(n_dev))})  # fmt: skip
    data.save_to_disk(str(tmp_path / name))
    return tmp_path / name


SETTINGS = FinetuneSettings(seed=1, max_train_examples=32, max_eval_examples=24, max_length=32, epochs=1,
                            batch_size=8, learning_rate=1e-4, warmup_ratio=0.1, weight_decay=0.01)  # fmt: skip


@pytest.mark.parametrize(
    "name, metric_names",
    [("sst2", ["accuracy"]), ("mrpc", ["f1", "accuracy"]), ("stsb", ["pearson", "spearman"]),
     ("cola", ["matthews_correlation"])],
)  # fmt: skip
def test_finetune_produces_valid_metrics(tmp_path, mirror, checkpoint, name, metric_names):
    task_dir = task_data(tmp_path, mirror, name)
    result = finetune(get_task(name), task_dir, checkpoint, tmp_path / "out", SETTINGS, run_labels={"strategy": "fe"})
    assert list(result["metrics"]) == metric_names
    assert result["train_examples"] == 32 and result["eval_examples"] == 24
    assert result["run"] == {"strategy": "fe"}
    assert all(np.isfinite(value) for value in result["metrics"].values())
    assert result["score"] == pytest.approx(np.mean(list(result["metrics"].values())))
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24
    if name == "stsb":
        return
    predicted = np.array([int(r["prediction"]) for r in rows])
    gold = np.array([int(r["label"]) for r in rows])
    assert sum(result["prediction_counts"].values()) == 24
    if "accuracy" in result["metrics"]:
        assert result["metrics"]["accuracy"] == pytest.approx(np.mean(predicted == gold))
    if name == "mrpc":  # F1 of the positive class, by hand from the predictions file
        tp = np.sum((predicted == 1) & (gold == 1))
        fp, fn = np.sum((predicted == 1) & (gold == 0)), np.sum((predicted == 0) & (gold == 1))
        assert result["metrics"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)


def test_finetune_learns_a_training_set_by_heart(tmp_path, mirror, checkpoint):
    """The loop really optimises: scored on its own 32 training sentences, it fits them."""
    loaded = datasets.load_dataset(str(mirror / "nyu-mll" / "glue"), "sst2")["train"].select(range(32))
    datasets.DatasetDict({"train": loaded, "validation": loaded}).save_to_disk(str(tmp_path / "sst2"))
    settings = FinetuneSettings(seed=1, max_train_examples=None, max_eval_examples=None, max_length=32, epochs=20,
                                batch_size=8, learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.0)  # fmt: skip
    result = finetune(get_task("sst2"), tmp_path / "sst2", checkpoint, tmp_path / "out", settings)
    majority = max(np.mean(loaded["label"]), 1 - np.mean(loaded["label"]))
    assert majority < 0.7  # so that 90% accuracy is not reachable by a constant prediction
    assert result["metrics"]["accuracy"] >= 0.9


def test_finetune_is_deterministic(tmp_path, mirror, checkpoint):
    task_dir = task_data(tmp_path, mirror, "rte")
    first = finetune(get_task("rte"), task_dir, checkpoint, tmp_path / "a", SETTINGS)
    second = finetune(get_task("rte"), task_dir, checkpoint, tmp_path / "b", SETTINGS)
    assert first["final_train_loss"] == second["final_train_loss"]
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()
    assert AutoTokenizer.from_pretrained(str(checkpoint)).cls_token == "[CLS]"
