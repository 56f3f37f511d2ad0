"""Property tests for the masks of fem/masking.py: counts, partitions, spans, whole words, and
masks as a pure function of (seed, epoch, index). The statistical tests use fixed seeds and
tolerances that a broken sampler fails by a wide margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    PROPERTY,
    RANDOM_STRATEGIES,
    Batch,
    assert_partition,
    batches,
    fixed_batch,
    maskable_rows,
    ratios,
    run_lengths,
    segment_counts,
    slot_view,
    span_shapes,
    word_ids,
)
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fem.masking import (
    MULTI_COPY_STRATEGIES,
    STRATEGIES,
    SpanShape,
    copies_per_sequence,
    fully_explored_masks,
    group_sizes,
    masked_count,
    random_masks,
    resolve_segments,
    span_partition,
    strategy_masks,
    uniform_keys,
)


def test_resolve_segments():
    assert resolve_segments(0.15, "auto") == 7
    assert resolve_segments(0.2, "auto") == 5
    assert resolve_segments(0.6, "auto") == 2  # at least two segments
    assert resolve_segments(0.15, 4) == 4


def test_copies_per_sequence():
    for strategy in STRATEGIES:
        assert copies_per_sequence(strategy, 7) == (7 if strategy in MULTI_COPY_STRATEGIES else 1)
    assert set(MULTI_COPY_STRATEGIES) == {"random_k", "fe", "fe_contiguous", "fe_span", "fe_salient_span"}
    with pytest.raises(ValueError, match="unknown masking strategy"):
        copies_per_sequence("bogus", 7)


@PROPERTY
@given(n=st.integers(0, 10_000), p=ratios)
def test_masked_count_is_the_rounded_ratio_at_least_one(n, p):
    assert masked_count(n, p) == max(1, round(p * n))
    assert np.array_equal(masked_count(np.array([n, n + 1]), p), [max(1, round(p * n)), max(1, round(p * (n + 1)))])


@PROPERTY
@given(n=st.lists(st.integers(0, 500), min_size=1, max_size=8), segments=segment_counts)
def test_group_sizes_are_floor_or_ceil_larger_first(n, segments):
    n = np.array(n)
    sizes = group_sizes(n, segments)
    assert sizes.shape == (len(n), segments)
    assert np.array_equal(sizes.sum(axis=1), n)
    assert ((sizes == (n // segments)[:, None]) | (sizes == (-(-n // segments))[:, None])).all()
    assert (np.diff(sizes, axis=1) <= 0).all()


def test_uniform_keys_are_uniform_and_depend_on_every_coordinate():
    keys = uniform_keys(1, 1, 0, np.arange(2000), np.zeros(2000), 64)
    assert keys.min() >= 0 and keys.max() < 1
    assert abs(keys.mean() - 0.5) < 0.01
    assert stats.kstest(keys.ravel()[:20_000], "uniform").pvalue > 0.001
    base = uniform_keys(1, 1, 0, np.array([3]), np.array([0]), 16)
    for changed in [
        uniform_keys(2, 1, 0, np.array([3]), np.array([0]), 16),  # seed
        uniform_keys(1, 2, 0, np.array([3]), np.array([0]), 16),  # stream
        uniform_keys(1, 1, 1, np.array([3]), np.array([0]), 16),  # epoch
        uniform_keys(1, 1, 0, np.array([4]), np.array([0]), 16),  # index
        uniform_keys(1, 1, 0, np.array([3]), np.array([1]), 16),  # copy
    ]:
        assert not np.array_equal(base, changed)
    # a row's keys do not depend on the row's neighbours nor on the padded length
    batch = uniform_keys(1, 1, np.array([0, 5, 2]), np.array([9, 3, 7]), np.array([0, 1, 2]), 24)
    assert np.array_equal(batch[1:2, :16], uniform_keys(1, 1, 5, np.array([3]), np.array([1]), 16))


def test_unknown_strategy_and_missing_word_starts_raise():
    maskable = maskable_rows(2, 10)
    with pytest.raises(ValueError, match="unknown masking strategy"):
        strategy_masks("bogus", 0, 0, np.arange(2), maskable, 0.15, 3)
    with pytest.raises(ValueError, match="word_starts"):
        strategy_masks("whole_word", 0, 0, np.arange(2), maskable, 0.15, 3)


# --- random ---------------------------------------------------------------------------------


def test_random_masks_have_fixed_count_on_maskable_positions_only():
    maskable = maskable_rows(50, 128)
    masks = random_masks(seed=3, epoch=0, indices=np.arange(50), maskable=maskable, mask_ratio=0.15)
    assert masked_count(126, 0.15) == 19
    assert (masks.sum(axis=1) == 19).all()
    assert not (masks & ~maskable).any()


@PROPERTY
@given(batch=batches(), p=ratios)
def test_random_masks_exactly_round_p_n_maskable_positions(batch, p):
    masks = batch.masks("random", mask_ratio=p)
    assert masks.shape == (len(batch.n), 1, batch.maskable.shape[1])
    assert not (masks & ~batch.maskable[:, None, :]).any()
    expected = np.where(batch.n > 0, masked_count(batch.n, p), 0)
    assert np.array_equal(masks.sum(axis=(1, 2)), expected)
    assert np.array_equal(random_masks(batch.seed, batch.epochs, batch.indices, batch.maskable, p), masks[:, 0])


def test_random_masks_cover_positions_uniformly():
    maskable = maskable_rows(4000, 34)
    masks = random_masks(seed=0, epoch=0, indices=np.arange(4000), maskable=maskable, mask_ratio=0.25)
    frequency = masks[:, 1:-1].mean(axis=0)  # each of 32 positions: expected 8/32 = 0.25
    assert np.allclose(frequency, 0.25, atol=0.03)


def test_random_masks_cover_slots_uniformly_around_specials():
    rows = 4000
    maskable = np.ones((rows, 40), dtype=bool)
    maskable[:, [0, 7, 8, 20, 39]] = False  # specials inside the row too: 35 slots, 7 masked
    masks = random_masks(seed=4, epoch=1, indices=np.arange(rows), maskable=maskable, mask_ratio=0.2)
    assert not masks[:, ~maskable[0]].any()
    assert np.allclose(masks[:, maskable[0]].mean(axis=0), 0.2, atol=0.03)


# --- fe -------------------------------------------------------------------------------------


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


@PROPERTY
@given(batch=batches(), segments=segment_counts)
def test_fe_groups_partition_maskable_positions_with_group_sizes(batch, segments):
    masks = batch.masks("fe", segments=segments)
    assert_partition(masks, batch.maskable, segments)
    assert np.array_equal(
        fully_explored_masks(batch.seed, batch.epochs, batch.indices, batch.maskable, segments), masks
    )


def test_fe_puts_each_position_in_each_group_equally_often():
    rows, segments = 4000, 4
    maskable = maskable_rows(rows, 30)
    masks = fully_explored_masks(seed=2, epoch=0, indices=np.arange(rows), maskable=maskable, segments=segments)
    frequency = masks[:, :, 1:-1].mean(axis=0)  # [K, 28]: P(position in group c) = 1/4
    assert np.allclose(frequency, 1 / segments, atol=0.04)


# --- random_k -------------------------------------------------------------------------------


@PROPERTY
@given(batch=batches(), segments=segment_counts)
def test_random_k_copy_c_has_the_size_of_fe_group_c(batch, segments):
    masks = batch.masks("random_k", segments=segments)
    assert masks.shape == (len(batch.n), segments, batch.maskable.shape[1])
    assert not (masks & ~batch.maskable[:, None, :]).any()
    assert np.array_equal(masks.sum(axis=2), group_sizes(batch.n, segments))


def test_random_k_overlap_of_two_copies_is_hypergeometric():
    rows, length, segments = 4000, 128, 7
    maskable = maskable_rows(rows, length)  # n = 126, every copy masks 18
    masks = strategy_masks("random_k", 11, 0, np.arange(rows), maskable, 0.15, segments)
    assert (masks.sum(axis=2) == 18).all()
    overlap = (masks[:, 0] & masks[:, 1]).sum(axis=1)
    law = stats.hypergeom(126, 18, 18)  # population, marked, drawn
    support = np.arange(19)
    observed = np.bincount(overlap, minlength=19).astype(float)
    expected = rows * law.pmf(support)
    # pool the upper tail until every bin expects at least 5
    cut = len(support)
    while expected[cut - 1 :].sum() < 5 or expected[: cut - 1].min() < 5:
        cut -= 1
    observed = np.append(observed[: cut - 1], observed[cut - 1 :].sum())
    expected = np.append(expected[: cut - 1], expected[cut - 1 :].sum())
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # and the copies are no more alike than chance: mean overlap 18 * 18 / 126 = 2.57
    assert abs(overlap.mean() - law.mean()) < 0.1
    # each copy on its own covers positions uniformly
    assert np.allclose(masks[:, :, 1:-1].mean(axis=0), 18 / 126, atol=0.03)


# --- fe_contiguous --------------------------------------------------------------------------


@PROPERTY
@given(batch=batches(), segments=segment_counts)
def test_fe_contiguous_groups_are_consecutive_runs_of_slots_in_order(batch, segments):
    masks = batch.masks("fe_contiguous", segments=segments)
    for slots, size in zip(
        assert_partition(masks, batch.maskable, segments), group_sizes(batch.n, segments), strict=True
    ):
        start = 0
        for group, expected_size in zip(slots, size, strict=True):
            chosen = np.flatnonzero(group)
            assert np.array_equal(chosen, np.arange(start, start + expected_size))
            start += expected_size


# --- span -----------------------------------------------------------------------------------


@PROPERTY
@given(batch=batches(), p=ratios, span=span_shapes)
def test_span_masks_exactly_round_p_n_maskable_positions(batch, p, span):
    masks = batch.masks("span", mask_ratio=p, span=span)
    assert masks.shape == (len(batch.n), 1, batch.maskable.shape[1])
    assert not (masks & ~batch.maskable[:, None, :]).any()
    assert np.array_equal(masks.sum(axis=(1, 2)), np.where(batch.n > 0, masked_count(batch.n, p), 0))


def mean_run_length(masks: np.ndarray, maskable: np.ndarray) -> float:
    runs = np.concatenate([run_lengths(row[0]) for row in slot_view(masks, maskable)])
    assert (runs >= 1).all()
    return float(runs.mean())


def test_span_masks_are_runs_and_random_masks_are_not():
    rows = 2000
    maskable = maskable_rows(rows, 128)
    maskable[:, 60] = False  # a special in the middle is skipped by spans
    shape = SpanShape(geometric_p=0.2, max_length=10)
    span = strategy_masks("span", 3, 0, np.arange(rows), maskable, 0.15, 7, shape)
    random = strategy_masks("random", 3, 0, np.arange(rows), maskable, 0.15, 7)
    # mean clipped geometric length (1 - 0.8**10) / 0.2 = 4.46, more where spans touch
    assert 3.5 < mean_run_length(span, maskable) < 6.5
    assert mean_run_length(random, maskable) < 1.3  # 1 / (1 - 0.15) = 1.18
    # spans are placed over the whole row, not packed at one end
    frequency = span[:, 0, maskable[0]].mean(axis=0)
    interior = frequency[15:-15]  # the first and last slots are covered less: only spans starting there cover them
    assert interior.min() > 0.12 and interior.max() < 0.2  # 19 / 125 = 0.15 on average
    left, right = frequency[:60].mean(), frequency[-60:].mean()
    assert abs(left - right) < 0.02


# --- fe_span --------------------------------------------------------------------------------


@PROPERTY
@given(batch=batches(), segments=segment_counts, span=span_shapes)
def test_fe_span_groups_are_disjoint_unions_of_whole_spans(batch, segments, span):
    masks = batch.masks("fe_span", segments=segments, span=span)
    assert masks.shape == (len(batch.n), segments, batch.maskable.shape[1])
    assert np.array_equal(masks.sum(axis=1), batch.maskable.astype(int))  # disjoint, covering
    assert not (masks & ~batch.maskable[:, None, :]).any()
    length = batch.maskable.shape[1]
    spans = span_partition(batch.seed, batch.epochs, batch.indices, batch.n, length, span)
    assert spans.shape == batch.maskable.shape
    for slots, span_of_slot, n in zip(slot_view(masks, batch.maskable), spans, batch.n, strict=True):
        assert (span_of_slot[n:] == -1).all()
        span_of_slot = span_of_slot[:n]
        if n == 0:
            continue
        # the spans tile the slots in order: ids 0, 0, 1, 1, 1, 2, ... with lengths <= max_length
        assert span_of_slot[0] == 0 and set(np.diff(span_of_slot)) <= {0, 1}
        assert np.bincount(span_of_slot).max() <= span.max_length
        group_of_slot = slots.argmax(axis=0)
        for s in range(span_of_slot[-1] + 1):
            assert len(set(group_of_slot[span_of_slot == s])) == 1  # a span lies in one group
        assert (np.abs(slots.sum(axis=1) - n / segments) <= span.max_length).all()


def test_span_partition_lengths_are_clipped_geometric():
    rows, length = 500, 128
    shape = SpanShape(geometric_p=0.2, max_length=10)
    spans = span_partition(7, np.zeros(rows, dtype=np.int64), np.arange(rows), np.full(rows, 126), length, shape)
    lengths = np.concatenate([np.bincount(row[row >= 0])[:-1] for row in spans])  # the last span is cut short
    support = np.arange(1, 11)
    law = 0.2 * 0.8 ** (support - 1)
    law[-1] = 0.8**9  # P(length = 10) takes the whole clipped tail
    observed = np.bincount(lengths, minlength=11)[1:]
    assert stats.chisquare(observed, law * len(lengths)).pvalue > 0.001


# --- whole_word -----------------------------------------------------------------------------


@PROPERTY
@given(batch=batches(), p=ratios)
def test_whole_word_masks_whole_words_close_to_round_p_n(batch, p):
    masks = batch.masks("whole_word", mask_ratio=p)
    assert masks.shape == (len(batch.n), 1, batch.maskable.shape[1])
    assert not (masks & ~batch.maskable[:, None, :]).any()
    for b, slots in enumerate(slot_view(masks, batch.maskable)):
        n = batch.n[b]
        if n == 0:
            assert not slots.any()
            continue
        words = word_ids(batch.word_starts[b], batch.maskable[b])
        chosen = slots[0]
        for w in range(words[-1] + 1):
            assert len(set(chosen[words == w])) == 1  # a word is masked whole or not at all
        longest = np.bincount(words).max()
        count, target = chosen.sum(), masked_count(n, p)
        assert count >= 1 and abs(count - target) <= longest
        if longest == 1:  # every token is a word: exactly round(p * n)
            assert count == target


def test_whole_word_with_one_token_words_is_like_random():
    rows = 2000
    maskable = maskable_rows(rows, 34)
    word_starts = np.ones_like(maskable)
    masks = strategy_masks("whole_word", 0, 0, np.arange(rows), maskable, 0.25, 1, word_starts=word_starts)
    assert (masks.sum(axis=(1, 2)) == 8).all()
    assert np.allclose(masks[:, 0, 1:-1].mean(axis=0), 0.25, atol=0.04)


# --- determinism ----------------------------------------------------------------------------


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


@PROPERTY
@given(batch=batches(), strategy=st.sampled_from(STRATEGIES), segments=segment_counts, data=st.data())
def test_every_strategy_masks_a_sequence_alike_in_any_batch(batch, strategy, segments, data):
    whole = batch.masks(strategy, segments=segments)
    # the same rows shuffled
    order = np.array(data.draw(st.permutations(range(len(batch.n)))), dtype=np.int64)
    shuffled = Batch(
        batch.maskable[order], batch.word_starts[order], batch.indices[order], batch.epochs[order], batch.seed
    )
    assert np.array_equal(shuffled.masks(strategy, segments=segments), whole[order])
    # one row alone, with extra padding columns
    b = data.draw(st.integers(0, len(batch.n) - 1))
    pad = data.draw(st.integers(0, 5))
    alone = Batch(
        np.pad(batch.maskable[b : b + 1], ((0, 0), (0, pad))),
        np.pad(batch.word_starts[b : b + 1], ((0, 0), (0, pad))),
        batch.indices[b : b + 1],
        batch.epochs[b],  # a plain int epoch
        batch.seed,
    )
    masks = alone.masks(strategy, segments=segments)
    assert np.array_equal(masks[..., : batch.maskable.shape[1]], whole[b : b + 1])
    assert not masks[..., batch.maskable.shape[1] :].any()


@pytest.mark.parametrize("strategy", RANDOM_STRATEGIES)
def test_masks_change_with_epoch_and_seed(strategy):
    batch = fixed_batch()
    base = batch.masks(strategy)
    assert np.array_equal(base, batch.masks(strategy))
    for seed, epochs in [(batch.seed, batch.epochs + 1), (batch.seed + 1, batch.epochs)]:
        other = Batch(batch.maskable, batch.word_starts, batch.indices, epochs, seed).masks(strategy)
        differs = (other != base).any(axis=(1, 2))
        assert differs.sum() >= 6  # nearly every row, not just one
