import csv
import json

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from fem.finetuning import sweep
from fem.finetuning.harness import SUBSAMPLE_SEED, RunOutputs
from fem.finetuning.sweep import finetune, sweep_learning_rates
from fem.registry import get_task
from fem.settings import FinetuneSettings


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
    assert result["train_examples"] == 32 and result["eval_examples"] == {"validation": 24}
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
    assert sum(result["prediction_counts"]["validation"].values()) == 24
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


def test_mnli_scores_matched_and_mismatched_dev_sets(tmp_path, checkpoint):
    """A three-class sentence-pair task with two dev splits (MNLI is not in the offline
    mirror: a fixture in its hub format)."""
    rng = np.random.default_rng(0)
    words = ["cats", "dogs", "sleep", "run", "often", "never", "the", "park", "at", "night"]

    def split(n, offset):
        return datasets.Dataset.from_dict({
            "premise": [" ".join(rng.choice(words, 6)) for _ in range(n)],
            "hypothesis": [" ".join(rng.choice(words, 4)) for _ in range(n)],
            "label": [int(i % 3) for i in range(n)],
            "idx": list(range(offset, offset + n)),
        })  # fmt: skip

    datasets.DatasetDict({"train": split(30, 0), "validation_matched": split(12, 100),
                          "validation_mismatched": split(9, 200)}).save_to_disk(str(tmp_path / "mnli"))  # fmt: skip
    result = finetune(get_task("mnli"), tmp_path / "mnli", checkpoint, tmp_path / "out", SETTINGS)
    assert result["metric_names"] == ["accuracy_matched", "accuracy_mismatched"]
    assert result["eval_examples"] == {"validation_matched": 12, "validation_mismatched": 9}
    assert result["score"] == pytest.approx(np.mean(list(result["metrics"].values())))
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name, count in (("validation_matched", 12), ("validation_mismatched", 9)):
        of_split = [r for r in rows if r["split"] == name]
        assert len(of_split) == count
        accuracy = np.mean([r["label"] == r["prediction"] for r in of_split])
        assert result["metrics"]["accuracy_" + name.removeprefix("validation_")] == pytest.approx(accuracy)
    assert all(0 <= int(r["prediction"]) <= 2 for r in rows)


def test_a_missing_dev_split_is_named(tmp_path, checkpoint, mirror):
    task_dir = task_data(tmp_path, mirror, "rte")
    with pytest.raises(ValueError, match=r"no split\(s\) \['validation_matched', 'validation_mismatched'\]"):
        finetune(get_task("mnli"), task_dir, checkpoint, tmp_path / "out", SETTINGS)


def test_learning_rate_sweep_keeps_the_best_dev_score_and_writes_each_metrics_json_once(tmp_path, monkeypatch):
    """Runs stubbed (train_glue returns a score per rate): the best rate's files are kept in
    out/, every rate's own in out/sweep/lr-<rate>/, and each folder's metrics.json is written
    once, the kept one with the sweep's choice."""
    scores = {1e-4: 0.6, 3e-4: 0.8, 1e-3: 0.7}
    runs = []

    def train(task, task_dir, checkpoint_dir, settings, threads, run_labels, world, live):
        runs.append(settings.learning_rate)
        lr = settings.learning_rate
        return RunOutputs({"score": scores[lr], "settings": {"learning_rate": lr}}, {"predictions.csv": f"lr {lr}\n"},
                          {"train/lr": [(1, lr)]})  # fmt: skip

    written = []
    write_run = sweep.write_run

    def recording_write_run(out_dir, outputs, metrics=None):
        written.append(out_dir)
        write_run(out_dir, outputs, metrics)

    monkeypatch.setattr(sweep, "train_glue", train)
    monkeypatch.setattr(sweep, "write_run", recording_write_run)
    (tmp_path / "out" / "sweep" / "lr-0.1").mkdir(parents=True)  # an earlier sweep's run: removed
    result = sweep_learning_rates(get_task("sst2"), "data", "model", tmp_path / "out", SETTINGS, list(scores))
    assert runs == list(scores)
    assert result["learning_rate"] == 3e-4
    assert result["learning_rate_sweep"] == {"0.0001": 0.6, "0.0003": 0.8, "0.001": 0.7}
    assert (tmp_path / "out" / "predictions.csv").read_text() == "lr 0.0003\n"
    assert (tmp_path / "out" / "curves" / "plots" / "metrics" / "train" / "lr.tsv").read_text().split() == [
        "step", "lr", "1", "0.0003"]  # the kept run's curves  # fmt: skip
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == result
    assert json.loads((tmp_path / "out" / "sweep" / "lr-0.001" / "metrics.json").read_text())["score"] == 0.7
    assert (tmp_path / "out" / "sweep" / "lr-0.001" / "predictions.csv").read_text() == "lr 0.001\n"
    assert sorted(p.name for p in (tmp_path / "out" / "sweep").iterdir()) == ["lr-0.0001", "lr-0.0003", "lr-0.001"]
    assert sorted(written) == sorted({*written}) and len(written) == 4  # three rates and the kept run, once each
    single = sweep_learning_rates(get_task("sst2"), "data", "model", tmp_path / "single", SETTINGS, [1e-3])
    assert single["learning_rate"] == 1e-3 and not (tmp_path / "single" / "sweep").exists()
    assert json.loads((tmp_path / "single" / "metrics.json").read_text()) == single
    assert written[4:] == [tmp_path / "single"]


def test_sweep_of_real_runs_keeps_the_chosen_runs_files(tmp_path, mirror, checkpoint):
    """Two real learning rates: out/ holds the chosen run's predictions and its metrics plus
    the sweep's choice; the runs under sweep/ hold their own metrics.json."""
    task_dir = task_data(tmp_path, mirror, "stsb")
    result = sweep_learning_rates(get_task("stsb"), task_dir, checkpoint, tmp_path / "out", SETTINGS, [1e-3, 3e-4],
                                  run_labels={"strategy": "fe"})  # fmt: skip
    chosen = tmp_path / "out" / "sweep" / f"lr-{result['learning_rate']:g}"
    own = json.loads((chosen / "metrics.json").read_text())
    assert "learning_rate" not in own and own["settings"]["learning_rate"] == result["learning_rate"]
    assert {k: v for k, v in result.items() if k not in ("learning_rate", "learning_rate_sweep", "wall_seconds")} == {
        k: v for k, v in own.items() if k != "wall_seconds"
    }
    assert (tmp_path / "out" / "predictions.csv").read_bytes() == (chosen / "predictions.csv").read_bytes()
    assert result["score"] == max(result["learning_rate_sweep"].values())


@pytest.mark.parametrize("name", ["mrpc", "cola", "stsb"])
def test_trivial_baseline_is_the_training_majority_scored_on_the_same_dev_examples(tmp_path, mirror, checkpoint,
                                                                                     name):  # fmt: skip
    """The majority class of the 32 subsampled training examples, predicted for all 24 dev
    examples and scored by hand from the dev labels; STS-B (regression): correlation 0."""
    task_dir = task_data(tmp_path, mirror, name)
    result = finetune(get_task(name), task_dir, checkpoint, tmp_path / "out", SETTINGS)
    assert list(result["trivial_metrics"]) == list(result["metrics"])
    assert result["trivial_score"] == pytest.approx(np.mean(list(result["trivial_metrics"].values())))
    if name == "stsb":
        assert result["trivial_metrics"] == {"pearson": 0.0, "spearman": 0.0}
        assert result["trivial_predictor"].startswith("the mean training label")
        return
    data = datasets.load_from_disk(str(task_dir))
    keep = np.sort(np.random.default_rng(SUBSAMPLE_SEED).permutation(40)[:32])
    train = [data["train"][int(i)]["label"] for i in keep]
    majority = 1 if train.count(1) > train.count(0) else 0
    dev = np.array(data["validation"]["label"][:24])
    names = get_task(name).label_names
    assert result["trivial_predictor"] == f"majority class {names[majority]!r} of the training set"
    if name == "cola":  # a constant prediction has no correlation
        assert result["trivial_metrics"] == {"matthews_correlation": 0.0}
        return
    right = int(np.sum(dev == majority))
    assert result["trivial_metrics"]["accuracy"] == right / 24
    positives = int(np.sum(dev == 1))  # F1 of class 1: precision positives/24, recall 1 when predicting 1
    assert result["trivial_metrics"]["f1"] == pytest.approx(2 * positives / (positives + 24) if majority else 0.0)
    assert 0.5 < result["trivial_score"] < 1  # MRPC's dev set is mostly paraphrases: a real baseline to beat
