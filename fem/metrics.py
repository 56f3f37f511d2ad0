"""GLUE and SQuAD metrics, computed here (the `evaluate` package downloads its metric scripts
at run time, which fails offline). GLUE inputs are 1-D arrays of equal length; SQuAD inputs are
answer strings. Outputs are floats in the metric's natural unit (fractions, not percentages)."""

from __future__ import annotations

import re
import string
from collections import Counter

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


def _class_f1s(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class present in labels or predictions: (true positives, predicted, gold) counts."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(pred, gold)
    tp = np.array([np.sum((pred == c) & (gold == c)) for c in classes], dtype=np.float64)
    return (
        tp,
        np.array([np.sum(pred == c) for c in classes], float),
        np.array([np.sum(gold == c) for c in classes], float),
    )


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean over classes of each class's F1 (0 for a class never right), as
    scikit-learn's f1_score(average="macro") over the classes seen in labels or predictions."""
    tp, predicted, gold = _class_f1s(predictions, labels)
    f1 = np.divide(2 * tp, predicted + gold, out=np.zeros_like(tp), where=(predicted + gold) > 0)
    return float(f1.mean())


def micro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of all decisions pooled; for single-label classification it equals accuracy (the
    metric Don't Stop Pretraining reports for ChemProt and RCT)."""
    tp, predicted, gold = _class_f1s(predictions, labels)
    return float(2 * tp.sum() / (predicted.sum() + gold.sum())) if gold.sum() else 0.0


METRICS = {
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The named metrics, in order."""
    return {name: METRICS[name](predictions, labels) for name in names}


def majority_label(labels: np.ndarray) -> int:
    """The most frequent of integer class `labels` (the smallest among equally frequent ones):
    the prediction of the majority-class baseline."""
    return int(np.argmax(np.bincount(np.asarray(labels, dtype=np.int64))))


def constant_metrics(names: tuple[str, ...], value: float, labels: np.ndarray) -> dict[str, float]:
    """The named metrics of predicting `value` for every one of `labels`: a trivial baseline.
    Pearson and Spearman are 0.0 (a constant has no correlation), MCC 0.0."""
    return compute_metrics(names, np.full(len(labels), value), np.asarray(labels))


def task_score(metrics: dict[str, float], names: tuple[str, ...]) -> float:
    """One number per task: the mean of its metrics (GLUE convention for MRPC, QQP, STS-B)."""
    return float(np.mean([metrics[name] for name in names]))


# SQuAD: a port of the official v2.0 evaluation script (evaluate-v2.0.py), which also scores
# v1.1 (there every question has an answer). Scores are fractions, not percentages.
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official normalisation, in its order: lower case, remove punctuation, remove the
    articles a/an/the (whole words), collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _gold_or_empty(gold_answers: list[str]) -> list[str]:
    """Gold answers that survive normalisation; [""] for an unanswerable question (official rule)."""
    return [a for a in gold_answers if normalize_answer(a)] or [""]


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # 1 iff both are empty
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, gold_answers: list[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer, else 0.0. An
    unanswerable question (no gold answer, or [""]) matches only the empty prediction."""
    return float(max(normalize_answer(prediction) == normalize_answer(a) for a in _gold_or_empty(gold_answers)))


def squad_f1(prediction: str, gold_answers: list[str]) -> float:
    """Token-level F1 of the normalised prediction, the best over gold answers, in [0, 1]."""
    return max(_f1(prediction, a) for a in _gold_or_empty(gold_answers))


def squad_trivial_metrics(gold: dict[str, list[str]], unanswerable: bool) -> dict[str, float]:
    """The SQuAD metrics (as squad_metrics) of the trivial predictor: for v2 (`unanswerable`)
    the empty answer to every question in `gold`; for v1.1, where every question has an
    answer, exact_match and f1 0.0."""
    if not unanswerable:
        return {"exact_match": 0.0, "f1": 0.0}
    return squad_metrics(dict.fromkeys(gold, ""), gold)


def squad_metrics(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
    """exact_match and f1: means over the questions in `gold` (a question without a
    prediction counts as predicted ""). Plus has_answer_exact_match / has_answer_f1 and
    no_answer_exact_match / no_answer_f1 over the answerable and the unanswerable
    questions, each pair only when that subset is non-empty (as the official script)."""
    if not gold:
        raise ValueError("squad_metrics needs at least one gold question")
    exact, f1, has_answer = {}, {}, {}
    for qid, answers in gold.items():
        prediction = predictions.get(qid, "")
        exact[qid], f1[qid] = squad_exact_match(prediction, answers), squad_f1(prediction, answers)
        has_answer[qid] = any(answers)
    result = {"exact_match": float(np.mean(list(exact.values()))), "f1": float(np.mean(list(f1.values())))}
    for prefix, wanted in (("has_answer", True), ("no_answer", False)):
        subset = [qid for qid in gold if has_answer[qid] == wanted]
        if subset:
            result[f"{prefix}_exact_match"] = float(np.mean([exact[qid] for qid in subset]))
            result[f"{prefix}_f1"] = float(np.mean([f1[qid] for qid in subset]))
    return result
