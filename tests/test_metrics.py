import numpy as np
import pytest

from fem.metrics import accuracy, binary_f1, matthews_correlation, pearson, spearman, task_score


def test_accuracy():
    assert accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == 0.5


def test_binary_f1_by_hand():
    # tp = 2, fp = 1, fn = 1 -> precision 2/3, recall 2/3, F1 2/3
    assert binary_f1(np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0])) == pytest.approx(2 / 3)
    assert binary_f1(np.array([0, 0]), np.array([1, 0])) == 0.0


def test_matthews_by_hand():
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    pred, gold = np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0])
    assert matthews_correlation(pred, gold) == pytest.approx(1 / 6)
    assert matthews_correlation(gold, gold) == pytest.approx(1.0)
    assert matthews_correlation(1 - gold, gold) == pytest.approx(-1.0)
    assert matthews_correlation(np.ones(5), gold) == 0.0  # constant prediction


def test_pearson_and_spearman_by_hand():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.5])
    # (1,2,3,4) vs (1,2,3,5): deviations (-1.5,-.5,.5,1.5) and (-1.75,-.75,.25,2.25),
    # cross sum 6.5, squared sums 5 and 8.75
    assert pearson(x, np.array([1.0, 2.0, 3.0, 5.0])) == pytest.approx(6.5 / np.sqrt(5 * 8.75))
    assert spearman(x, y) == pytest.approx(1.0)  # monotone, not linear
    assert pearson(x, y) < 1.0
    # ties share average ranks: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    expected = pearson(np.array([1, 2.5, 2.5, 4]), x)
    assert spearman(np.array([0.1, 0.5, 0.5, 0.9]), x) == pytest.approx(expected)


def test_task_score_is_the_mean_of_the_task_metrics():
    assert task_score({"f1": 0.8, "accuracy": 0.6}, ("f1", "accuracy")) == pytest.approx(0.7)
