"""Masking strategies: which positions of a sequence are masked, and how they are corrupted.

Every random choice here is a pure function of (seed, epoch, sequence index, copy,
position), computed with a counter-based hash (splitmix64) rather than a stateful
generator, as in fairseq's MaskTokensDataset. The same sequence therefore gets the same
masks whatever the batch it lands in, the number of data-loader workers or processes.
Everything is vectorised over a whole batch with numpy; there is no Python loop over
positions.

Shapes: B sequences, L positions, K segments (copies per sequence).
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("random", "fe")

# Independent hash streams, so mask choice and corruption never reuse the same numbers.
_STREAM_SELECT = 1
_STREAM_REPLACE_KIND = 2
_STREAM_REPLACE_TOKEN = 3
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def resolve_segments(mask_ratio: float, segments: int | str) -> int:
    """K, the number of fully-explored segments: `segments`, or round(1/mask_ratio) for "auto"."""
    if segments == "auto":
        return max(2, round(1.0 / mask_ratio))
    return int(segments)


def masked_count(maskable: int, mask_ratio: float) -> int:
    """Positions one random mask covers: round(p * n), at least 1."""
    return max(1, round(mask_ratio * maskable))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic is intended)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform_keys(
    seed: int,
    stream: int,
    epoch: int | np.ndarray,
    indices: np.ndarray,
    copies: np.ndarray,
    length: int,
) -> np.ndarray:
    """Uniform numbers in [0, 1), one per (row, position): float64 array [B, L].

    Row b's numbers depend only on (seed, stream, epoch[b], indices[b], copies[b],
    position); `epoch` may be one int for all rows or an array [B].
    """
    with np.errstate(over="ignore"):
        row = _splitmix64(np.uint64(seed) ^ _splitmix64(np.uint64(stream)))
        row = _splitmix64(row ^ np.asarray(epoch, dtype=np.uint64))
        row = _splitmix64(row ^ np.asarray(indices, dtype=np.uint64))
        row = _splitmix64(row ^ np.asarray(copies, dtype=np.uint64))
        positions = np.arange(length, dtype=np.uint64)
        bits = _splitmix64(row[:, None] ^ (positions[None, :] * _GOLDEN))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _ranks(seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """A seeded random order of each row's maskable positions: int64 [B, L].

    Maskable positions get ranks 0..n_b-1 (a uniform random permutation); the others get
    ranks >= n_b, so `rank < m` never selects them.
    """
    batch, length = maskable.shape
    keys = uniform_keys(seed, _STREAM_SELECT, epoch, indices, np.zeros(batch), length)
    keys = np.where(maskable, keys, 2.0)
    order = np.argsort(keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(length)[None, :].repeat(batch, axis=0), axis=1)
    return ranks


def random_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, mask_ratio: float
) -> np.ndarray:
    """BERT-style masks: round(p * n_b) maskable positions per row, uniformly without
    replacement. maskable: bool [B, L]; returns bool [B, L]."""
    ranks = _ranks(seed, epoch, indices, maskable)
    counts = np.array([masked_count(int(n), mask_ratio) for n in maskable.sum(axis=1)])
    return ranks < counts[:, None]


def fully_explored_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, segments: int
) -> np.ndarray:
    """Fully-explored masks: a seeded permutation of each row's n maskable positions split
    into K disjoint groups of size floor(n/K) or ceil(n/K); copy k masks group k.

    maskable: bool [B, L]; returns bool [B, K, L]. The K masks of a row are disjoint and
    together cover every maskable position exactly once.
    """
    ranks = _ranks(seed, epoch, indices, maskable)
    groups = np.where(maskable, ranks % segments, -1)
    return groups[:, None, :] == np.arange(segments)[None, :, None]


def corrupt(
    input_ids: np.ndarray,
    masks: np.ndarray,
    seed: int,
    epoch: int | np.ndarray,
    indices: np.ndarray,
    copies: np.ndarray,
    replacement: dict[str, float],
    mask_token_id: int,
    vocab_size: int,
) -> np.ndarray:
    """Apply BERT's corruption at masked positions: with probabilities replacement["mask"]
    / ["random"] / ["keep"] a position becomes [MASK], a uniformly random token, or stays.

    input_ids, masks: [R, L] (R rows, each a copy `copies[r]` of sequence `indices[r]`);
    returns a new int64 array [R, L]. Unmasked positions are never changed.
    """
    rows, length = input_ids.shape
    kind = uniform_keys(seed, _STREAM_REPLACE_KIND, epoch, indices, copies, length)
    token = uniform_keys(seed, _STREAM_REPLACE_TOKEN, epoch, indices, copies, length)
    random_ids = np.minimum((token * vocab_size).astype(np.int64), vocab_size - 1)
    out = input_ids.astype(np.int64, copy=True)
    to_mask = masks & (kind < replacement["mask"])
    to_random = masks & (kind >= replacement["mask"]) & (kind < replacement["mask"] + replacement["random"])
    out[to_mask] = mask_token_id
    out[to_random] = random_ids[to_random]
    return out
