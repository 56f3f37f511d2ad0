"""Gradient-variance analysis (DESIGN §6): what the paper argued, measured.

Everything here works on a gradient function g(sequences [R, L], masks [R, L]) -> [R, D]
(fem.mask_gradients.MaskGradients for a BERT; any linear per-token model in the tests), so
the statistics can be checked against a model whose answer is known in closed form.
Variances and covariances of gradient vectors are traces: E ||g - E g||^2, summed over
the D coordinates (units: squared gradient norm).

(a) Covariance against Hamming distance. For each of S held-out sequences with n maskable
    positions and each intersection size c = 0..m, P pairs of size-m masks (M1, M2) are
    drawn uniformly with |M1 & M2| = c, i.e. Hamming distance h = |M1 ^ M2| = 2(m - c).
    Cov(h) is the sample cross-covariance of g(x, M1) and g(x, M2) over the P pairs (unbiased
    given the sequence), averaged over sequences; correlation = Cov(h) / Cov(0).
(b) Estimators of one step's gradient from K rows (compute matched), each simulated R times:
      fe           one sequence, its K fully-explored masks, gradients averaged
      random_k     one sequence, K independent masks of the same sizes
      random_kseq  K sequences, one BERT random mask each (the larger-batch alternative)
    The total variance is taken over R replicates (new sequences and masks each time). fe
    and random_k draw two mask sets per replicate sequence, which also gives their
    mask-sampling variance (sequence held fixed): mean ||g_1 - g_2||^2 / 2.
    Replicates share their sequences across estimators (common random numbers), and the
    bootstrap resamples replicates jointly, so ratios get tight intervals.
(c) The closed form of a model in which each masked token adds an independent
    contribution a_j, g(M) = mean_{j in M} a_j (sampling without replacement from n):
      Cov(c) = V (c n - m^2) / (m (n - m)),   V = Cov at h = 0 (one mask's variance)
    i.e. linear in h with slope -V n / (2 m (n - m)), and the K-copy mask-sampling variances
      random_k: mean_k V_k / K,   fe: S / (K^2 n (n - 1)) * (sum_k (n - m_k) / m_k - K (K - 1))
    with S = V m n (n - 1) / (n - m), which is 0 when the K groups have equal size m = n / K.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fem.masking import group_sizes, masked_count, strategy_masks

GradientFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
ESTIMATORS = ("fe", "random_k", "random_kseq")


# --- closed form -------------------------------------------------------------------------


def closed_form_covariance(intersection: np.ndarray, n: int, m: int, single_variance: float) -> np.ndarray:
    """Cov of two size-m masks' gradients with |M1 & M2| = intersection, for independent
    per-token contributions; `single_variance` is one mask's variance (c = m)."""
    c = np.asarray(intersection, dtype=float)
    return single_variance * (c * n - m * m) / (m * (n - m))


def closed_form_slope(n: int, m: int, single_variance: float) -> float:
    """d Cov / d (Hamming distance) of the closed form."""
    return -single_variance * n / (2 * m * (n - m))


def closed_form_kcopy_variance(strategy: str, n: int, sizes: np.ndarray, m: int, single_variance: float) -> float:
    """Mask-sampling variance of the K-copy average under `strategy` ("fe" or "random_k"),
    masks of `sizes` [K], given one size-m mask's variance `single_variance`."""
    sizes = np.asarray(sizes, dtype=float)
    scatter = single_variance * m * n * (n - 1) / (n - m)  # S = sum_j ||a_j - mean a||^2
    variances = scatter * (n - sizes) / (sizes * n * (n - 1))
    K = len(sizes)
    if strategy == "random_k":
        return float(variances.sum() / K**2)
    if strategy == "fe":  # disjoint groups: Cov = -S / (n (n - 1)) between any two
        return float((variances.sum() - K * (K - 1) * scatter / (n * (n - 1))) / K**2)
    raise ValueError(f"no closed form for strategy {strategy!r}")


# --- (a) covariance against Hamming distance ---------------------------------------------


def intersection_pairs(
    rng: np.random.Generator, maskable: np.ndarray, m: int, pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask pairs of one sequence with every intersection size: for c = 0..m, `pairs` uniform
    pairs of size-m masks with |M1 & M2| = c (from one permutation: M1 = its first m
    positions, M2 = positions m-c .. 2m-c-1). maskable: bool [L], with at least 2m positions.
    Returns (masks1, masks2) bool [(m+1) * pairs, L] and the intersection sizes."""
    columns = np.flatnonzero(maskable)
    if len(columns) < 2 * m:
        raise ValueError(f"a sequence with {len(columns)} maskable positions cannot hold two disjoint masks of {m}")
    sizes = np.repeat(np.arange(m + 1), pairs)
    first = np.zeros((len(sizes), len(maskable)), dtype=bool)
    second = np.zeros_like(first)
    for row, c in enumerate(sizes):
        order = rng.permutation(columns)
        first[row, order[:m]] = True
        second[row, order[m - c : 2 * m - c]] = True
    return first, second, sizes


def covariance_by_intersection(
    gradient_fn: GradientFn,
    sequences: np.ndarray,
    maskable: np.ndarray,
    m: int,
    pairs: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Per-sequence covariance curves: float [S, m+1], entry [s, c] = sample cross-covariance
    (trace) of g(x_s, M1), g(x_s, M2) over `pairs` pairs with |M1 & M2| = c."""
    curves = np.empty((len(sequences), m + 1))
    for s, (sequence, row_maskable) in enumerate(zip(sequences, maskable, strict=True)):
        rng = np.random.default_rng([seed, s])
        first, second, sizes = intersection_pairs(rng, row_maskable, m, pairs)
        identical = sizes == m  # M2 = M1: its gradient is the same, no need to compute it
        grads = gradient_fn(np.repeat(sequence[None], len(sizes) + (~identical).sum(), axis=0),
                            np.concatenate([first, second[~identical]]))  # fmt: skip
        g1, g2 = grads[: len(sizes)], grads[: len(sizes)].copy()
        g2[~identical] = grads[len(sizes) :]
        for c in range(m + 1):
            a, b = g1[sizes == c], g2[sizes == c]
            curves[s, c] = ((a - a.mean(0)) * (b - b.mean(0))).sum() / (pairs - 1)
        if progress:
            progress(f"  sequence {s + 1}/{len(sequences)}: variance of one mask {curves[s, m]:.4g}")
    return curves


def hamming_summary(curves: np.ndarray, n: int, m: int, bootstrap: int, seed: int) -> dict:
    """Mean covariance and correlation per Hamming distance with bootstrap 95% intervals
    over sequences, the fitted least-squares slope, and the closed form anchored at the
    measured one-mask variance."""
    intersection = np.arange(m + 1)
    distance = 2 * (m - intersection)
    resampled = _bootstrap_means(curves, bootstrap, seed)  # [B, m+1]
    mean = curves.mean(0)
    single = float(mean[m])

    def slope(values):  # least squares of covariance on distance, over the last axis
        x = distance - distance.mean()
        return ((values - values.mean(-1, keepdims=True)) * x).sum(-1) / (x * x).sum()

    return {
        "intersection": intersection.tolist(),
        "distance": distance.tolist(),
        "covariance": _interval(mean, resampled),
        "correlation": _interval(mean / single, resampled / resampled[:, m : m + 1]),
        "closed_form_covariance": closed_form_covariance(intersection, n, m, single).tolist(),
        "closed_form_correlation": closed_form_covariance(intersection, n, m, 1.0).tolist(),
        "single_mask_variance": _interval(single, resampled[:, m]),
        "slope": _interval(float(slope(mean)), slope(resampled)),
        "closed_form_slope": closed_form_slope(n, m, single),
        "relative_slope": _interval(float(slope(mean)) / single, slope(resampled) / resampled[:, m]),
        "closed_form_relative_slope": closed_form_slope(n, m, 1.0),
    }


# --- (b) variance of K-copy estimators ---------------------------------------------------


def estimator_draws(
    gradient_fn: GradientFn,
    pool: np.ndarray,
    maskable: np.ndarray,
    mask_ratio: float,
    segments: int,
    replicates: int,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Simulate each estimator `replicates` times on sequences drawn from `pool` (int [N, L]).

    Returns {"fe": [R, 2, D], "random_k": [R, 2, D], "random_kseq": [R, D]}: for fe and
    random_k two independent mask sets on the replicate's sequence; random_kseq uses that
    sequence and K-1 others (without replacement within a replicate).
    """
    if len(pool) < segments:
        raise ValueError(f"the pool has {len(pool)} sequences; random_kseq needs at least K = {segments}")
    rng = np.random.default_rng([seed, 1])
    draws = {"fe": [], "random_k": [], "random_kseq": []}
    for r in range(replicates):
        chosen = rng.choice(len(pool), size=segments, replace=False)
        first = chosen[:1]
        for strategy in ("fe", "random_k"):
            sets = []
            for repeat in range(2):  # two mask sets: epoch numbers identify independent draws
                masks = strategy_masks(strategy, seed, 2 * r + repeat, first, maskable[first], mask_ratio, segments)[0]
                sets.append(gradient_fn(np.repeat(pool[first], segments, axis=0), masks).mean(0))
            draws[strategy].append(np.stack(sets))
        masks = strategy_masks("random", seed, r, chosen, maskable[chosen], mask_ratio, 1)[:, 0]
        draws["random_kseq"].append(gradient_fn(pool[chosen], masks).mean(0))
        if progress and ((r + 1) % max(1, replicates // 8) == 0 or r + 1 == replicates):
            progress(f"  replicate {r + 1}/{replicates}")
    return {name: np.stack(values) for name, values in draws.items()}


def estimator_summary(draws: dict[str, np.ndarray], bootstrap: int, seed: int) -> dict:
    """Total and mask-sampling variances of each estimator and their ratios, each with a
    bootstrap 95% interval (replicates resampled jointly for all estimators)."""
    replicates = len(draws["fe"])
    weights = _bootstrap_weights(replicates, bootstrap, seed)  # [B, R], rows sum to 1
    total, total_boot, within, within_boot = {}, {}, {}, {}
    for name in ESTIMATORS:
        values = draws[name][:, 0] if draws[name].ndim == 3 else draws[name]
        total[name] = _trace_variance(values, np.full((1, replicates), 1 / replicates))[0]
        total_boot[name] = _trace_variance(values, weights)
        if draws[name].ndim == 3:
            halves = ((draws[name][:, 0] - draws[name][:, 1]) ** 2).sum(1) / 2
            within[name], within_boot[name] = float(halves.mean()), weights @ halves
    summary = {
        "total_variance": {k: _interval(total[k], total_boot[k]) for k in ESTIMATORS},
        "mask_sampling_variance": {k: _interval(within[k], within_boot[k]) for k in within},
        "ratios": {},
    }
    for top, bottom in (("fe", "random_k"), ("fe", "random_kseq"), ("random_k", "random_kseq")):
        summary["ratios"][f"total_{top}/{bottom}"] = _interval(
            total[top] / total[bottom], total_boot[top] / total_boot[bottom]
        )
    summary["ratios"]["mask_sampling_fe/random_k"] = _interval(
        within["fe"] / within["random_k"], within_boot["fe"] / within_boot["random_k"]
    )
    return summary


# --- the whole analysis ------------------------------------------------------------------


def analyse(
    gradient_fn: GradientFn,
    pool: np.ndarray,
    maskable: np.ndarray,
    mask_ratio: float,
    segments: int,
    hamming_sequences: int,
    pairs_per_intersection: int,
    replicates: int,
    bootstrap: int,
    seed: int,
    progress: Callable[[str], None] = print,
) -> dict:
    """(a), (b) and (c) for held-out sequences `pool` (int [N, L], every row with the same
    number n of maskable positions, `maskable` bool [N, L]). The Hamming analysis uses the
    first `hamming_sequences` rows and masks of m = the smallest fe group size (n // K)."""
    counts = np.unique(maskable.sum(1))
    if len(counts) != 1:
        raise ValueError(f"the analysis needs sequences with equal maskable counts; got {counts.tolist()}")
    n = int(counts[0])
    sizes = group_sizes(np.array([n]), segments)[0]
    m = int(sizes.min())
    progress(f"(a) covariance vs Hamming distance: {hamming_sequences} sequences x {m + 1} intersections x "
             f"{pairs_per_intersection} pairs (n = {n}, m = {m})")  # fmt: skip
    curves = covariance_by_intersection(
        gradient_fn, pool[:hamming_sequences], maskable[:hamming_sequences], m, pairs_per_intersection, seed, progress
    )
    hamming = hamming_summary(curves, n, m, bootstrap, seed)
    progress(
        f"(b) estimator variance: {replicates} replicates x (2 x fe, 2 x random_k, random_kseq) of K = {segments} rows"
    )
    draws = estimator_draws(gradient_fn, pool, maskable, mask_ratio, segments, replicates, seed, progress)
    estimators = estimator_summary(draws, bootstrap, seed)
    single = hamming["single_mask_variance"]["value"]
    estimators["closed_form_mask_sampling_variance"] = {
        name: closed_form_kcopy_variance(name, n, sizes, m, single) for name in ("fe", "random_k")
    }
    return {
        "n": n, "m": m, "segments": segments, "group_sizes": sizes.tolist(),
        "random_masked_count": int(masked_count(n, mask_ratio)), "mask_ratio": mask_ratio,
        "hamming_sequences": hamming_sequences, "pairs_per_intersection": pairs_per_intersection,
        "replicates": replicates, "bootstrap": bootstrap, "seed": seed,
        "hamming": hamming, "estimators": estimators, "per_sequence_covariance": curves.tolist(),
    }  # fmt: skip


# --- helpers -----------------------------------------------------------------------------


def _bootstrap_weights(count: int, resamples: int, seed: int) -> np.ndarray:
    """Resampling weights [B, count]: multinomial counts / count (each row one bootstrap sample)."""
    rng = np.random.default_rng([seed, 2])
    return rng.multinomial(count, np.full(count, 1 / count), size=resamples) / count


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap means of the rows of `values` [S, ...]: [B, ...]."""
    weights = _bootstrap_weights(len(values), resamples, seed)
    return np.tensordot(weights, values, axes=1)


def _trace_variance(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Unbiased trace variance of the rows of `values` [R, D] under each weighting [B, R]."""
    count = values.shape[0]
    mean = weights @ values  # [B, D]
    second = weights @ (values * values).sum(1)  # [B]
    return (second - (mean * mean).sum(1)) * count / (count - 1)


def _interval(value, resampled: np.ndarray) -> dict:
    """{"value", "lo", "hi"}: the estimate and the bootstrap 2.5% and 97.5% percentiles."""
    lo, hi = np.percentile(resampled, [2.5, 97.5], axis=0)
    as_list = np.ndim(value) > 0
    convert = (lambda a: np.asarray(a).tolist()) if as_list else float
    return {"value": convert(value), "lo": convert(lo), "hi": convert(hi)}
