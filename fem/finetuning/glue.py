"""Fine-tuning on a GLUE task (or a Table 1 text-classification task) and scoring it on its
dev set(s); the shared data, loop and outputs are fem.finetuning.harness.

The classifier is transformers' BertForSequenceClassification: a fresh linear head on the
pooler output ([CLS] -> dense -> tanh). An MLM-only checkpoint has no trained pooler (BERT
trained it with next-sentence prediction), so the pooler starts random and is trained here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from fem.data import task_label_names
from fem.distributed import World
from fem.finetuning.harness import RunOutputs, load_task_splits, run_outputs, run_scores, start_training, train_epochs
from fem.live_metrics import LiveCurves
from fem.metrics import compute_metrics, constant_metrics, majority_label
from fem.registry import Task
from fem.settings import FinetuneSettings

OUTPUTS = ("metrics.json", "predictions.csv", "curves")  # the files of a run (fem finetune declares them)


def encode(tokenizer, rows, task: Task, max_length: int) -> list[list[int]]:
    """Token ids of each example ([CLS] a [SEP] (b [SEP])), truncated to max_length."""
    columns = [list(rows[c]) for c in task.text_columns]
    return tokenizer(*columns, truncation=True, max_length=max_length)["input_ids"]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T]) padded to the longest sequence."""
    longest = max(map(len, sequences))
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    return ids, attention


@torch.no_grad()
def predict(model, encoded: list[list[int]], pad_id: int, is_regression: bool, batch_size: int = 128) -> np.ndarray:
    """Class ids (or regression values) for each encoded example."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(encoded), batch_size):
        ids, attention = pad_batch(encoded[start : start + batch_size], pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
        outputs.append(logits[:, 0] if is_regression else logits.argmax(dim=-1))
    model.train()
    return torch.cat(outputs).cpu().numpy()


def trivial_prediction(train_labels: np.ndarray, label_names: tuple[str, ...] | None) -> tuple[float, str]:
    """The trivial predictor of a task, fit on its (subsampled) training labels: the majority
    class (classification, `label_names` its class names) or the mean label (regression,
    `label_names` None); returns (the constant it predicts, a description of it)."""
    if label_names is None:
        mean = float(np.mean(train_labels))
        return mean, f"the mean training label {mean:.4g} for every example"
    majority = majority_label(train_labels)
    return majority, f"majority class {label_names[majority]!r} of the training set"


def train_glue(task: Task, task_dir: str | Path, checkpoint_dir: str | Path, settings: FinetuneSettings,
               threads: int = 1, run_labels: dict | None = None, world: World | None = None,
               live: LiveCurves | None = None) -> RunOutputs:  # fmt: skip
    """Fine-tune `checkpoint_dir` on `task` (data saved at `task_dir`) and score it on each of
    the task's dev splits with the task's metrics (fem.registry); writes nothing but what `live`
    (DVCLive, harness.train_epochs) appends while it trains.

    With one dev split the metrics are named as in the registry ("accuracy"); with several
    (MNLI) they get the split's suffix ("accuracy_matched", "accuracy_mismatched"). The score
    is the mean of all of them. Beside them the result holds the trivial baseline on the same
    dev examples (trivial_prediction): trivial_metrics (the same names), trivial_score and
    trivial_predictor. Files: predictions.csv (split, idx, label, prediction per dev example)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data, train, devs = load_task_splits(task, task_dir, settings, threads)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    train_ids = encode(tokenizer, train, task, settings.max_length)
    dtype = torch.float32 if task.is_regression else torch.long
    train_labels = torch.tensor(list(train["label"]), dtype=dtype)
    label_names = task_label_names(task, train)

    def load_model() -> torch.nn.Module:
        from fem.lichee import register as register_model_classes

        register_model_classes()  # a LICHEE encoder loads with its coarse embeddings (fem/lichee.py)
        return AutoModelForSequenceClassification.from_pretrained(
            str(checkpoint_dir),
            use_safetensors=True,  # our checkpoints; never a pickled .bin
            num_labels=1 if task.is_regression else len(label_names),
            problem_type="regression" if task.is_regression else "single_label_classification",
        )

    world = world or World()  # under torchrun the CLI passes its World: each rank trains a share
    training = start_training(load_model, len(train_ids), settings, world)
    device = training.device
    train_labels = train_labels.to(device)
    print(
        f"finetune {task.name}: {len(train_ids)} train / "
        + " + ".join(f"{len(d)} {split}" for split, d in devs.items())
        + f" examples, {training.total_steps} steps, lr {settings.learning_rate:g}",
        flush=True,
    )

    def batch_inputs(rows: np.ndarray) -> dict[str, torch.Tensor]:
        ids, attention = pad_batch([train_ids[i] for i in rows], tokenizer.pad_token_id)
        labels = train_labels[torch.from_numpy(rows).to(device)]
        return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "labels": labels}

    losses = train_epochs(training, batch_inputs, live=live)
    constant, trivial_predictor = trivial_prediction(train_labels.cpu().numpy(), label_names)
    metrics, trivial_metrics, counts, predictions_csv = evaluate(
        training.model, tokenizer, task, devs, settings.max_length, label_names, constant
    )
    details = {
        "prediction_counts": counts or None,  # predicted dev labels per split and class (None for regression)
        "train_examples": len(train_ids),
        "train_examples_available": len(data["train"]),
        "eval_examples": {split: len(dev) for split, dev in devs.items()},
        "eval_splits": list(devs),
    }
    scores = run_scores(metrics, trivial_metrics, tuple(metrics), trivial_predictor)
    return run_outputs(task, run_labels, scores, details, training, losses, {"predictions.csv": predictions_csv})


def evaluate(
    model, tokenizer, task: Task, devs: dict, max_length: int, label_names: tuple[str, ...] | None, constant: float
) -> tuple[dict[str, float], dict[str, float], dict[str, dict], str]:
    """Score `model` on each dev split of `devs` with the task's metrics, and the trivial
    predictor (`constant` for every example) on the same examples. Returns (metrics, the
    trivial predictor's metrics, {split: {class name: predicted count}} ({} for regression),
    the text of predictions.csv)."""
    metrics: dict[str, float] = {}
    trivial_metrics: dict[str, float] = {}
    counts: dict[str, dict] = {}
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["split", "idx", "label", "prediction"])
    for split, dev in devs.items():
        dev_labels = np.asarray(list(dev["label"]))
        predictions = predict(model, encode(tokenizer, dev, task, max_length), tokenizer.pad_token_id,
                              task.is_regression)  # fmt: skip
        suffix = "" if len(devs) == 1 else "_" + split.removeprefix("validation_")
        for name, value in compute_metrics(task.metrics, predictions, dev_labels).items():
            metrics[name + suffix] = value
        for name, value in constant_metrics(task.metrics, constant, dev_labels).items():
            trivial_metrics[name + suffix] = value
        if not task.is_regression:
            counts[split] = {name: int(np.sum(predictions == i)) for i, name in enumerate(label_names)}
            if max(counts[split].values()) == len(predictions):
                print(f"warning: {task.name} {split}: every prediction is the same class {counts[split]}", flush=True)
        rows = zip(list(dev["idx"]), dev_labels.tolist(), predictions.tolist(), strict=True)
        writer.writerows((split, idx, label, prediction) for idx, label, prediction in rows)
    return metrics, trivial_metrics, counts, table.getvalue()
