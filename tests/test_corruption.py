"""Tests for the corruption of masked positions (fem/masking.py corrupt): the 80/10/10 shares,
unmasked positions untouched, and a fresh draw per copy, epoch and seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    REPLACEMENT,
    Batch,
    fixed_batch,
    spec,
)

from fem.collation import mask_rows
from fem.masking import (
    corrupt,
    random_masks,
)

# --- corruption -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "replacement",
    [REPLACEMENT, {"mask": 0.5, "random": 0.25, "keep": 0.25}, {"mask": 1.0, "random": 0.0, "keep": 0.0}],
)
def test_corrupt_replacement_shares_and_never_touches_unmasked(replacement):
    rows, length, vocab = 2000, 64, 1000
    ids = np.full((rows, length), 7, dtype=np.int64)
    masks = random_masks(0, 0, np.arange(rows), np.ones((rows, length), bool), 0.5)
    out = corrupt(ids, masks, 0, 0, np.arange(rows), np.zeros(rows), replacement, mask_token_id=3, vocab_size=vocab)
    assert out.dtype == np.int64 and out.shape == ids.shape
    assert (out[~masks] == 7).all()
    chosen = out[masks]
    assert abs((chosen == 3).mean() - replacement["mask"]) < 0.01
    kept = (chosen == 7).mean()  # "keep" plus random draws that hit 7 by chance
    assert abs(kept - replacement["keep"]) < 0.01
    random = chosen[(chosen != 3) & (chosen != 7)]
    assert abs(len(random) / len(chosen) - replacement["random"]) < 0.01
    assert chosen.min() >= 0 and chosen.max() < vocab
    if replacement["random"] > 0:  # random tokens are spread over the whole vocabulary
        assert abs(random.mean() - vocab / 2) < 0.05 * vocab
        assert len(np.unique(random)) > 0.9 * vocab


def test_corrupt_differs_between_copies_epochs_and_seeds():
    rows, length = 50, 64
    ids = np.full((rows, length), 7, dtype=np.int64)
    masks = np.ones((rows, length), dtype=bool)
    base = corrupt(ids, masks, 0, 0, np.arange(rows), np.zeros(rows), REPLACEMENT, 3, 1000)
    for seed, epoch, copies in [(1, 0, np.zeros(rows)), (0, 1, np.zeros(rows)), (0, 0, np.ones(rows))]:
        assert not np.array_equal(base, corrupt(ids, masks, seed, epoch, np.arange(rows), copies, REPLACEMENT, 3, 1000))


def test_fe_contiguous_chunks_are_fixed_but_corruption_changes_with_epoch():
    batch = fixed_batch()
    base = batch.masks("fe_contiguous")
    for seed, epochs in [(batch.seed, batch.epochs + 1), (batch.seed + 1, batch.epochs)]:
        assert np.array_equal(
            Batch(batch.maskable, batch.word_starts, batch.indices, epochs, seed).masks("fe_contiguous"), base
        )
    blocks = np.random.default_rng(0).integers(1000, 2000, size=(4, 64))
    blocks[:, 0], blocks[:, -1] = 101, 102
    first = mask_rows(blocks, np.zeros(4, dtype=np.int64), np.arange(4), spec("fe_contiguous"))
    second = mask_rows(blocks, np.ones(4, dtype=np.int64), np.arange(4), spec("fe_contiguous"))
    assert torch.equal(first.masked, second.masked)
    assert not torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.targets, second.targets)
