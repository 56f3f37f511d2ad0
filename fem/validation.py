"""Intrinsic measures of a masked LM on held-out blocks, and their trivial baselines.

Every run is scored on the same fixed masks of its validation blocks: a random masking at
the run's mask ratio with VALIDATION_SEED and BERT's 80/10/10 corruption, whatever the
strategy it was trained with, so the numbers compare across runs. Two measures come from one
forward pass: the MLM loss (nats per masked token) and the masked-token accuracy (share of
masked positions whose argmax prediction is the original token).

The trivial baseline of both is a unigram model of the training blocks: the same targets
scored with the add-one smoothed token frequencies (loss), and predicted as the most frequent
token (accuracy). A model below it has learned nothing about context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from fem.collation import MaskedRows, MaskingSpec, mask_rows
from fem.modeling import masked_logits

VALIDATION_SEED = 12345  # the fixed masks every strategy is evaluated on
VALIDATION_BATCH = 64  # blocks per forward pass during validation
VALIDATION_REPLACEMENT = {"mask": 0.8, "random": 0.1, "keep": 0.1}  # BERT's corruption, for every run
COUNT_CHUNK = 65536  # blocks per np.bincount call (bounds the int64 copy of a memory-mapped corpus)


@dataclass(frozen=True)
class Validation:
    """The two intrinsic measures on the fixed validation masks."""

    loss: float  # nats per masked token
    accuracy: float  # share of masked positions predicted right, in [0, 1]


def validation_batches(blocks: np.ndarray, mask_ratio: float, special_ids, meta: dict) -> Iterator[MaskedRows]:
    """The fixed masks of `blocks` (int [N, L]), VALIDATION_BATCH blocks at a time. Block i
    always gets the same mask (its sequence index is i, its epoch 0), so the batches depend
    on nothing but the blocks, `mask_ratio` and the tokenizer in `meta`. Uses no random numbers."""
    spec = MaskingSpec(
        "random", VALIDATION_SEED, mask_ratio, 1, VALIDATION_REPLACEMENT,
        meta["mask_token_id"], meta["vocab_size"], tuple(special_ids),
    )  # fmt: skip
    for start in range(0, len(blocks), VALIDATION_BATCH):
        idx = np.arange(start, min(start + VALIDATION_BATCH, len(blocks)))
        yield mask_rows(blocks[idx], np.zeros(len(idx), dtype=np.int64), idx, spec)


@torch.no_grad()
def validate(model, blocks: np.ndarray, mask_ratio: float, special_ids, meta: dict, logits_fn=None) -> Validation:
    """MLM loss and masked-token accuracy of `model` on the fixed masks of `blocks` (int [N, L]),
    from one forward pass per batch. Leaves the model in training mode. logits_fn(input_ids,
    masked) -> logits [M, V]: how the model scores a row (None: fem.modeling.masked_logits of
    `model`; a loss module's `validation_logits`, with `model` the loss module)."""
    model.eval()
    device = next(model.parameters()).device
    loss, correct, count = 0.0, 0, 0
    for rows in validation_batches(blocks, mask_ratio, special_ids, meta):
        rows = rows.to(device)
        logits = (logits_fn or partial(masked_logits, model))(rows.input_ids, rows.masked)  # [M, V]
        loss += F.cross_entropy(logits.float(), rows.targets, reduction="sum").item()
        correct += int((logits.argmax(dim=-1) == rows.targets).sum())
        count += len(rows.targets)
    model.train()
    return Validation(loss / count, correct / count)


def validation_targets(blocks: np.ndarray, mask_ratio: float, special_ids, meta: dict) -> np.ndarray:
    """The original token ids at the fixed masked positions of `blocks`: int64 [M], in the
    order `validate` scores them."""
    return np.concatenate([rows.targets.numpy() for rows in validation_batches(blocks, mask_ratio, special_ids, meta)])


def token_counts(blocks: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each token id occurs in `blocks` (int [N, L], may be memory-mapped): int64 [vocab_size]."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(blocks), COUNT_CHUNK):
        chunk = np.asarray(blocks[start : start + COUNT_CHUNK], dtype=np.int64).ravel()
        counts += np.bincount(chunk, minlength=vocab_size)[:vocab_size]
    return counts


def unigram_baseline(train_blocks: np.ndarray, targets: np.ndarray, vocab_size: int, special_ids) -> Validation:
    """The trivial baseline of `validate` on `targets` (int [M], from validation_targets): a
    unigram model of `train_blocks` (int [N, L]) over the vocabulary without `special_ids`.

    loss: -mean log q(target), q(t) = (count(t) + 1) / (total + V'), counts of the non-special
    training tokens, V' = the non-special vocabulary (add-one smoothing: an unseen token
    costs log(total + V') nats, not infinity). accuracy: share of targets equal to the most
    frequent non-special training token (the lowest id among equals)."""
    counts = token_counts(train_blocks, vocab_size)
    special = np.zeros(vocab_size, dtype=bool)
    special[[i for i in special_ids if 0 <= i < vocab_size]] = True
    counts[special] = 0
    targets = np.asarray(targets, dtype=np.int64)
    if special[targets].any():
        raise ValueError("unigram_baseline: a target is a special token, which is never masked")
    log_q = np.log(counts[targets] + 1.0) - np.log(counts.sum() + np.count_nonzero(~special))
    return Validation(float(-log_q.mean()), float(np.mean(targets == np.argmax(counts))))
