"""Fine-tuning a pre-trained checkpoint on a GLUE task and scoring it on the dev set.

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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fem.data import Task
from fem.metrics import compute_metrics, task_score
from fem.modeling import default_device
from fem.optimization import linear_schedule, param_groups
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


def finetune(
    task: Task,
    task_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    settings: FinetuneSettings,
    threads: int = 1,
    run_labels: dict | None = None,
) -> dict:
    """Fine-tune `checkpoint_dir` on `task` (data saved at `task_dir`), evaluate on the
    validation split. Writes out_dir/metrics.json and out_dir/predictions.csv.

    `run_labels` (strategy, seeds, ...) are stored under "run" in metrics.json so tables
    can group runs without parsing paths."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    data = datasets.load_from_disk(str(task_dir))
    train, dev = data["train"], data["validation"]
    if settings.max_train_examples is not None and len(train) > settings.max_train_examples:
        keep = np.random.default_rng(SUBSAMPLE_SEED).permutation(len(train))[: settings.max_train_examples]
        train = train.select(np.sort(keep))
    if settings.max_eval_examples is not None and len(dev) > settings.max_eval_examples:
        dev = dev.select(range(settings.max_eval_examples))

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    train_ids, dev_ids = (encode(tokenizer, split, task, settings.max_length) for split in (train, dev))
    dtype = torch.float32 if task.is_regression else torch.long
    train_labels = torch.tensor(list(train["label"]), dtype=dtype)
    dev_labels = np.asarray(list(dev["label"]))

    torch.manual_seed(settings.seed)
    num_labels = 1 if task.is_regression else len(task.label_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint_dir),
        num_labels=num_labels,
        problem_type="regression" if task.is_regression else "single_label_classification",
    )
    device = default_device()
    model.to(device).train()
    train_labels = train_labels.to(device)
    steps_per_epoch = -(-len(train_ids) // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup = round(settings.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(param_groups(model, settings.weight_decay), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_schedule(s, warmup, total_steps))
    order_rng = np.random.default_rng(settings.seed)
    print(
        f"finetune {task.name}: {len(train_ids)} train / {len(dev_ids)} dev examples, {total_steps} steps",
        flush=True,
    )

    start = time.perf_counter()
    losses = []
    for epoch in range(settings.epochs):
        order = order_rng.permutation(len(train_ids))
        for step in range(steps_per_epoch):
            batch = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            ids, attention = pad_batch([train_ids[i] for i in batch], tokenizer.pad_token_id)
            batch_labels = train_labels[torch.from_numpy(batch).to(device)]
            loss = model(input_ids=ids.to(device), attention_mask=attention.to(device), labels=batch_labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        print(
            f"epoch {epoch + 1}/{settings.epochs} mean loss {np.mean(losses[-steps_per_epoch:]):.4f}",
            flush=True,
        )

    predictions = predict(model, dev_ids, tokenizer.pad_token_id, task.is_regression)
    metrics = compute_metrics(task.metrics, predictions, dev_labels)
    score = task_score(metrics, task.metrics)
    wall = time.perf_counter() - start
    print(f"{task.name} dev: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    counts = None
    if not task.is_regression:
        counts = {name: int(np.sum(predictions == i)) for i, name in enumerate(task.label_names)}
        if max(counts.values()) == len(predictions):
            print(f"warning: {task.name}: every dev prediction is the same class {counts}", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label", "prediction"])
        writer.writerows(zip(list(dev["idx"]), dev_labels.tolist(), predictions.tolist(), strict=True))
    result = {
        "task": task.name,
        "run": run_labels or {},
        "metrics": metrics,
        "metric_names": list(task.metrics),
        "score": score,
        "prediction_counts": counts,  # predicted dev labels per class (None for regression)
        "train_examples": len(train_ids),
        "train_examples_available": len(data["train"]),
        "eval_examples": len(dev_ids),
        "eval_split": task.validation_split,
        "steps": total_steps,
        "final_train_loss": float(np.mean(losses[-steps_per_epoch:])),
        "wall_seconds": wall,
        "settings": asdict(settings),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
