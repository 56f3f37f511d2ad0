"""Gradient-variance analysis: against a model with a closed form, and on a real tiny BERT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fem.mask_gradients import CountSketch, MaskGradients, gradient_parameter_names, loop_mask_gradients
from fem.masking import strategy_masks
from fem.variance import (
    analyse,
    closed_form_covariance,
    closed_form_kcopy_variance,
    covariance_by_intersection,
    estimator_draws,
    estimator_summary,
    intersection_pairs,
)

LENGTH, N, K = 128, 126, 7  # n = 126 maskable positions, K = 7: fe groups of exactly m = 18
M = N // K


def linear_per_token_model(dimension: int = 12, vocab: int = 50, seed: int = 0):
    """g(x, M) = mean over j in M of a_j, a_j = token_vector[x_j] + position_vector[j]: each
    masked token adds an independent contribution, the model of the closed form."""
    rng = np.random.default_rng(seed)
    token_vector = rng.normal(size=(vocab, dimension))
    position_vector = rng.normal(size=(LENGTH, dimension))

    def contributions(sequences):  # [R, L, D]
        return token_vector[sequences] + position_vector[None]

    def gradients(sequences, masks):
        return (contributions(sequences) * masks[..., None]).sum(1) / masks.sum(1, keepdims=True)

    return gradients, contributions


def sequences_with_specials(count: int, vocab: int = 50, seed: int = 1):
    rng = np.random.default_rng(seed)
    sequences = rng.integers(4, vocab, size=(count, LENGTH))
    maskable = np.ones((count, LENGTH), dtype=bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    return sequences, maskable


def exact_covariance(contributions, sequences, maskable, intersection):
    """The closed form with each sequence's true scatter S_x = sum_j ||a_j - mean a||^2."""
    a = contributions(sequences)[maskable].reshape(len(sequences), N, -1)
    scatter = ((a - a.mean(1, keepdims=True)) ** 2).sum((1, 2))
    return np.mean([s * (intersection * N - M * M) / (M * M * N * (N - 1)) for s in scatter], axis=0)


def test_intersection_pairs_have_the_requested_overlap_and_avoid_special_tokens():
    _, maskable = sequences_with_specials(1)
    first, second, sizes = intersection_pairs(np.random.default_rng(0), maskable[0], M, 3)
    assert (first.sum(1) == M).all() and (second.sum(1) == M).all()
    assert ((first & second).sum(1) == sizes).all()
    assert sorted(set(sizes.tolist())) == list(range(M + 1))
    assert not (first | second)[:, [0, -1]].any()


def test_covariance_against_hamming_distance_matches_the_closed_form_of_a_linear_model():
    gradients, contributions = linear_per_token_model()
    sequences, maskable = sequences_with_specials(20)
    curves = covariance_by_intersection(gradients, sequences, maskable, M, pairs=60, seed=0)
    intersection = np.arange(M + 1)
    exact = exact_covariance(contributions, sequences, maskable, intersection)
    variance = exact[M]
    # Tolerance: 6% of one mask's variance at every intersection size (1200 pairs each).
    assert np.abs(curves.mean(0) - exact).max() < 0.06 * variance
    # Covariance is linear in the Hamming distance, negative for disjoint masks.
    assert exact[0] < 0 and np.allclose(np.diff(exact), np.diff(exact)[0])
    assert np.allclose(closed_form_covariance(intersection, N, M, variance), exact)


def test_covariance_with_few_pairs_per_sequence_is_unbiased():
    """3 pairs per sequence and intersection, 300 sequences: the per-sequence estimate must
    divide by pairs - 1, or the mean is off by a factor 2/3."""
    gradients, contributions = linear_per_token_model()
    sequences, maskable = sequences_with_specials(300, seed=2)
    curves = covariance_by_intersection(gradients, sequences, maskable, M, pairs=3, seed=0)
    exact = exact_covariance(contributions, sequences, maskable, np.arange(M + 1))
    assert curves.mean(0)[M] == pytest.approx(exact[M], rel=0.1)
    assert np.abs(curves.mean(0) - exact).max() < 0.12 * exact[M]


def test_estimator_variances_are_the_unbiased_sample_variances_of_the_replicates():
    rng = np.random.default_rng(0)
    draws = {
        "fe": rng.normal(size=(5, 2, 3)),
        "random_k": rng.normal(size=(5, 2, 3)),
        "random_kseq": rng.normal(size=(5, 3)),
    }
    summary = estimator_summary(draws, bootstrap=50, seed=0)
    total, within = summary["total_variance"], summary["mask_sampling_variance"]
    assert total["random_kseq"]["value"] == pytest.approx(draws["random_kseq"].var(0, ddof=1).sum())
    assert total["fe"]["value"] == pytest.approx(draws["fe"][:, 0].var(0, ddof=1).sum())
    halves = ((draws["random_k"][:, 0] - draws["random_k"][:, 1]) ** 2).sum(1) / 2
    assert within["random_k"]["value"] == pytest.approx(halves.mean())
    ratio = summary["ratios"]["total_fe/random_kseq"]
    assert ratio["value"] == pytest.approx(total["fe"]["value"] / total["random_kseq"]["value"])
    assert ratio["lo"] < ratio["value"] < ratio["hi"]


def test_fully_explored_masks_have_zero_mask_sampling_variance_when_k_times_m_is_n():
    gradients, _ = linear_per_token_model()
    sequences, maskable = sequences_with_specials(30)
    draws = estimator_draws(gradients, sequences, maskable, 0.15, K, replicates=40, seed=0)
    fe_sets = strategy_masks("fe", 0, np.array([0, 1]), np.array([0, 0]), maskable[:2], 0.15, K)
    assert (fe_sets[0] != fe_sets[1]).any()  # the two mask sets of a replicate really differ
    fe_spread = np.abs(draws["fe"][:, 0] - draws["fe"][:, 1]).max()
    random_k_spread = np.abs(draws["random_k"][:, 0] - draws["random_k"][:, 1]).max()
    assert fe_spread < 1e-12 and random_k_spread > 0.1
    assert closed_form_kcopy_variance("fe", N, np.full(K, M), M, 1.0) == pytest.approx(0, abs=1e-12)
    # Unequal groups (n = 127): not zero, and still far below random_k.
    uneven = closed_form_kcopy_variance("fe", 127, np.array([19] + [18] * 6), 18, 1.0)
    assert 0 < uneven < closed_form_kcopy_variance("random_k", 127, np.array([19] + [18] * 6), 18, 1.0)


def test_analysis_of_a_linear_model_recovers_the_closed_form_slope_and_estimator_variances():
    gradients, _ = linear_per_token_model()
    sequences, maskable = sequences_with_specials(40)
    result = analyse(gradients, sequences, maskable, 0.15, K, 20, 40, 60, 500, 0, progress=lambda _: None)
    hamming, estimators = result["hamming"], result["estimators"]
    assert hamming["slope"]["value"] == pytest.approx(hamming["closed_form_slope"], rel=0.1)
    assert hamming["slope"]["lo"] < hamming["slope"]["value"] < hamming["slope"]["hi"] < 0
    within = estimators["mask_sampling_variance"]
    predicted = estimators["closed_form_mask_sampling_variance"]
    assert within["random_k"]["lo"] < predicted["random_k"] < within["random_k"]["hi"]
    assert within["fe"]["value"] < 1e-20 and predicted["fe"] == pytest.approx(0, abs=1e-12)


def test_unequal_maskable_counts_are_rejected_with_a_clear_error():
    gradients, _ = linear_per_token_model()
    sequences, maskable = sequences_with_specials(10)
    maskable[3, 5] = False
    with pytest.raises(ValueError, match="equal maskable counts"):
        analyse(gradients, sequences, maskable, 0.15, K, 2, 3, 2, 10, 0, progress=lambda _: None)


def test_count_sketch_is_linear_and_preserves_inner_products_on_average():
    x = torch.randn(2, 5000, dtype=torch.float64)
    sketches = [CountSketch(5000, 256, seed) for seed in range(50)]
    sketch = sketches[0]
    assert torch.allclose(sketch(x[:1] + 2 * x[1:]), sketch(x[:1]) + 2 * sketch(x[1:]))
    exact = (x[0] * x[0]).sum()
    average = torch.stack([(s(x)[0] * s(x)[0]).sum() for s in sketches]).mean()
    assert average == pytest.approx(float(exact), rel=0.05)


@pytest.fixture(scope="module")
def tiny_bert():
    from fem.modeling import build_bert

    torch.manual_seed(0)
    model = build_bert(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=LENGTH)  # fmt: skip
    model.config._attn_implementation = "eager"
    return model


@pytest.mark.parametrize("subset", ["without_word_embeddings", "all"])
def test_vmap_gradients_equal_one_backward_per_mask(tiny_bert, subset):
    sequences, maskable = sequences_with_specials(5, vocab=60)
    masks = strategy_masks("fe", 0, 0, np.arange(5), maskable, 0.15, K)[:, :2].reshape(10, LENGTH)
    batched = MaskGradients(tiny_bert, mask_token_id=3, parameters=subset, projection_dim=None, chunk_rows=4)
    names = gradient_parameter_names(tiny_bert, subset)
    reference = loop_mask_gradients(tiny_bert, 3, names, np.repeat(sequences, 2, axis=0), masks)
    assert batched.dimension == reference.shape[1]
    assert np.allclose(batched(np.repeat(sequences, 2, axis=0), masks), reference, atol=1e-6)
    assert ("bert.embeddings.word_embeddings.weight" in names) == (subset == "all")


def test_fe_has_lower_gradient_variance_than_random_k_on_a_tiny_bert(tiny_bert):
    """Acceptance: with a fixed seed, Var(fe) < Var(random_k) and the bootstrap interval of
    the ratio lies below 1, for the mask-sampling and for the total variance."""
    torch.manual_seed(0)
    sequences, maskable = sequences_with_specials(24, vocab=60)
    gradients = MaskGradients(tiny_bert, mask_token_id=3, projection_dim=512, chunk_rows=35)
    result = analyse(gradients, sequences, maskable, 0.15, K, 2, 3, 24, 1000, 0, progress=lambda _: None)
    ratios = result["estimators"]["ratios"]
    assert ratios["mask_sampling_fe/random_k"]["hi"] < 1
    assert ratios["total_fe/random_k"]["hi"] < 1
    total = result["estimators"]["total_variance"]
    assert total["fe"]["value"] < total["random_k"]["value"]


@pytest.mark.slow
def test_speed_benchmark_runs_both_paths_and_checks_they_agree():
    """A few rows of benchmarks/variance_speed.py: it must keep working (it exits non-zero
    when the two paths disagree); the timings are measured by running it in full."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "variance_speed.py"
    done = subprocess.run([sys.executable, str(script), "--rows", "14", "--chunk-rows", "7"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ratios = [line for line in done.stdout.splitlines() if "ratio loop / vmap:" in line]
    assert len(ratios) == 2 and all(float(line.split(":")[1].split()[0]) > 0 for line in ratios)
