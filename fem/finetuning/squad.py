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
fem.metrics. The data, the loop and the outputs are fem.finetuning.harness (the training
subsample, drawn with a fixed seed, is the same questions for every strategy and seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from fem.distributed import World
from fem.finetuning.harness import RunOutputs, load_task_splits, run_outputs, run_scores, start_training, train_epochs
from fem.live_metrics import LiveCurves
from fem.metrics import squad_metrics, squad_trivial_metrics
from fem.registry import Task
from fem.settings import SquadSettings

OUTPUTS = ("metrics.json", "predictions.json", "null_odds.json", "curves")  # the files of a run (fem finetune-squad)
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


def train_squad(task: Task, task_dir: str | Path, checkpoint_dir: str | Path, settings: SquadSettings, threads: int = 1,
                run_labels: dict | None = None, world: World | None = None,
                live: LiveCurves | None = None) -> RunOutputs:  # fmt: skip
    """Fine-tune `checkpoint_dir` on SQuAD-format data saved at `task_dir` (splits "train" and
    "validation") and score it on the validation split; writes nothing but what `live` (DVCLive,
    harness.train_epochs) appends while it trains. Metrics are fractions
    in [0, 1]; the score is the mean of the task's metrics (fem.registry: exact_match, f1).
    Files: predictions.json ({question id: answer text}) and null_odds.json ({question id:
    null score - best span score; null when no span was valid})."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    data, train, devs = load_task_splits(task, task_dir, settings, threads)
    dev = devs["validation"]
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    train_answers = list(train["answers"])
    train_features = prepare_features(
        tokenizer, list(train["question"]), list(train["context"]), settings.max_length, settings.doc_stride
    )
    dev_features = prepare_features(
        tokenizer, list(dev["question"]), list(dev["context"]), settings.max_length, settings.doc_stride
    )
    start_positions, end_positions = answer_positions(
        train_features, [a["answer_start"] for a in train_answers], [a["text"] for a in train_answers]
    )
    del train_features["offset_mapping"]  # not needed for training
    n_train = len(train_features["input_ids"])

    def load_model() -> torch.nn.Module:
        from fem.lichee import register as register_model_classes

        register_model_classes()  # a LICHEE encoder loads with its coarse embeddings (fem/lichee.py)
        return AutoModelForQuestionAnswering.from_pretrained(str(checkpoint_dir), use_safetensors=True)

    world = world or World()  # under torchrun the CLI passes its World: each rank trains a share
    training = start_training(load_model, n_train, settings, world)
    device = training.device
    start_positions = torch.tensor(start_positions, dtype=torch.long, device=device)
    end_positions = torch.tensor(end_positions, dtype=torch.long, device=device)
    print(
        f"finetune {task.name}: {len(train)} train questions ({n_train} features) / {len(dev)} dev questions "
        f"({len(dev_features['input_ids'])} features), {training.total_steps} steps",
        flush=True,
    )

    def batch_inputs(rows: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {k: v.to(device) for k, v in pad_features(train_features, rows, tokenizer.pad_token_id).items()}
        index = torch.from_numpy(rows).to(device)
        return batch | {"start_positions": start_positions[index], "end_positions": end_positions[index]}

    losses = train_epochs(training, batch_inputs, log_every=LOG_EVERY, live=live)
    predictions, null_odds = answer_dev_questions(training.model, tokenizer, dev, dev_features, settings,
                                                  task.unanswerable)  # fmt: skip
    gold = {qid: answers["text"] for qid, answers in zip(list(dev["id"]), list(dev["answers"]), strict=True)}
    metrics = squad_metrics(predictions, gold)
    if not task.unanswerable:  # v1.1: every question has an answer; the breakdown adds nothing
        metrics = {name: metrics[name] for name in ("exact_match", "f1")}
    trivial_metrics = squad_trivial_metrics(gold, task.unanswerable)  # the same keys as metrics
    trivial_predictor = ('the empty answer ("no answer") to every question' if task.unanswerable
                         else "none: every question has an answer, so exact match and F1 are 0")  # fmt: skip
    details = {
        "train_examples": len(train),
        "train_features": n_train,
        "train_examples_available": len(data["train"]),
        "eval_examples": len(dev),
        "eval_features": len(dev_features["input_ids"]),
        "eval_split": "validation",
    }
    scores = run_scores(metrics, trivial_metrics, task.metrics, trivial_predictor)
    files = {name: json.dumps(content, indent=2) + "\n" for name, content in
             (("predictions.json", predictions), ("null_odds.json", null_odds))}  # fmt: skip
    return run_outputs(task, run_labels, scores, details, training, losses, files)


def answer_dev_questions(
    model, tokenizer, dev, dev_features: dict, settings: SquadSettings, unanswerable: bool
) -> tuple[dict[str, str], dict[str, float | None]]:
    """The model's answer to every question of `dev` (its `dev_features`, prepare_features),
    decoded with the settings' n_best, max_answer_length and (v2, `unanswerable`)
    no_answer_threshold. Returns ({question id: answer text}, {question id: null score - best
    span score}); the null odds are given for v1.1 too (they show how sure each answer is),
    None where no span was valid (strict JSON has no infinity)."""
    start_logits, end_logits = predict_logits(model, dev_features, tokenizer.pad_token_id)
    answers, odds = decode(
        start_logits,
        end_logits,
        dev_features,
        list(dev["context"]),
        settings.n_best,
        settings.max_answer_length,
        unanswerable,
        settings.no_answer_threshold,
    )
    ids = list(dev["id"])
    predictions = {ids[i]: answers[i] for i in range(len(ids))}
    null_odds = {ids[i]: odds[i] if math.isfinite(odds[i]) else None for i in range(len(ids))}
    return predictions, null_odds
