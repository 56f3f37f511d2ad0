"""Statistics for comparing masking strategies over seeds.

The unit of every statistic is the pre-training seed. Runs of two strategies with the same
pre-training seed form a pair; the fine-tuning seeds of a pair are averaged first, because
the fine-tuning runs of one checkpoint share that checkpoint and are not independent
evidence about the pre-training strategy.

For n paired differences d_1..d_n (strategy A minus strategy B, one per pre-training seed):

- the 95% interval of the mean difference is mean ± t_{0.975, n-1} · sd / sqrt(n), with sd
  the sample standard deviation (ddof 1) of the differences and t the Student t quantile;
- the minimum detectable difference (MDD) at 80% power, two-sided alpha 0.05, is the usual
  approximation (t_{0.975, n-1} + t_{0.80, n-1}) · sd / sqrt(n): a true difference of this
  size is found significant by the paired t-test about 80% of the time when the seed-to-seed
  sd is the one observed (it ignores the noncentrality of the t distribution, so it is
  slightly optimistic for very few seeds);
- the exact sign-flip p-value: under the null hypothesis (the strategy makes no difference)
  the sign of each pair's difference is a fair coin, so the test enumerates all 2^n sign
  flips. With n pairs the smallest attainable two-sided p-value is 2 / 2^n (0.5 for two
  seeds, 0.0625 for five): fewer than MIN_SIGN_FLIP_SEEDS = 6 seeds cannot reach p < 0.05,
  whatever the data;
- the paired t p-value: the two-sided one-sample t-test of the differences against 0.

A strategy's own mean over n seeds gets the same one-sample t interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # two-sided intervals; alpha = 0.05
POWER = 0.80  # of the minimum detectable difference
MIN_SIGN_FLIP_SEEDS = 6  # 2 / 2^6 = 0.03125 is the first attainable sign-flip p below 0.05
SIGN_FLIP_MAX_PAIRS = 24  # 2^24 sign assignments, enumerated in chunks; above, p_sign is nan
_CHUNK_BITS = 16


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with n pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2**n)


def sign_flip_p_value(differences: np.ndarray) -> float:
    """Exact two-sided paired sign-flip test of "mean difference = 0": the share of the 2^n
    sign assignments whose |sum| is at least the observed |sum| (ties count, with a relative
    tolerance of 1e-9 for floating-point noise). nan for no pairs or more than
    SIGN_FLIP_MAX_PAIRS pairs (then the paired t-test stands alone)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n == 0 or n > SIGN_FLIP_MAX_PAIRS:
        return float("nan")
    threshold = abs(d.sum()) * (1 - 1e-9) - 1e-12
    total, chunk = 2**n, 2 ** min(n, _CHUNK_BITS)
    bits = np.arange(n)
    extreme = 0
    for start in range(0, total, chunk):  # chunks bound the memory to chunk x n signs
        codes = np.arange(start, start + chunk)[:, None]
        signs = 1.0 - 2.0 * ((codes >> bits) & 1)
        extreme += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return extreme / total


def paired_t_p_value(differences: np.ndarray) -> float:
    """Two-sided one-sample t-test of the differences against 0 (scipy's t distribution);
    nan for fewer than two pairs; 1 or 0 when the differences do not vary."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), df=len(d) - 1))


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, sd, lo, hi): the mean of `values` (one per seed), their sample sd (ddof 1) and
    the two-sided t interval of the mean, mean ± t_{(1+confidence)/2, n-1} · sd / sqrt(n).
    sd, lo and hi are nan for a single value."""
    values = np.asarray(values, dtype=np.float64)
    mean, sd = mean_and_std(values)
    if len(values) < 2:
        return mean, sd, float("nan"), float("nan")
    half = stats.t.ppf((1 + confidence) / 2, df=len(values) - 1) * sd / math.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def minimum_detectable_difference(sd: float, n: int, alpha: float = 1 - CONFIDENCE, power: float = POWER) -> float:
    """The smallest true mean difference the two-sided paired t-test at level `alpha` detects
    with probability `power` from n pairs whose differences have standard deviation `sd`:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) · sd / sqrt(n) (see the module docstring). Same unit
    as sd; nan for n < 2 or a nan sd."""
    if n < 2 or math.isnan(sd):
        return float("nan")
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def seeds_needed(sd: float, difference: float, max_seeds: int = 10_000) -> int | None:
    """The smallest number of pre-training seeds n >= 2 with minimum_detectable_difference(sd, n)
    <= |difference|, or None when even max_seeds is not enough. The exact sign-flip test
    needs at least MIN_SIGN_FLIP_SEEDS on top of this to reach p < 0.05 at all."""
    if difference == 0 or math.isnan(sd) or math.isnan(difference):
        raise ValueError(f"seeds_needed: expected a nonzero difference and a known sd, got {difference}, {sd}")
    if sd == 0:
        return 2
    target = abs(difference)
    low, high = 2, max_seeds  # the MDD falls with n: bisect for the first n that reaches the target
    if minimum_detectable_difference(sd, high) > target:
        return None
    while low < high:
        middle = (low + high) // 2
        if minimum_detectable_difference(sd, middle) <= target:
            high = middle
        else:
            low = middle + 1
    return low


@dataclass(frozen=True)
class PairedSummary:
    """The statistics of n paired differences (A minus B, one per pre-training seed)."""

    difference: float  # mean of the differences
    lo: float  # 95% t interval of the mean difference
    hi: float
    sd: float  # sample sd (ddof 1) of the differences
    mdd: float  # minimum detectable difference, 80% power, two-sided alpha 0.05, these n pairs
    p_sign: float  # exact sign-flip p
    p_t: float  # paired t p
    pairs: int


def paired_summary(differences: np.ndarray) -> PairedSummary:
    """Every statistic of the module docstring for one set of paired differences."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("paired_summary: no pairs (no pre-training seed has runs of both strategies)")
    mean, sd, lo, hi = t_interval(d)
    return PairedSummary(difference=mean, lo=lo, hi=hi, sd=sd, mdd=minimum_detectable_difference(sd, len(d)),
                         p_sign=sign_flip_p_value(d), p_t=paired_t_p_value(d), pairs=len(d))  # fmt: skip
