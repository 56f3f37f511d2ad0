"""Tests of UniLMv2's blockwise masking (fem/block_masking.py, the `block` strategy): blocks are
contiguous runs of slots with one id, do not overlap, avoid specials, reach at least round(p*n)
tokens without overshooting by a whole block, have the lengths of the block distribution, and are
a pure function of (seed, epoch, index). Slots are computed here with helpers.slot_view.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
from helpers import PROPERTY, batches, cli_args, maskable_rows, pretrain_settings, ratios, slot_view
from hypothesis import given
from hypothesis import strategies as st

from fem.block_masking import BlockShape, block_ids, block_lengths
from fem.masking import masked_count, strategy_masks

block_shapes = st.builds(
    lambda probability, low, extra: BlockShape(probability, low, low + extra),
    st.sampled_from([0.0, 0.4, 1.0]),
    st.integers(2, 6),
    st.integers(0, 6),
)


def blocks_of_row(slot_ids: np.ndarray) -> list[np.ndarray]:
    """The slots of each block id 0, 1, ... of one row (slot coordinates)."""
    return [np.flatnonzero(slot_ids == block) for block in range(slot_ids.max(initial=-1) + 1)]


@PROPERTY
@given(batch=batches(), mask_ratio=ratios, shape=block_shapes)
def test_blocks_are_contiguous_disjoint_runs_that_reach_the_budget(batch, mask_ratio, shape):
    ids = block_ids(batch.seed, batch.epochs, batch.indices, batch.maskable, mask_ratio, shape)
    assert ids.dtype == np.int64 and ids.shape == batch.maskable.shape
    assert (ids[~batch.maskable] == -1).all()  # specials and padding are never masked
    length = batch.maskable.shape[1]
    drawn = block_lengths(batch.seed, batch.epochs, batch.indices, batch.n, length, mask_ratio, shape)
    for n, slot_ids, in_draw_order in zip(batch.n, slot_view(ids[:, None, :], batch.maskable), drawn, strict=True):
        slot_ids = slot_ids[0]
        blocks = blocks_of_row(slot_ids)
        lengths = np.array([len(b) for b in blocks], dtype=np.int64)
        assert all(len(b) and np.array_equal(b, np.arange(b[0], b[0] + len(b))) for b in blocks)  # one run per id
        assert all(
            later[0] > earlier[-1] for earlier, later in zip(blocks, blocks[1:], strict=False)
        )  # ids left to right
        total = lengths.sum()
        assert total == (slot_ids >= 0).sum() <= n
        if n == 0:
            assert len(blocks) == 0
            continue
        budget = masked_count(n, mask_ratio)
        assert budget <= total < budget + shape.max_length
        in_draw_order = in_draw_order[in_draw_order > 0]
        assert sorted(in_draw_order) == sorted(lengths)  # the same blocks, shuffled along the row
        assert total - in_draw_order[-1] < budget  # the draws stop as soon as they reach the budget
        allowed = ({1} if shape.span_probability < 1 else set()) | (
            set(range(shape.min_length, shape.max_length + 1)) if shape.span_probability > 0 else set()
        )
        cut = 1 if total == n else 0  # only a block that would not fit in the row is cut
        assert sum(size not in allowed for size in lengths.tolist()) <= cut


@PROPERTY
@given(batch=batches(), mask_ratio=ratios)
def test_block_strategy_masks_are_the_blocks(batch, mask_ratio):
    shape = BlockShape(0.5, 3, 4)
    masks = strategy_masks("block", batch.seed, batch.epochs, batch.indices, batch.maskable, mask_ratio, 7, block=shape)
    ids = block_ids(batch.seed, batch.epochs, batch.indices, batch.maskable, mask_ratio, shape)
    assert masks.dtype == bool and np.array_equal(masks, (ids >= 0)[:, None, :])


def test_ids_are_a_pure_function_of_seed_epoch_and_index():
    maskable = maskable_rows(6, 50)
    maskable[:, 30:] = np.arange(6)[:, None] < 3  # rows 3..5 are shorter
    indices, epochs = np.array([7, 11, 13, 17, 19, 23]), np.array([0, 1, 2, 0, 1, 2])
    whole = block_ids(9, epochs, indices, maskable, 0.3)
    order = np.array([4, 0, 5, 2])  # another batch: other neighbours, other places
    assert np.array_equal(block_ids(9, epochs[order], indices[order], maskable[order], 0.3), whole[order])
    assert np.array_equal(block_ids(9, 1, indices[[1, 4]], maskable[[1, 4]], 0.3), whole[[1, 4]])
    for changed in (block_ids(10, epochs, indices, maskable, 0.3), block_ids(9, epochs + 1, indices, maskable, 0.3)):
        assert not np.array_equal(changed, whole)  # seed and epoch matter


def test_block_lengths_follow_the_block_distribution():
    """~20k blocks of long rows (no clipping): 40% spans, span lengths uniform on 2..6. Placement is
    symmetric: the last block drawn (often long, as it crosses the budget) is not always the rightmost,
    so both ends of a row are masked alike, and the inside evenly (about 20 tokens / 128 slots)."""
    maskable = maskable_rows(2500, 130)
    ids = block_ids(4, 0, np.arange(2500), maskable, 0.15, BlockShape())
    rows = np.broadcast_to(np.arange(2500)[:, None], ids.shape)
    lengths = np.bincount((rows * 130 + ids)[ids >= 0])
    lengths = lengths[lengths > 0]
    spans = lengths[lengths > 1]
    assert len(lengths) > 18_000
    assert abs(len(spans) / len(lengths) - 0.4) < 0.015
    assert np.array_equal(np.unique(spans), np.arange(2, 7))
    assert np.allclose(np.bincount(spans)[2:] / len(spans), 0.2, atol=0.015)
    share = (ids[:, 1:-1] >= 0).mean(axis=0)  # of each slot
    assert abs(share[:10].mean() - share[-10:].mean()) < 0.02
    assert share[6:-6].min() > 0.13 and share[6:-6].max() < 0.19


def test_rows_with_few_maskable_tokens():
    maskable = np.zeros((5, 8), dtype=bool)
    for row, n in enumerate([0, 1, 2, 3, 6]):
        maskable[row, 1 : 1 + n] = True
    for ratio in (0.15, 0.5, 1.0):
        for shape in (BlockShape(), BlockShape(1.0, 5, 6)):
            ids = block_ids(2, 0, np.arange(5), maskable, ratio, shape)
            masked = (ids >= 0).sum(axis=1)
            assert (ids[~maskable] == -1).all() and masked[0] == 0
            assert (masked[1:] >= masked_count(np.array([1, 2, 3, 6]), ratio)).all()
            assert (masked <= maskable.sum(axis=1)).all()
    assert (block_ids(2, 0, np.arange(5), maskable, 1.0)[maskable] >= 0).all()  # p = 1: every token


def test_fem_pretrain_strategy_block_reads_the_block_shape(packed, tmp_path):
    """`fem pretrain --strategy block` end to end (objective mlm). With span_probability 0 every block is
    one token: exactly round(0.15 * 30) = 4 predictions per row of 30 maskable tokens; with the default
    shape blocks overshoot that budget by less than one block."""
    predictions = {}
    for name, block in {"single": {"span_probability": 0.0, "min_length": 2, "max_length": 6},
                        "default": {"span_probability": 0.4, "min_length": 2, "max_length": 6}}.items():  # fmt: skip
        out = tmp_path / name
        settings = pretrain_settings("block", steps=2, block=block, objective="mlm")
        done = subprocess.run(cli_args(packed, out, settings), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        predictions[name] = json.loads((out / "train_log.json").read_text())["predictions"]
        assert json.loads((out / "metrics.json").read_text())["validation_mlm_loss"] > 0
    assert predictions["single"] == [14 * 4] * 2
    assert all(14 * 4 < p < 14 * (4 + 6) for p in predictions["default"])
