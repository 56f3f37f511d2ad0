"""Statistics for comparing masking strategies over seeds.

The unit of the paired test is the pre-training seed. Runs of two strategies with the same
pre-training seed form a pair; the fine-tuning seeds of a pair are averaged first, because
the fine-tuning runs of one checkpoint share that checkpoint and are not independent
evidence about the pre-training strategy. Under the null hypothesis (the strategy makes no
difference) the sign of each pair's difference is a fair coin, so the exact test enumerates
all 2^n sign flips. With n pairs the smallest attainable two-sided p-value is 2 / 2^n
(0.5 for two seeds, 0.0625 for five): few seeds cannot show significance, by design.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

EXACT_MAX_PAIRS = 16  # up to 2^16 sign assignments are enumerated; more pairs use the t-test


def mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std


def sign_flip_p_value(differences: np.ndarray) -> float:
    """Exact two-sided paired sign-flip test of "mean difference = 0": the share of the 2^n
    sign assignments whose |mean| is at least the observed |mean| (ties count, with a
    relative tolerance of 1e-9 for floating-point noise)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        return float("nan")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    flipped = np.abs(signs @ d / len(d))
    return float(np.mean(flipped >= observed * (1 - 1e-9) - 1e-12))


def paired_t_p_value(differences: np.ndarray) -> float:
    """Two-sided one-sample t-test of the differences against 0 (scipy's t distribution)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), df=len(d) - 1))


def paired_test(differences: np.ndarray) -> tuple[float, str]:
    """(p-value, test name): the exact sign-flip test for up to EXACT_MAX_PAIRS pairs,
    else the paired t-test."""
    if len(differences) <= EXACT_MAX_PAIRS:
        return sign_flip_p_value(differences), "sign-flip (exact)"
    return paired_t_p_value(differences), "paired t"
