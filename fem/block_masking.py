"""UniLMv2's blockwise masking (Bao et al. 2020, arXiv 2002.12804, Algorithm 1), the `block` strategy.

Blocks are drawn until at least p = mask_ratio of a row's n maskable tokens are chosen: a
block is a span of length U{min_length..max_length} with probability span_probability, else
one token. The last block is not clipped (the row gets at least m = round(p*n) and fewer than
m + max_length masked tokens), unless the blocks would not fit in the row's n slots. The blocks
are then shuffled and placed uniformly at random without overlap (stars and bars, as
fem.masking's `span` strategy; two blocks may touch). The shuffle matters: the last block drawn
is the one that crosses the budget, so it tends to be long (inspection paradox); left in draw
order it would always be the rightmost and mask the end of a row more often. Algorithm 1
places each block at a uniform position and rejects it on overlap; placing the drawn blocks
jointly keeps their lengths unbiased and needs no loop.

Like every fem mask this is a pure function of (seed, epoch, sequence index) through
fem.masking.uniform_keys, vectorised over a batch (no Python loop over positions or rows).
Each masked position also gets its block id, which the pseudo-masked LM (objective pmlm)
uses as one factorization step.

Shapes: B sequences, L positions (columns); a row with n maskable positions has slots
0..n-1 (slot j = j-th maskable column; see fem.masking).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fem.masking import (
    _STREAM_BLOCK_KIND,
    _STREAM_BLOCK_LENGTH,
    _STREAM_BLOCK_ORDER,
    _STREAM_BLOCK_PLACE,
    _exclusive_cumsum,
    _row_keys,
    masked_count,
    place_spans,
    slot_of_column,
)


@dataclass(frozen=True)
class BlockShape:
    """Block lengths, in tokens: U{min_length..max_length} with probability span_probability, else 1."""

    span_probability: float = 0.4
    min_length: int = 2
    max_length: int = 6


def block_lengths(seed, epoch, indices, n: np.ndarray, length: int, mask_ratio: float, shape: BlockShape) -> np.ndarray:
    """Lengths of the blocks of each row, in draw order: int64 [B, L] (0 after the last block).

    Draw i uses column i of two key rows (span or single token; span length). Blocks are
    taken while the tokens before them fall short of m = round(p*n) (at least 1): the total is
    >= m and < m + max_length, the last block clipped only so the total stays <= n.
    """
    is_span = _row_keys(seed, _STREAM_BLOCK_KIND, epoch, indices, 0, length) < shape.span_probability
    choices = shape.max_length - shape.min_length + 1
    span_length = shape.min_length + np.floor(
        _row_keys(seed, _STREAM_BLOCK_LENGTH, epoch, indices, 0, length) * choices
    )
    drawn = np.where(is_span, np.minimum(span_length, shape.max_length), 1).astype(np.int64)
    before = _exclusive_cumsum(drawn)  # tokens of the blocks drawn before block i
    free = n[:, None] - before  # slots left for block i
    return np.where(before < masked_count(n, mask_ratio)[:, None], np.minimum(drawn, free), 0)


def block_slot_ids(
    seed, epoch, indices, n: np.ndarray, length: int, mask_ratio: float, shape: BlockShape
) -> np.ndarray:
    """Block id of each slot: int64 [B, L], -1 where not masked (and past slot n - 1).

    Ids run 0..S-1 from left to right (not the draw order: the blocks are shuffled first)."""
    drawn = block_lengths(seed, epoch, indices, n, length, mask_ratio, shape)
    keys = _row_keys(seed, _STREAM_BLOCK_ORDER, epoch, indices, 0, length)
    shuffled = np.argsort(np.where(drawn > 0, keys, 2.0), axis=1, kind="stable")  # the blocks first
    lengths = np.take_along_axis(drawn, shuffled, axis=1)
    starts = place_spans(_row_keys(seed, _STREAM_BLOCK_PLACE, epoch, indices, 0, length), n, lengths)
    batch = len(n)
    label = np.broadcast_to(np.arange(1, length + 1)[None, :], lengths.shape)  # block i paints i + 1
    delta = np.zeros((batch, length + 1), dtype=np.int64)
    rows = np.broadcast_to(np.arange(batch)[:, None], lengths.shape)
    used = lengths > 0
    np.add.at(delta, (rows[used], starts[used]), label[used])
    np.add.at(delta, (rows[used], starts[used] + lengths[used]), -label[used])
    return np.cumsum(delta[:, :length], axis=1) - 1


def block_ids(
    seed: int,
    epoch: int | np.ndarray,
    indices: np.ndarray,
    maskable: np.ndarray,
    mask_ratio: float,
    shape: BlockShape = BlockShape(),
) -> np.ndarray:
    """UniLMv2 blockwise masks of a batch, with the block of each masked position.

    epoch: one int or int [B]; indices: sequence indices int [B]; maskable: bool [B, L]
    (False at special tokens, which are never masked). Returns int64 [B, L] in columns: the
    block id (0..S_b - 1, left to right) of a masked position, -1 elsewhere. A block covers
    consecutive slots: a special column between two of them is skipped, never masked.
    """
    maskable = np.asarray(maskable, dtype=bool)
    batch, length = maskable.shape
    epoch = np.broadcast_to(np.asarray(epoch, dtype=np.int64), (batch,))
    n = maskable.sum(axis=1)
    slot_ids = block_slot_ids(seed, epoch, np.asarray(indices), n, length, mask_ratio, shape)
    return np.where(maskable, np.take_along_axis(slot_ids, slot_of_column(maskable), axis=1), -1)
