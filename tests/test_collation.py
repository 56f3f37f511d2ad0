"""Tests for the rows of a pre-training step (fem/collation.py): K copies per sequence, the same
rows per step for every strategy, original targets, and a sequence masked alike in any batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    PROPERTY,
    SPECIAL_IDS,
    spec,
)
from hypothesis import given
from hypothesis import strategies as st

from fem.collation import mask_rows
from fem.masking import (
    MULTI_COPY_STRATEGIES,
    STRATEGIES,
    strategy_masks,
)
from fem.registry import ENTITY_STRATEGIES

# --- rows for a step (fem/collation.py) ----------------------------------------------------------


def test_fe_rows_hold_k_disjoint_copies_of_each_sequence():
    blocks = np.random.default_rng(0).integers(1000, 2000, size=(2, 128))
    blocks[:, 0], blocks[:, -1] = 101, 102
    rows = mask_rows(blocks, np.zeros(2, dtype=np.int64), np.array([4, 9]), spec("fe"))
    assert rows.input_ids.shape == (14, 128) and rows.sequences == 2
    masked = rows.masked.numpy().reshape(2, 7, 128)
    assert (masked.sum(axis=1) <= 1).all() and (masked.sum(axis=(1, 2)) == 126).all()
    assert np.array_equal(rows.targets.numpy(), np.repeat(blocks, 7, axis=0)[rows.masked.numpy()])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_process_the_same_rows_per_step(strategy):
    copies = 7 if strategy in MULTI_COPY_STRATEGIES else 1
    assert spec(strategy).copies == copies
    assert spec(strategy).sequences_per_step(56) == 56 // copies
    assert spec(strategy).sequences_per_step(56) * copies == 56  # random: 56 sequences, fe: 8 sequences x 7 copies


@st.composite
def token_blocks(draw, max_sequences: int = 5, max_length: int = 40):
    """Blocks of ordinary ids with [PAD]/[CLS]/[SEP] at random places, and word starts."""
    sequences = draw(st.integers(1, max_sequences))
    length = draw(st.integers(2, max_length))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    blocks = rng.integers(1000, 2000, size=(sequences, length))
    special = rng.random((sequences, length)) < 0.15
    blocks[special] = rng.choice([0, 101, 102], size=special.sum())
    blocks[:, 0] = 101
    return blocks, rng.random((sequences, length)) < 0.6, rng.choice(10**5, sequences, replace=False)


@PROPERTY
@given(data=token_blocks(), strategy=st.sampled_from(STRATEGIES), segments=st.integers(1, 5), parts=st.data())
def test_mask_rows_repeats_each_sequence_per_copy_with_original_targets(data, strategy, segments, parts):
    blocks, word_starts, indices = data
    sequences, length = blocks.shape
    masking = spec(strategy, segments=segments)
    epochs = np.arange(sequences) % 3
    rows = mask_rows(blocks, epochs, indices, masking, word_starts)
    copies = segments if strategy in MULTI_COPY_STRATEGIES else 1
    assert masking.copies == copies and masking.sequences_per_step(sequences * copies) == sequences
    assert rows.input_ids.shape == rows.masked.shape == (sequences * copies, length)
    assert rows.input_ids.dtype == rows.targets.dtype == torch.int64 and rows.masked.dtype == torch.bool
    assert rows.sequences == sequences
    masked, corrupted = rows.masked.numpy(), rows.input_ids.numpy()
    maskable = ~np.isin(blocks, SPECIAL_IDS)
    entities = word_starts.astype(np.int64) if strategy in ENTITY_STRATEGIES else None  # mask_rows reads them there
    expected = strategy_masks(
        strategy, masking.seed, epochs, indices, maskable, 0.15, segments, masking.span, word_starts, entities=entities
    )
    assert np.array_equal(masked, expected.reshape(-1, length))  # sequence-major: copies adjacent
    original = np.repeat(blocks, copies, axis=0)
    assert np.array_equal(rows.targets.numpy(), original[masked])
    assert np.array_equal(corrupted[~masked], original[~masked])
    assert not np.isin(original[masked], SPECIAL_IDS).any()
    if strategy in ("fe", "fe_contiguous", "fe_span"):
        assert np.array_equal(masked.reshape(sequences, copies, length).sum(axis=1), maskable.astype(int))
    # micro-batches for gradient accumulation add back up to the step
    pieces = rows.split(parts.draw(st.integers(1, sequences * copies)))
    assert torch.equal(torch.cat([p.input_ids for p in pieces]), rows.input_ids)
    assert torch.equal(torch.cat([p.masked for p in pieces]), rows.masked)
    assert torch.equal(torch.cat([p.targets for p in pieces]), rows.targets)
    assert sum(p.sequences for p in pieces) == sequences
    start = 0
    for piece in pieces:
        stop = start + len(piece.input_ids)
        assert np.array_equal(piece.targets.numpy(), original[start:stop][masked[start:stop]])
        start = stop
    assert max(len(p.input_ids) for p in pieces) - min(len(p.input_ids) for p in pieces) <= 1


@PROPERTY
@given(data=token_blocks(), strategy=st.sampled_from(STRATEGIES), order=st.data())
def test_mask_rows_corrupts_a_sequence_alike_in_any_batch(data, strategy, order):
    blocks, word_starts, indices = data
    sequences = len(blocks)
    masking = spec(strategy, segments=3)
    copies = masking.copies
    epochs = np.arange(sequences) % 2
    whole = mask_rows(blocks, epochs, indices, masking, word_starts)
    perm = np.array(order.draw(st.permutations(range(sequences))), dtype=np.int64)
    shuffled = mask_rows(blocks[perm], epochs[perm], indices[perm], masking, word_starts[perm])
    row_order = (perm[:, None] * copies + np.arange(copies)).ravel()
    assert torch.equal(shuffled.input_ids, whole.input_ids[row_order])
    assert torch.equal(shuffled.masked, whole.masked[row_order])
    b = order.draw(st.integers(0, sequences - 1))
    alone = mask_rows(blocks[b : b + 1], epochs[b : b + 1], indices[b : b + 1], masking, word_starts[b : b + 1])
    assert torch.equal(alone.input_ids, whole.input_ids[b * copies : (b + 1) * copies])
