"""MASS's masked set, the `fragment` strategy (Song et al., ICML 2019, arXiv 1905.02450;
`microsoft/MASS`, MASS-unsupNMT/src/trainer.py, `mask_sent` and `shuffle_segments`): one
contiguous fragment of round(ratio * n) of a row's n maskable tokens (at least 1). It starts at
the first maskable position with probability 0.2, ends at the last with probability 0.2, and
else starts uniformly at random (MASS: p >= 0.8 first, p >= 0.6 last, else a shuffled slot).

Like every fem mask a pure function of (seed, epoch, sequence index), through
fem.masking.uniform_keys; numpy only, so collation does not import the model (fem/mass.py).
"""

from __future__ import annotations

import numpy as np

from fem.masking import _row_keys, from_slots, masked_count

_STREAM_FRAGMENT = 21  # fem.masking's streams are 1-11, fem.augmented's 20
FIRST, LAST = 0.2, 0.2  # probabilities that the fragment starts the row / ends it (MASS-unsupNMT)


def fragment_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, ratio: float
) -> np.ndarray:
    """One contiguous fragment of round(ratio * n) maskable positions per row (at least 1), a pure
    function of (seed, epoch, index): bool [B, 1, L] for maskable bool [B, L] (n per row)."""
    maskable = np.asarray(maskable, dtype=bool)
    batch, length = maskable.shape
    n = maskable.sum(axis=1)
    k = np.minimum(masked_count(n, ratio), n)
    keys = _row_keys(seed, _STREAM_FRAGMENT, np.broadcast_to(np.asarray(epoch), (batch,)), np.asarray(indices), 0, 2)
    free = n - k  # the fragment starts at slot 0..free
    uniform = np.minimum(np.floor(keys[:, 1] * (free + 1)), free).astype(np.int64)
    start = np.where(keys[:, 0] < FIRST, 0, np.where(keys[:, 0] < FIRST + LAST, free, uniform))
    slots = np.arange(length)[None, :]
    in_fragment = (slots >= start[:, None]) & (slots < (start + k)[:, None])
    return from_slots(in_fragment[:, None, :], maskable)


def fragment_width(length: int, ratio: float) -> int:
    """The longest fragment of a row of `length` tokens: its decoder's padded length."""
    return masked_count(length, ratio)
