"""Masking strategies: which positions of a sequence are masked, and how they are corrupted.

Every random choice here is a pure function of (seed, epoch, sequence index, copy,
position), computed with a counter-based hash (splitmix64) rather than a stateful
generator, as in fairseq's MaskTokensDataset. The same sequence therefore gets the same
masks whatever the batch it lands in, the number of data-loader workers or processes.
Everything is vectorised over a whole batch with numpy; there is no Python loop over
positions or sequences.

Positions are chosen in "slot" coordinates: slot j is the j-th maskable position of a row
(special tokens are not slots), so spans and contiguous chunks never straddle [CLS]/[SEP],
and a row with n maskable positions has slots 0..n-1. `strategy_masks` maps the result
back to columns.

Shapes: B sequences, L positions, K segments, C copies per sequence (1 or K).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fem.registry import MULTI_COPY_STRATEGIES, STRATEGIES

if TYPE_CHECKING:
    from fem.block_masking import BlockShape

# Independent hash streams, so no two random choices reuse the same numbers.
_STREAM_SELECT = 1
_STREAM_REPLACE_KIND = 2
_STREAM_REPLACE_TOKEN = 3
_STREAM_SPAN_LENGTH = 4
_STREAM_SPAN_PLACE = 5
_STREAM_SPAN_ORDER = 6
_STREAM_WORD_ORDER = 7
_STREAM_BLOCK_KIND = 8  # fem/block_masking.py: span or single token
_STREAM_BLOCK_LENGTH = 9  # span length
_STREAM_BLOCK_PLACE = 10  # placement of the blocks
_STREAM_BLOCK_ORDER = 11  # order of the blocks along the row
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class SpanShape:
    """SpanBERT span lengths: Geometric(geometric_p) on {1, 2, ...}, clipped at max_length."""

    geometric_p: float = 0.2
    max_length: int = 10


def resolve_segments(mask_ratio: float, segments: int | str) -> int:
    """K, the number of fully-explored segments: `segments`, or round(1/mask_ratio) for "auto"."""
    if segments == "auto":
        return max(2, round(1.0 / mask_ratio))
    return int(segments)


def copies_per_sequence(strategy: str, segments: int) -> int:
    """Masked copies a strategy makes of each sequence in a step: K or 1."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return segments if strategy in MULTI_COPY_STRATEGIES else 1


def masked_count(maskable: int | np.ndarray, mask_ratio: float) -> int | np.ndarray:
    """Positions one random mask covers: round(p * n), at least 1 (n may be an int array)."""
    counts = np.maximum(1, np.rint(mask_ratio * np.asarray(maskable))).astype(np.int64)
    return int(counts) if counts.ndim == 0 else counts


def group_sizes(maskable: np.ndarray, segments: int) -> np.ndarray:
    """Sizes of the K fully-explored groups of rows with `maskable` positions: int [B, K],
    floor(n/K) or ceil(n/K), the larger ones first."""
    n = np.asarray(maskable)[:, None]
    return n // segments + (np.arange(segments)[None, :] < n % segments)


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


# --- slot-space helpers -------------------------------------------------------------------


def _ranks(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank of each key among the valid entries of its row: int64 [B, L]. Valid entries get
    ranks 0..v-1 (a uniform random permutation when keys are uniform); the others get >= v."""
    order = np.argsort(np.where(valid, keys, 2.0), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(keys.shape[1]), keys.shape), axis=1)
    return ranks


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    return np.cumsum(values, axis=1) - values


def _span_lengths(keys: np.ndarray, span: SpanShape) -> np.ndarray:
    """Geometric span lengths from uniform keys (inverse CDF), clipped: int64, same shape."""
    lengths = 1 + np.floor(np.log1p(-keys) / np.log1p(-span.geometric_p))
    return np.minimum(lengths, span.max_length).astype(np.int64)


def _fill_budget(lengths: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Take spans in order until their total reaches `budget` [B]; the last one is clipped so
    the total is exactly the budget and later ones get length 0: int64 [B, S]."""
    before = _exclusive_cumsum(lengths)
    return np.clip(budget[:, None] - before, 0, lengths)


def _coverage(starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """bool [B, width]: slots covered by the spans [start, start + length) (length 0 = none)."""
    batch = len(starts)
    delta = np.zeros((batch, width + 1), dtype=np.int64)
    rows = np.broadcast_to(np.arange(batch)[:, None], starts.shape)
    used = lengths > 0
    np.add.at(delta, (rows[used], starts[used]), 1)
    np.add.at(delta, (rows[used], starts[used] + lengths[used]), -1)
    return np.cumsum(delta[:, :width], axis=1) > 0


def _row_keys(seed, stream, epoch, indices, copy: int, length: int) -> np.ndarray:
    return uniform_keys(seed, stream, epoch, indices, np.full(len(indices), copy), length)


def place_spans(keys: np.ndarray, n: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Start slots of non-overlapping spans of `lengths` (int [B, L]: span i's length, spans
    first, then 0s) in rows of n slots, placed uniformly at random with uniform `keys` [B, L]:
    the spans take S of the n - total + S "items" (unmasked slots and spans; stars and bars).
    Returns int64 [B, L]: span i starts at or after the end of span i-1 (0 where lengths is 0)."""
    count = (lengths > 0).sum(axis=1)  # spans per row, S
    items = n - lengths.sum(axis=1) + count
    slots = np.arange(keys.shape[1])[None, :]
    ranks = _ranks(keys, slots < items[:, None])
    chosen = np.sort(np.where(ranks < count[:, None], slots, keys.shape[1]), axis=1)  # item index of span i
    # span i starts after the chosen item index, shifted by the extra length of earlier spans
    starts = chosen + _exclusive_cumsum(np.maximum(lengths - 1, 0))
    return np.where(lengths > 0, starts, 0)


# --- strategies, in slot coordinates: each returns bool [B, C, L] (slot j of row b) ---------


def _random_slots(seed, epoch, indices, n, length, mask_ratio):
    slots = np.arange(length)[None, :]
    ranks = _ranks(_row_keys(seed, _STREAM_SELECT, epoch, indices, 0, length), slots < n[:, None])
    return (ranks < masked_count(n, mask_ratio)[:, None])[:, None, :]


def _random_k_slots(seed, epoch, indices, n, length, segments):
    """Copy c: an independent uniform subset with the size of fe group c."""
    slots = np.arange(length)[None, :]
    sizes = group_sizes(n, segments)
    masks = [
        _ranks(_row_keys(seed, _STREAM_SELECT, epoch, indices, c, length), slots < n[:, None]) < sizes[:, c : c + 1]
        for c in range(segments)  # a loop over the K copies, not over positions
    ]
    return np.stack(masks, axis=1)


def _fe_slots(seed, epoch, indices, n, length, segments):
    """A seeded permutation of the n slots dealt round-robin into K groups: group c gets the
    slots of rank c, c+K, c+2K, ... (sizes ceil((n-c)/K), the sizes of `group_sizes`)."""
    slots = np.arange(length)[None, :]
    ranks = _ranks(_row_keys(seed, _STREAM_SELECT, epoch, indices, 0, length), slots < n[:, None])
    groups = np.where(slots < n[:, None], ranks % segments, -1)
    return groups[:, None, :] == np.arange(segments)[None, :, None]


def _fe_contiguous_slots(n, length, segments):
    """K contiguous chunks in order, sizes as `group_sizes`. No randomness: the chunks of a
    sequence are the same every epoch (only the 80/10/10 corruption varies)."""
    starts = _exclusive_cumsum(group_sizes(n, segments))  # [B, K]
    slots = np.arange(length)[None, None, :]
    groups = (slots >= starts[:, :, None]).sum(axis=1) - 1  # [B, L]
    groups = np.where(np.arange(length)[None, :] < n[:, None], groups, -1)
    return groups[:, None, :] == np.arange(segments)[None, :, None]


def _span_slots(seed, epoch, indices, n, length, mask_ratio, span: SpanShape):
    """SpanBERT-style: geometric span lengths until exactly m = round(p*n) slots (the last
    span clipped), placed uniformly at random without overlap. Placement is a uniform choice
    of the spans' places among the n - m unmasked slots (stars and bars)."""
    budget = masked_count(n, mask_ratio)
    lengths = _fill_budget(_span_lengths(_row_keys(seed, _STREAM_SPAN_LENGTH, epoch, indices, 0, length), span), budget)
    starts = place_spans(_row_keys(seed, _STREAM_SPAN_PLACE, epoch, indices, 0, length), n, lengths)
    return _coverage(starts, lengths, length)[:, None, :]


def span_partition(seed, epoch, indices, n, length, span: SpanShape) -> np.ndarray:
    """The spans `fe_span` tiles a row with: span id of each slot, int64 [B, L] (-1 past n).

    Geometric lengths laid end to end from slot 0 until they cover all n slots."""
    lengths = _fill_budget(_span_lengths(_row_keys(seed, _STREAM_SPAN_LENGTH, epoch, indices, 0, length), span), n)
    starts = np.where(lengths > 0, _exclusive_cumsum(lengths), length)
    first = np.zeros((len(n), length + 1), dtype=np.int64)
    rows = np.broadcast_to(np.arange(len(n))[:, None], starts.shape)
    np.add.at(first, (rows, starts), 1)
    span_of_slot = np.cumsum(first[:, :length], axis=1) - 1
    return np.where(np.arange(length)[None, :] < n[:, None], span_of_slot, -1)


def _fe_span_slots(seed, epoch, indices, n, length, segments, span: SpanShape):
    """Tile the row with geometric spans, shuffle the spans, lay them end to end in that
    order and cut the line into K equal parts; a span joins the part holding its midpoint.
    Groups are disjoint unions of whole spans covering every slot; each cut lies within half a
    span of its place, so a group is within about one span (max_length) of n/K slots, and may
    be empty when n/K is small."""
    span_of_slot = span_partition(seed, epoch, indices, n, length, span)
    batch = len(n)
    lengths = np.zeros((batch, length + 1), dtype=np.int64)  # per span id; last column = "no span"
    np.add.at(lengths, (np.broadcast_to(np.arange(batch)[:, None], span_of_slot.shape), span_of_slot), 1)
    lengths = lengths[:, :length]
    keys = _row_keys(seed, _STREAM_SPAN_ORDER, epoch, indices, 0, length)
    order = np.argsort(np.where(lengths > 0, keys, 2.0), axis=1, kind="stable")
    shuffled_starts = _exclusive_cumsum(np.take_along_axis(lengths, order, axis=1))
    line_start = np.empty_like(shuffled_starts)
    np.put_along_axis(line_start, order, shuffled_starts, axis=1)  # back to span-id order
    midpoint = line_start + lengths / 2.0
    span_group = np.minimum((midpoint * segments / np.maximum(n, 1)[:, None]).astype(np.int64), segments - 1)
    groups = np.where(span_of_slot >= 0, np.take_along_axis(span_group, np.maximum(span_of_slot, 0), axis=1), -1)
    return groups[:, None, :] == np.arange(segments)[None, :, None]


def _whole_word_slots(seed, epoch, indices, n, length, mask_ratio, word_start_slots):
    """Whole words in a seeded random order, as many as bring the masked count closest to
    m = round(p*n) (at least one word); every sub-token of a chosen word is masked."""
    slots = np.arange(length)[None, :]
    in_row = slots < n[:, None]
    starts = (word_start_slots | (slots == 0)) & in_row  # a block may start inside a word
    word_of_slot = np.where(in_row, np.cumsum(starts, axis=1) - 1, length)
    batch = len(n)
    lengths = np.zeros((batch, length + 1), dtype=np.int64)
    np.add.at(lengths, (np.broadcast_to(np.arange(batch)[:, None], word_of_slot.shape), word_of_slot), 1)
    lengths = lengths[:, :length]  # [B, W] with W <= L, zero past the row's words
    keys = _row_keys(seed, _STREAM_WORD_ORDER, epoch, indices, 0, length)
    ranks = _ranks(keys, lengths > 0)
    order = np.argsort(ranks, axis=1)
    ordered = np.take_along_axis(lengths, order, axis=1)
    total = np.cumsum(ordered, axis=1)  # tokens masked after taking words 0..i of the order
    distance = np.where(ordered > 0, np.abs(total - masked_count(n, mask_ratio)[:, None]), np.iinfo(np.int64).max)
    words_taken = np.argmin(distance, axis=1) + 1  # first minimum: the smaller count on ties
    chosen_word = ranks < words_taken[:, None]
    chosen_word = np.concatenate([chosen_word, np.zeros((batch, 1), bool)], axis=1)
    return np.take_along_axis(chosen_word, word_of_slot, axis=1)[:, None, :]


def strategy_masks(
    strategy: str,
    seed: int,
    epoch: int | np.ndarray,
    indices: np.ndarray,
    maskable: np.ndarray,
    mask_ratio: float,
    segments: int,
    span: SpanShape = SpanShape(),
    word_starts: np.ndarray | None = None,
    block: BlockShape | None = None,
    fragment_ratio: float = 0.5,
    entities: np.ndarray | None = None,
) -> np.ndarray:
    """The masks of `strategy` for a batch of sequences: bool [B, C, L] (C = K for the multi-copy
    strategies, else 1; masked positions are always maskable). maskable: bool [B, L] (False at
    special tokens); word_starts: bool [B, L], True where a token begins a word (whole_word);
    block: `block`'s lengths (None: BlockShape()); fragment_ratio: `fragment`'s share; entities:
    int [B, L], the spans of the entity strategies (fem/entities.py)."""
    if strategy == "fragment":  # (these modules build on this one: imported here)
        from fem.fragment_masking import fragment_masks

        return fragment_masks(seed, epoch, indices, maskable, fragment_ratio)
    if strategy in ("salient_span", "fe_salient_span"):
        from fem.entities import entity_masks

        return entity_masks(strategy, seed, epoch, indices, maskable, entities, mask_ratio, segments)
    if strategy == "block":
        from fem.block_masking import BlockShape, block_ids  # here: fem.block_masking builds on this module

        return (block_ids(seed, epoch, indices, maskable, mask_ratio, block or BlockShape()) >= 0)[:, None, :]
    maskable = np.asarray(maskable, dtype=bool)
    batch, length = maskable.shape
    indices = np.asarray(indices)
    epoch = np.broadcast_to(np.asarray(epoch, dtype=np.int64), (batch,))
    n = maskable.sum(axis=1)
    if strategy == "random":
        slot_masks = _random_slots(seed, epoch, indices, n, length, mask_ratio)
    elif strategy == "random_k":
        slot_masks = _random_k_slots(seed, epoch, indices, n, length, segments)
    elif strategy == "fe":
        slot_masks = _fe_slots(seed, epoch, indices, n, length, segments)
    elif strategy == "fe_contiguous":
        slot_masks = _fe_contiguous_slots(n, length, segments)
    elif strategy == "span":
        slot_masks = _span_slots(seed, epoch, indices, n, length, mask_ratio, span)
    elif strategy == "fe_span":
        slot_masks = _fe_span_slots(seed, epoch, indices, n, length, segments, span)
    elif strategy == "whole_word":
        if word_starts is None:
            raise ValueError("whole_word masking needs word_starts (bool [B, L]) from the tokenized data")
        slot_masks = _whole_word_slots(seed, epoch, indices, n, length, mask_ratio, to_slots(word_starts, maskable))
    else:
        raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return from_slots(slot_masks, maskable)


def to_slots(values: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """Column values [B, L] moved to slot coordinates (slot j = j-th maskable column);
    slots past the row's n maskable positions get False."""
    order = np.argsort(~maskable, axis=1, kind="stable")  # maskable columns first, in order
    slotted = np.take_along_axis(values, order, axis=1)
    return slotted & (np.arange(maskable.shape[1])[None, :] < maskable.sum(axis=1)[:, None])


def from_slots(slot_masks: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """Slot masks [B, C, L] back to columns [B, C, L]: column i of row b takes slot
    (number of maskable columns before i); special columns are never masked."""
    index = np.broadcast_to(slot_of_column(maskable)[:, None, :], slot_masks.shape)
    return np.take_along_axis(slot_masks, index, axis=2) & maskable[:, None, :]


def slot_of_column(maskable: np.ndarray) -> np.ndarray:
    """Slot of each column: int64 [B, L], the number of maskable columns before it (0 at
    special columns, which have no slot)."""
    return np.where(maskable, np.cumsum(maskable, axis=1) - 1, 0)


def random_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, mask_ratio: float
) -> np.ndarray:
    """BERT-style masks: round(p * n_b) maskable positions per row, uniformly without
    replacement. maskable: bool [B, L]; returns bool [B, L]."""
    return strategy_masks("random", seed, epoch, indices, maskable, mask_ratio, 1)[:, 0]


def fully_explored_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, segments: int
) -> np.ndarray:
    """Fully-explored masks: a seeded permutation of each row's n maskable positions split
    into K disjoint groups of size floor(n/K) or ceil(n/K); copy k masks group k.

    maskable: bool [B, L]; returns bool [B, K, L]. The K masks of a row are disjoint and
    together cover every maskable position exactly once.
    """
    return strategy_masks("fe", seed, epoch, indices, maskable, 0.0, segments)


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
