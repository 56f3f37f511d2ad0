"""Helpers shared by the test modules: no test module imports another (issue 16).

Masks (test_masks.py, test_corruption.py, test_collation.py): masks are checked in "slot"
coordinates computed here independently of fem/masking.py: slot j of a row is its j-th
maskable column, so specials anywhere in the row are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from fem.collation import MaskingSpec
from fem.masking import (
    STRATEGIES,
    SpanShape,
    group_sizes,
    strategy_masks,
)

PROPERTY = settings(max_examples=40, deadline=None, database=None)
REPLACEMENT = {"mask": 0.8, "random": 0.1, "keep": 0.1}
SPECIAL_IDS = (0, 101, 102, 103)  # [PAD], [CLS], [SEP], [MASK]
DEFAULT_SPAN = SpanShape()
RANDOM_STRATEGIES = tuple(s for s in STRATEGIES if s != "fe_contiguous")  # fe_contiguous has no randomness


# --- masks ------------------------------------------------------------------------------


def maskable_rows(batch: int, length: int) -> np.ndarray:
    maskable = np.ones((batch, length), dtype=bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    return maskable


def slot_view(masks: np.ndarray, maskable: np.ndarray) -> list[np.ndarray]:
    """Row b's masks [C, L] restricted to its maskable columns, in order: bool [C, n_b]."""
    return [masks[b][:, np.flatnonzero(maskable[b])] for b in range(len(maskable))]


def run_lengths(row: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of True in a 1-d bool array."""
    steps = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return np.flatnonzero(steps == -1) - np.flatnonzero(steps == 1)


def word_ids(word_starts: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """Word of each slot of one row: a word is a word-start slot plus the following non-start
    slots (specials skipped); the first slot always starts a word."""
    starts = word_starts[np.flatnonzero(maskable)].copy()
    if len(starts):
        starts[0] = True
    return np.cumsum(starts) - 1


def assert_partition(masks: np.ndarray, maskable: np.ndarray, segments: int) -> list[np.ndarray]:
    """The K masks of every row are disjoint, cover each maskable column exactly once, never
    touch a special column and have exactly the sizes of `group_sizes`. Returns slot views."""
    assert masks.shape == (*maskable.shape[:1], segments, maskable.shape[1])
    assert np.array_equal(masks.sum(axis=1), maskable.astype(int))
    assert not (masks & ~maskable[:, None, :]).any()
    assert np.array_equal(masks.sum(axis=2), group_sizes(maskable.sum(axis=1), segments))
    return slot_view(masks, maskable)


@dataclass
class Batch:
    maskable: np.ndarray  # bool [B, L]
    word_starts: np.ndarray  # bool [B, L]
    indices: np.ndarray  # distinct sequence indices [B]
    epochs: np.ndarray  # int [B], one epoch per row
    seed: int

    @property
    def n(self) -> np.ndarray:
        return self.maskable.sum(axis=1)

    def masks(self, strategy: str, mask_ratio: float = 0.15, segments: int = 4, span: SpanShape = DEFAULT_SPAN):
        return strategy_masks(
            strategy, self.seed, self.epochs, self.indices, self.maskable, mask_ratio, segments, span, self.word_starts
        )


@st.composite
def batches(draw, max_rows: int = 6, min_length: int = 1, max_length: int = 48) -> Batch:
    """Rows with specials at random places, [CLS]/[SEP] ends or not, and right padding of a
    different length per row, so rows have different n (0 included)."""
    rows = draw(st.integers(1, max_rows))
    length = draw(st.integers(min_length, max_length))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    maskable = rng.random((rows, length)) >= draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    if draw(st.booleans()):
        maskable[:, 0] = maskable[:, -1] = False
    if draw(st.booleans()):
        maskable &= np.arange(length)[None, :] < rng.integers(0, length + 1, rows)[:, None]
    word_starts = rng.random((rows, length)) < draw(st.sampled_from([0.2, 0.5, 0.9, 1.0]))
    indices = rng.choice(10**6, size=rows, replace=False)
    epochs = rng.integers(0, 5, rows)
    return Batch(maskable, word_starts, indices, epochs, draw(st.integers(0, 2**31)))


span_shapes = st.builds(SpanShape, geometric_p=st.sampled_from([0.1, 0.2, 0.5, 0.9]), max_length=st.integers(1, 10))
ratios = st.floats(0.01, 1.0)
segment_counts = st.integers(1, 9)


def spec(strategy: str, replacement: dict[str, float] = REPLACEMENT, seed: int = 1, segments: int = 7) -> MaskingSpec:
    return MaskingSpec(strategy, seed, 0.15, segments, replacement, 103, 30522, SPECIAL_IDS)


def fixed_batch() -> Batch:
    rng = np.random.default_rng(0)
    maskable = maskable_rows(8, 64)
    maskable[:, [20, 41]] = False
    return Batch(maskable, rng.random((8, 64)) < 0.6, np.arange(100, 108), np.zeros(8, dtype=np.int64), 5)
