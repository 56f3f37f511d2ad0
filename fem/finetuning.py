"""Fine-tuning a pre-trained checkpoint on a GLUE task and scoring it on the dev set(s),
and the learning-rate sweep shared with SQuAD (fem/squad.py).

A plain loop: AdamW, linear warm-up and decay, batches padded to their longest example.
The classifier is transformers' BertForSequenceClassification: a fresh linear head on the
pooler output ([CLS] -> dense -> tanh). An MLM-only checkpoint has no trained pooler (BERT
trained it with next-sentence prediction), so the pooler starts random and is trained here.
The training subsample (tiny scale) is drawn with a fixed seed so that every strategy and
seed sees the same examples; the fine-tuning seed changes the head's initialisation,
dropout and the order of examples.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fem.data import task_label_names
from fem.distributed import World, batch_share, data_parallel, seed_rank_stream
from fem.metrics import compute_metrics, constant_metrics, majority_label, task_score
from fem.optimization import finetuning_optimizer, shared_step
from fem.registry import Task
from fem.settings import FinetuneSettings

SUBSAMPLE_SEED = 0


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


def finetune(
    task: Task,
    task_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    settings: FinetuneSettings,
    threads: int = 1,
    run_labels: dict | None = None,
    metric_names: tuple[str, ...] | None = None,
    world: World | None = None,
) -> dict:
    """Fine-tune `checkpoint_dir` on `task` (data saved at `task_dir`), evaluate on each of
    the task's dev splits with `metric_names` (default: the task's). Writes
    out_dir/metrics.json and out_dir/predictions.csv; returns the metrics.

    With one dev split the metrics are named as given ("accuracy"); with several (MNLI) they
    get the split's suffix ("accuracy_matched", "accuracy_mismatched"). The score is the mean
    of all of them. `run_labels` (strategy, seeds, ...) are stored under "run" in
    metrics.json so tables can group runs without parsing paths. Beside them metrics.json
    holds the trivial baseline on the same dev examples (trivial_prediction):
    trivial_metrics (the same names), trivial_score and trivial_predictor."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    metric_names = tuple(metric_names or task.metrics)
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    data = datasets.load_from_disk(str(task_dir))
    missing = [split for split in ("train", *task.eval_splits) if split not in data]
    if missing:
        raise ValueError(f"{task_dir}: no split(s) {missing} for task {task.name}; it has {list(data)}")
    train = data["train"]
    if settings.max_train_examples is not None and len(train) > settings.max_train_examples:
        keep = np.random.default_rng(SUBSAMPLE_SEED).permutation(len(train))[: settings.max_train_examples]
        train = train.select(np.sort(keep))
    devs = {}
    for split in task.eval_splits:
        dev = data[split]
        if settings.max_eval_examples is not None and len(dev) > settings.max_eval_examples:
            dev = dev.select(range(settings.max_eval_examples))
        devs[split] = dev

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    train_ids = encode(tokenizer, train, task, settings.max_length)
    dtype = torch.float32 if task.is_regression else torch.long
    train_labels = torch.tensor(list(train["label"]), dtype=dtype)

    world = world or World()  # under torchrun the CLI passes its World: each rank trains a share
    torch.manual_seed(settings.seed)
    label_names = task_label_names(task, train)
    num_labels = 1 if task.is_regression else len(label_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint_dir),
        use_safetensors=True,  # our checkpoints; never a pickled .bin
        num_labels=num_labels,
        problem_type="regression" if task.is_regression else "single_label_classification",
    )
    device = world.device()
    model.to(device).train()
    seed_rank_stream(settings.seed, world)
    trainer = data_parallel(model, world)
    train_labels = train_labels.to(device)
    steps_per_epoch = -(-len(train_ids) // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    optimizer, scheduler = finetuning_optimizer(
        model, settings.learning_rate, settings.weight_decay, settings.warmup_ratio, total_steps
    )
    order_rng = np.random.default_rng(settings.seed)
    print(
        f"finetune {task.name}: {len(train_ids)} train / "
        + " + ".join(f"{len(d)} {split}" for split, d in devs.items())
        + f" examples, {total_steps} steps, lr {settings.learning_rate:g}",
        flush=True,
    )

    start = time.perf_counter()
    losses = []
    for epoch in range(settings.epochs):
        order = order_rng.permutation(len(train_ids))
        for step in range(steps_per_epoch):
            batch = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            batch, share = batch_share(batch, world)  # under torchrun: this rank's slice
            ids, attention = pad_batch([train_ids[i] for i in batch], tokenizer.pad_token_id)
            batch_labels = train_labels[torch.from_numpy(batch).to(device)]
            loss = trainer(input_ids=ids.to(device), attention_mask=attention.to(device), labels=batch_labels).loss
            losses.append(shared_step(model, loss, share, optimizer, scheduler))
        print(
            f"epoch {epoch + 1}/{settings.epochs} mean loss {np.mean(losses[-steps_per_epoch:]):.4f}",
            flush=True,
        )

    metrics: dict[str, float] = {}
    trivial_metrics: dict[str, float] = {}  # the same metrics of the trivial predictor, on the same examples
    constant, trivial_predictor = trivial_prediction(train_labels.cpu().numpy(), label_names)
    counts: dict[str, dict] = {}
    prediction_rows = []
    for split, dev in devs.items():
        dev_labels = np.asarray(list(dev["label"]))
        predictions = predict(model, encode(tokenizer, dev, task, settings.max_length), tokenizer.pad_token_id,
                              task.is_regression)  # fmt: skip
        suffix = "" if len(devs) == 1 else "_" + split.removeprefix("validation_")
        for name, value in compute_metrics(metric_names, predictions, dev_labels).items():
            metrics[name + suffix] = value
        for name, value in constant_metrics(metric_names, constant, dev_labels).items():
            trivial_metrics[name + suffix] = value
        if not task.is_regression:
            counts[split] = {name: int(np.sum(predictions == i)) for i, name in enumerate(label_names)}
            if max(counts[split].values()) == len(predictions):
                print(f"warning: {task.name} {split}: every prediction is the same class {counts[split]}", flush=True)
        prediction_rows += [(split, i, y, p) for i, y, p in zip(list(dev["idx"]), dev_labels.tolist(),
                                                                predictions.tolist(), strict=True)]  # fmt: skip
    score = task_score(metrics, tuple(metrics))
    wall = time.perf_counter() - start
    print(f"{task.name} dev: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)

    result = {
        "task": task.name,
        "run": run_labels or {},
        "metrics": metrics,
        "metric_names": list(metrics),
        "score": score,
        "trivial_metrics": trivial_metrics,
        "trivial_score": task_score(trivial_metrics, tuple(trivial_metrics)),
        "trivial_predictor": trivial_predictor,
        "prediction_counts": counts or None,  # predicted dev labels per split and class (None for regression)
        "train_examples": len(train_ids),
        "train_examples_available": len(data["train"]),
        "eval_examples": {split: len(dev) for split, dev in devs.items()},
        "eval_splits": list(devs),
        "steps": total_steps,
        "final_train_loss": float(np.mean(losses[-steps_per_epoch:])),  # rank 0's examples under torchrun
        "wall_seconds": wall,
        "processes": world.size,
        "settings": asdict(settings),
    }
    if not world.is_main:  # every rank evaluated the same weights; rank 0 writes
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "idx", "label", "prediction"])
        writer.writerows(prediction_rows)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def sweep_learning_rates(
    run: Callable[[float, Path], dict], learning_rates: list[float], out_dir: str | Path, write_files: bool = True
) -> dict:
    """Fine-tune once per learning rate and keep the run with the best dev score (the BERT
    recipe; note that the reported dev score is then the maximum over the sweep).

    `run(lr, folder)` trains with rate `lr`, writes its files into `folder` and returns its
    metrics. With one rate it writes straight into `out_dir`. With several, each run goes
    to out_dir/sweep/lr-<lr>/ (kept for audit) and the best run's files are copied up.
    Either way metrics.json records "learning_rate" (the chosen one) and
    "learning_rate_sweep" ({rate: dev score}). write_files=False (ranks > 0 under torchrun)
    runs the same sweep and writes nothing."""
    out_dir = Path(out_dir)
    if len(learning_rates) == 1:
        results = {learning_rates[0]: run(learning_rates[0], out_dir)}
        best = learning_rates[0]
    else:
        if write_files:
            shutil.rmtree(out_dir / "sweep", ignore_errors=True)  # runs of an earlier sweep are not this one's
        results = {lr: run(lr, out_dir / "sweep" / f"lr-{lr:g}") for lr in learning_rates}
        best = max(learning_rates, key=lambda lr: results[lr]["score"])  # the first of equal scores
        for file in (out_dir / "sweep" / f"lr-{best:g}").iterdir() if write_files else ():
            if file.is_file():
                shutil.copy2(file, out_dir / file.name)
        print(f"learning rate {best:g} chosen on dev: " + ", ".join(
            f"{lr:g} -> {r['score']:.4f}" for lr, r in results.items()), flush=True)  # fmt: skip
    result = results[best] | {
        "learning_rate": best,
        "learning_rate_sweep": {f"{lr:g}": r["score"] for lr, r in results.items()},
    }
    if write_files:
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
