"""GLUE metrics, computed here (the `evaluate` package downloads its metric scripts at run
time, which fails offline). Inputs are 1-D arrays of equal length; outputs are floats in
the metric's natural unit (fractions, not percentages)."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of exact matches, in [0, 1]."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def binary_f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class; 0.0 when there are no true positives."""
    pred, gold = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp = float(np.sum(pred & gold))
    if tp == 0:
        return 0.0
    precision, recall = tp / pred.sum(), tp / gold.sum()
    return float(2 * precision * recall / (precision + recall))


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation of binary predictions; 0.0 when a margin is empty."""
    pred, gold = np.asarray(predictions).astype(bool), np.asarray(labels).astype(bool)
    tp, tn = float(np.sum(pred & gold)), float(np.sum(~pred & ~gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks."""
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    return pearson(_average_ranks(x), _average_ranks(y))


METRICS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The named metrics, in order."""
    return {name: METRICS[name](predictions, labels) for name in names}


def task_score(metrics: dict[str, float], names: tuple[str, ...]) -> float:
    """One number per task: the mean of its metrics (GLUE convention for MRPC, QQP, STS-B)."""
    return float(np.mean([metrics[name] for name in names]))
