import numpy as np
import pytest

from fem.collation import MaskingSpec, mask_rows
from fem.masking import (
    corrupt,
    fully_explored_masks,
    masked_count,
    random_masks,
    resolve_segments,
    uniform_keys,
)


def maskable_rows(batch: int, length: int) -> np.ndarray:
    maskable = np.ones((batch, length), dtype=bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    return maskable


def test_resolve_segments():
    assert resolve_segments(0.15, "auto") == 7
    assert resolve_segments(0.2, "auto") == 5
    assert resolve_segments(0.15, 4) == 4


def test_uniform_keys_are_uniform_and_depend_on_every_coordinate():
    keys = uniform_keys(1, 1, 0, np.arange(2000), np.zeros(2000), 64)
    assert keys.min() >= 0 and keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.01
    base = uniform_keys(1, 1, 0, np.array([3]), np.array([0]), 16)
    for changed in [
        uniform_keys(2, 1, 0, np.array([3]), np.array([0]), 16),  # seed
        uniform_keys(1, 2, 0, np.array([3]), np.array([0]), 16),  # stream
        uniform_keys(1, 1, 1, np.array([3]), np.array([0]), 16),  # epoch
        uniform_keys(1, 1, 0, np.array([4]), np.array([0]), 16),  # index
        uniform_keys(1, 1, 0, np.array([3]), np.array([1]), 16),  # copy
    ]:
        assert not np.array_equal(base, changed)


def test_random_masks_have_fixed_count_on_maskable_positions_only():
    maskable = maskable_rows(50, 128)
    masks = random_masks(seed=3, epoch=0, indices=np.arange(50), maskable=maskable, mask_ratio=0.15)
    assert masked_count(126, 0.15) == 19
    assert (masks.sum(axis=1) == 19).all()
    assert not (masks & ~maskable).any()


def test_random_masks_cover_positions_uniformly():
    maskable = maskable_rows(4000, 34)
    masks = random_masks(seed=0, epoch=0, indices=np.arange(4000), maskable=maskable, mask_ratio=0.25)
    frequency = masks[:, 1:-1].mean(axis=0)  # each of 32 positions: expected 8/32 = 0.25
    assert np.allclose(frequency, 0.25, atol=0.03)


@pytest.mark.parametrize("length,segments", [(128, 7), (130, 7), (20, 3), (12, 10)])
def test_fully_explored_masks_partition_the_maskable_positions(length, segments):
    maskable = maskable_rows(16, length)
    masks = fully_explored_masks(seed=5, epoch=2, indices=np.arange(16), maskable=maskable, segments=segments)
    assert masks.shape == (16, segments, length)
    assert (masks.sum(axis=1) == maskable).all()  # every maskable position in exactly one group
    n = length - 2
    sizes = masks.sum(axis=2)
    assert set(np.unique(sizes)) <= {n // segments, -(-n // segments)}
    assert (sizes.sum(axis=1) == n).all()


def test_masks_are_a_pure_function_of_seed_epoch_index():
    maskable = maskable_rows(8, 64)
    indices = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    whole = fully_explored_masks(1, 0, indices, maskable, 7)
    # The same sequences in another order and another batch give the same masks.
    reordered = fully_explored_masks(1, 0, indices[::-1], maskable, 7)[::-1]
    alone = fully_explored_masks(1, 0, indices[3:4], maskable[:1], 7)
    assert np.array_equal(whole, reordered)
    assert np.array_equal(whole[3:4], alone)
    assert not np.array_equal(whole, fully_explored_masks(1, 1, indices, maskable, 7))
    assert not np.array_equal(whole, fully_explored_masks(2, 0, indices, maskable, 7))


def test_corrupt_replaces_80_10_10_and_never_touches_unmasked():
    rows, length, vocab = 2000, 64, 1000
    ids = np.full((rows, length), 7, dtype=np.int64)
    masks = random_masks(0, 0, np.arange(rows), np.ones((rows, length), bool), 0.5)
    out = corrupt(ids, masks, 0, 0, np.arange(rows), np.zeros(rows), {"mask": 0.8, "random": 0.1, "keep": 0.1},
                  mask_token_id=3, vocab_size=vocab)  # fmt: skip
    assert (out[~masks] == 7).all()
    chosen = out[masks]
    assert abs((chosen == 3).mean() - 0.8) < 0.01
    kept = (chosen == 7).mean()  # "keep" plus random draws that hit 7 by chance
    assert abs(kept - 0.1) < 0.01
    assert abs(((chosen != 3) & (chosen != 7)).mean() - 0.1) < 0.01
    assert chosen.max() < vocab


def spec(strategy: str) -> MaskingSpec:
    return MaskingSpec(strategy, 1, 0.15, 7, {"mask": 0.8, "random": 0.1, "keep": 0.1}, 103, 30522, (0, 101, 102, 103))


def test_fe_rows_hold_k_disjoint_copies_of_each_sequence():
    blocks = np.random.default_rng(0).integers(1000, 2000, size=(2, 128))
    blocks[:, 0], blocks[:, -1] = 101, 102
    rows = mask_rows(blocks, np.zeros(2, dtype=np.int64), np.array([4, 9]), spec("fe"))
    assert rows.input_ids.shape == (14, 128) and rows.sequences == 2
    masked = rows.masked.numpy().reshape(2, 7, 128)
    assert (masked.sum(axis=1) <= 1).all() and (masked.sum(axis=(1, 2)) == 126).all()
    assert np.array_equal(rows.targets.numpy(), np.repeat(blocks, 7, axis=0)[rows.masked.numpy()])


def test_strategies_process_the_same_rows_per_step():
    assert spec("random").sequences_per_step(56) == 56
    assert spec("fe").sequences_per_step(56) == 8
