"""Extractive question answering (SQuAD v1.1 and v2.0): fine-tuning and scoring on the dev set.

The recipe of transformers' run_qa.py, as a plain loop. A question and its context become
one or more features, [CLS] question [SEP] context-window [SEP] of at most max_length
tokens; a context too long for one feature is cut into windows that share doc_stride
tokens. Each feature keeps the character offsets of its context tokens (None for [CLS],
question, [SEP] and padding tokens), so that a predicted token span maps back to a slice
of the context. A feature is trained to point at the first gold answer when its window
holds the whole answer, else at [CLS] (token 0): this is also how SQuAD v2's unanswerable
questions are learned. The model is transformers' BertForQuestionAnswering: a fresh
linear layer from each token's last hidden state to a start and an end logit.

Decoding takes the n_best start and end logits of every feature of a question and picks
the valid span (inside the context, end >= start, at most max_answer_length tokens) with
the highest start + end logit. For v2 the null score is start[CLS] + end[CLS], the
smallest over the question's features; the answer is "" when null score - best span score
> no_answer_threshold. Scores come from the port of the official evaluation script in
fem.metrics. The training subsample (tiny scale) is drawn with a fixed seed so that every
strategy and seed sees the same questions.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fem.distributed import World, batch_share, data_parallel, seed_rank_stream
from fem.metrics import squad_metrics, squad_trivial_metrics
from fem.optimization import finetuning_optimizer, shared_step
from fem.registry import Task
from fem.settings import SquadSettings

SUBSAMPLE_SEED = 0
TOKENIZE_CHUNK = 1000  # examples per tokenizer call (bounds the memory of the fast tokenizer's encodings)
LOG_EVERY = 500  # optimizer steps between progress lines inside an epoch
FEATURE_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def prepare_features(tokenizer, questions: list[str], contexts: list[str], max_length: int, doc_stride: int) -> dict:
    """Tokenize (question, context) pairs into features of at most `max_length` tokens; a long
    context is split into windows that overlap by `doc_stride` tokens (only the context is
    ever truncated). Features are not padded.

    Returns per-feature lists: input_ids, token_type_ids, attention_mask (lists of ints),
    offset_mapping ((start, end) character offsets into the context for context tokens,
    None for every other token) and example_index (the index of the question and context
    the feature comes from)."""
    features = {key: [] for key in (*FEATURE_KEYS, "offset_mapping", "example_index")}
    for first in range(0, len(questions), TOKENIZE_CHUNK):
        encoded = tokenizer(
            [q.lstrip() for q in questions[first : first + TOKENIZE_CHUNK]],  # run_qa.py: leading spaces waste tokens
            contexts[first : first + TOKENIZE_CHUNK],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for row in range(len(encoded["input_ids"])):
            for key in FEATURE_KEYS:
                features[key].append(encoded[key][row])
            sequence_ids = encoded.sequence_ids(row)
            offsets = [
                tuple(offset) if seq == 1 else None
                for offset, seq in zip(encoded["offset_mapping"][row], sequence_ids, strict=True)
            ]
            features["offset_mapping"].append(offsets)
            features["example_index"].append(first + encoded["overflow_to_sample_mapping"][row])
    return features


def answer_positions(
    features: dict, answer_starts: list[list[int]], answer_texts: list[list[str]]
) -> tuple[list[int], list[int]]:
    """Token positions (start, end), inclusive, of each feature's first gold answer.

    `answer_starts[i]` / `answer_texts[i]` are the character starts and texts of example i's
    gold answers (empty lists: unanswerable). A feature gets (0, 0), the [CLS] token, when its
    context window does not hold the whole answer or the question has no answer."""
    starts, ends = [], []
    for offsets, example in zip(features["offset_mapping"], features["example_index"], strict=True):
        context = [t for t, offset in enumerate(offsets) if offset is not None]
        if not answer_texts[example] or not context:
            starts.append(0)
            ends.append(0)
            continue
        start_char = answer_starts[example][0]
        end_char = start_char + len(answer_texts[example][0])
        if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
            starts.append(0)  # the answer is (at least partly) outside this window
            ends.append(0)
            continue
        starts.append(max(t for t in context if offsets[t][0] <= start_char))
        ends.append(min(t for t in context if offsets[t][1] >= end_char))
    return starts, ends


def _top(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest logits, largest first (ties: lower index first)."""
    return np.argsort(-logits, kind="stable")[:n]


def decode(
    start_logits,
    end_logits,
    features: dict,
    contexts: list[str],
    n_best: int,
    max_answer_length: int,
    unanswerable: bool,
    no_answer_threshold: float,
) -> tuple[dict[int, str], dict[int, float]]:
    """The predicted answer text of every example, and its null odds.

    start_logits / end_logits: one 1-D array per feature (or a [features, T] array), at
    least as long as the feature; positions past its length (padding) are ignored. Spans
    are searched among the n_best start x n_best end positions of every feature of an
    example. Returns ({example index: answer text}, {example index: null score - best span
    score}); the null odds are +inf when no valid span was found, and the answer is then "".
    With `unanswerable` (v2) the answer is "" when the null odds exceed no_answer_threshold."""
    by_example: dict[int, list[int]] = {i: [] for i in range(len(contexts))}
    for feature, example in enumerate(features["example_index"]):
        by_example[example].append(feature)
    predictions, null_odds = {}, {}
    for example, feature_ids in by_example.items():
        best_score, best_text, null_score = -math.inf, "", math.inf
        for feature in feature_ids:
            offsets = features["offset_mapping"][feature]
            starts = np.asarray(start_logits[feature], dtype=np.float64)[: len(offsets)]
            ends = np.asarray(end_logits[feature], dtype=np.float64)[: len(offsets)]
            null_score = min(null_score, starts[0] + ends[0])
            end_candidates = _top(ends, n_best)
            for s in _top(starts, n_best):
                if offsets[s] is None:
                    continue
                for e in end_candidates:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    if starts[s] + ends[e] > best_score:
                        best_score = starts[s] + ends[e]
                        best_text = contexts[example][offsets[s][0] : offsets[e][1]]
        null_odds[example] = float(null_score - best_score)
        predictions[example] = "" if unanswerable and null_odds[example] > no_answer_threshold else best_text
    return predictions, null_odds


def pad_features(features: dict, rows, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask of the given features, int64 [B, T], padded
    on the right to the longest of them (pad_id, type 0, attention 0)."""
    longest = max(len(features["input_ids"][r]) for r in rows)
    batch = {key: torch.zeros((len(rows), longest), dtype=torch.long) for key in FEATURE_KEYS}
    batch["input_ids"].fill_(pad_id)
    for i, r in enumerate(rows):
        for key in FEATURE_KEYS:
            batch[key][i, : len(features[key][r])] = torch.tensor(features[key][r])
    return batch


@torch.no_grad()
def predict_logits(model, features: dict, pad_id: int, batch_size: int = 64) -> tuple[list, list]:
    """Start and end logits of every feature: two lists of float32 arrays [T_feature]."""
    model.eval()
    device = next(model.parameters()).device
    starts, ends = [], []
    n = len(features["input_ids"])
    for first in range(0, n, batch_size):
        rows = range(first, min(n, first + batch_size))
        batch = {k: v.to(device) for k, v in pad_features(features, rows, pad_id).items()}
        output = model(**batch)
        for i, r in enumerate(rows):
            length = len(features["input_ids"][r])
            starts.append(output.start_logits[i, :length].float().cpu().numpy())
            ends.append(output.end_logits[i, :length].float().cpu().numpy())
    model.train()
    return starts, ends


def finetune_squad(
    task: Task,
    task_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    settings: SquadSettings,
    threads: int = 1,
    run_labels: dict | None = None,
    metric_names: tuple[str, ...] | None = None,
    world: World | None = None,
) -> dict:
    """Fine-tune `checkpoint_dir` on SQuAD-format data saved at `task_dir` (splits "train" and
    "validation"), evaluate on the validation split. Writes out_dir/metrics.json,
    out_dir/predictions.json ({question id: answer text}), out_dir/null_odds.json
    ({question id: null score - best span score; null when no span was valid}). Metrics are
    fractions in [0, 1]."""
    import datasets
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

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
    train_answers, dev_answers = list(train["answers"]), list(dev["answers"])
    dev_contexts = list(dev["context"])
    train_features = prepare_features(
        tokenizer, list(train["question"]), list(train["context"]), settings.max_length, settings.doc_stride
    )
    dev_features = prepare_features(
        tokenizer, list(dev["question"]), dev_contexts, settings.max_length, settings.doc_stride
    )
    start_positions, end_positions = answer_positions(
        train_features, [a["answer_start"] for a in train_answers], [a["text"] for a in train_answers]
    )
    del train_features["offset_mapping"]  # not needed for training
    n_train = len(train_features["input_ids"])

    world = world or World()  # under torchrun the CLI passes its World: each rank trains a share
    torch.manual_seed(settings.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(str(checkpoint_dir), use_safetensors=True)
    device = world.device()
    model.to(device).train()
    seed_rank_stream(settings.seed, world)
    trainer = data_parallel(model, world)
    start_positions = torch.tensor(start_positions, dtype=torch.long, device=device)
    end_positions = torch.tensor(end_positions, dtype=torch.long, device=device)
    steps_per_epoch = -(-n_train // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    optimizer, scheduler = finetuning_optimizer(
        model, settings.learning_rate, settings.weight_decay, settings.warmup_ratio, total_steps
    )
    order_rng = np.random.default_rng(settings.seed)
    print(
        f"finetune {task.name}: {len(train)} train questions ({n_train} features) / {len(dev)} dev questions "
        f"({len(dev_features['input_ids'])} features), {total_steps} steps",
        flush=True,
    )

    start = time.perf_counter()
    losses = []
    for epoch in range(settings.epochs):
        order = order_rng.permutation(n_train)
        for step in range(steps_per_epoch):
            rows = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            rows, share = batch_share(rows, world)  # under torchrun: this rank's slice
            batch = {k: v.to(device) for k, v in pad_features(train_features, rows, tokenizer.pad_token_id).items()}
            index = torch.from_numpy(rows).to(device)
            loss = trainer(**batch, start_positions=start_positions[index], end_positions=end_positions[index]).loss
            losses.append(shared_step(model, loss, share, optimizer, scheduler))
            done = epoch * steps_per_epoch + step + 1
            if done % LOG_EVERY == 0 and world.is_main:
                elapsed = time.perf_counter() - start
                print(
                    f"step {done}/{total_steps} loss {np.mean(losses[-LOG_EVERY:]):.4f} "
                    f"elapsed {elapsed:.0f}s eta {elapsed / done * (total_steps - done):.0f}s",
                    flush=True,
                )
        print(
            f"epoch {epoch + 1}/{settings.epochs} mean loss {np.mean(losses[-steps_per_epoch:]):.4f}",
            flush=True,
        )

    start_logits, end_logits = predict_logits(model, dev_features, tokenizer.pad_token_id)
    answers, odds = decode(
        start_logits,
        end_logits,
        dev_features,
        dev_contexts,
        settings.n_best,
        settings.max_answer_length,
        task.unanswerable,
        settings.no_answer_threshold,
    )
    ids = list(dev["id"])
    predictions = {ids[i]: answers[i] for i in range(len(ids))}
    gold = {ids[i]: dev_answers[i]["text"] for i in range(len(ids))}
    metrics = squad_metrics(predictions, gold)
    if not task.unanswerable:  # v1.1: every question has an answer; the breakdown adds nothing
        metrics = {name: metrics[name] for name in ("exact_match", "f1")}
    trivial_metrics = squad_trivial_metrics(gold, task.unanswerable)  # the same keys as metrics
    trivial_predictor = ('the empty answer ("no answer") to every question' if task.unanswerable
                         else "none: every question has an answer, so exact match and F1 are 0")  # fmt: skip
    wall = time.perf_counter() - start
    metric_names = list(metric_names or task.metrics)
    print(f"{task.name} dev: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)

    result = {
        "task": task.name,
        "run": run_labels or {},
        "metrics": metrics,
        "metric_names": metric_names,
        "score": float(np.mean([metrics[name] for name in metric_names])),
        "trivial_metrics": trivial_metrics,
        "trivial_score": float(np.mean([trivial_metrics[name] for name in metric_names])),
        "trivial_predictor": trivial_predictor,
        "train_examples": len(train),
        "train_features": n_train,
        "train_examples_available": len(data["train"]),
        "eval_examples": len(dev),
        "eval_features": len(dev_features["input_ids"]),
        "eval_split": "validation",
        "steps": total_steps,
        "final_train_loss": float(np.mean(losses[-steps_per_epoch:])) if losses else None,
        "wall_seconds": wall,
        "processes": world.size,
        "settings": asdict(settings),
    }
    if not world.is_main:  # every rank evaluated the same weights; rank 0 writes
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "predictions.json").write_text(json.dumps(predictions, indent=2) + "\n")
    # null score - best span score per question (v1.1 too: it shows how sure each answer is);
    # strict JSON: no valid span at all (odds +inf) is written as null
    null_odds = {ids[i]: odds[i] if math.isfinite(odds[i]) else None for i in range(len(ids))}
    (out_dir / "null_odds.json").write_text(json.dumps(null_odds, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
