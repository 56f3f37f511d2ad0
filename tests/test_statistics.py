"""fem/statistics.py against hand-computed values, and `fem power` through the CLI."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from fem.statistics import (
    minimum_detectable_difference,
    paired_summary,
    paired_t_p_value,
    seeds_needed,
    sign_flip_p_value,
    smallest_sign_flip_p,
    t_interval,
)


def test_interval_and_minimum_detectable_difference_by_hand():
    """Differences (1, 2, 4): mean 7/3, sd sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(7/3);
    df 2: t_0.975 = 4.302652729749462, t_0.80 = 1.0606601717798214 (scipy's quantiles)."""
    t975, t80 = stats.t.ppf(0.975, 2), stats.t.ppf(0.80, 2)
    assert t975 == pytest.approx(4.302652729749462, rel=1e-12) and t80 == pytest.approx(1.0606601717798214, rel=1e-12)
    sd, n = math.sqrt(7 / 3), 3
    summary = paired_summary(np.array([1.0, 2.0, 4.0]))
    assert summary.difference == pytest.approx(7 / 3, rel=1e-12)
    assert summary.sd == pytest.approx(1.5275252316519468, rel=1e-12) == pytest.approx(sd)
    assert summary.lo == pytest.approx(7 / 3 - 4.302652729749462 * sd / math.sqrt(n), rel=1e-12)
    assert summary.hi == pytest.approx(7 / 3 + 4.302652729749462 * sd / math.sqrt(n), rel=1e-12)
    assert summary.mdd == pytest.approx((4.302652729749462 + 1.0606601717798214) * sd / math.sqrt(n), rel=1e-12)
    assert summary.mdd == pytest.approx(4.7300, abs=1e-4)  # 5.36331 * 1.52753 / 1.73205
    assert summary.p_sign == 0.25  # all three positive: 2 of the 8 sign flips are as extreme
    assert summary.p_t == pytest.approx(2 * stats.t.sf((7 / 3) / (sd / math.sqrt(n)), 2), rel=1e-12)
    assert summary.pairs == 3
    # one strategy's mean over seeds: the same one-sample interval
    mean, sd_values, lo, hi = t_interval(np.array([70.0, 80.0]))
    half = 12.706204736174694 * math.sqrt(50) / math.sqrt(2)  # t_0.975 with df 1, sd = sqrt(50)
    assert (mean, lo, hi) == (75.0, pytest.approx(75.0 - half), pytest.approx(75.0 + half))
    assert math.isnan(t_interval(np.array([0.7]))[2]) and math.isnan(minimum_detectable_difference(1.0, 1))


def test_seeds_needed_is_the_first_n_whose_mdd_reaches_d():
    """sd 1, d 1: MDD(9) = (2.306004 + 0.888890) / 3 = 1.06496 > 1 and MDD(10) = (2.262157 +
    0.883408) / sqrt(10) = 0.99471 <= 1, so 10 seeds."""
    assert minimum_detectable_difference(1.0, 9) == pytest.approx(
        (stats.t.ppf(0.975, 8) + stats.t.ppf(0.8, 8)) / 3, rel=1e-12
    ) == pytest.approx(1.06496, abs=1e-5)  # fmt: skip
    assert minimum_detectable_difference(1.0, 10) == pytest.approx(0.99471, abs=1e-5)
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(1.0, -1.0) == 10
    assert seeds_needed(2.0, 1.0) == next(n for n in range(2, 100) if minimum_detectable_difference(2.0, n) <= 1.0)
    assert seeds_needed(0.0, 0.5) == 2 and seeds_needed(1.0, 1e-3, max_seeds=50) is None
    with pytest.raises(ValueError, match="nonzero difference"):
        seeds_needed(1.0, 0.0)


def test_sign_flip_test_by_enumeration():
    assert sign_flip_p_value([0.1]) == 1.0  # one pair: both signs are as extreme
    assert sign_flip_p_value([1.0, 2.0, 3.0, 4.0]) == 2 / 16
    # (1, -1): the observed mean is 0, so every flip is at least as extreme
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    # (3, 1, -1), observed sum 3: the 8 flips give sums +-5, +-3, +-3, +-1, so 6 of 8 reach |3|
    assert sign_flip_p_value([3.0, 1.0, -1.0]) == 0.75
    # the smallest attainable p is 2/2^n: below 0.05 from 6 seeds on
    assert [smallest_sign_flip_p(n) for n in (2, 3, 5, 6)] == [0.5, 0.25, 0.0625, 0.03125]
    assert sign_flip_p_value(np.ones(6)) == 0.03125 and sign_flip_p_value(np.ones(5)) == 0.0625


def test_sign_flip_enumeration_in_chunks_equals_a_plain_enumeration():
    """17 pairs: 2^17 sign assignments, enumerated in two chunks of 2^16."""
    d = np.random.default_rng(3).normal(0.3, 1.0, 17)
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=17))) @ d
    expected = np.mean(np.abs(flips) >= abs(d.sum()) - 1e-12)
    assert sign_flip_p_value(d) == pytest.approx(expected, abs=1e-15)


def test_paired_t_p_value_is_scipys():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.02, 20), rng.normal(0.79, 0.02, 20)
    assert paired_t_p_value(a - b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert math.isnan(paired_t_p_value([0.1]))


def fem(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fem", *args], capture_output=True, text=True, cwd=cwd)


def write_power_table(path):
    """A Table 2 CSV with the columns `fem power` reads: two rows, one comparison."""
    path.write_text(
        "task,metric,unit,fe_minus_random_k,fe_minus_random_k_sd,pairs,runs\n"
        "sst2,accuracy,score x 100,0.5,1.0,3,a.json\n"
        "mlm validation,loss,nats per masked token,-0.02,0.02,3,b.json\n"
    )
    return path


def test_fem_power_prints_the_seeds_needed_per_row(tmp_path):
    table = write_power_table(tmp_path / "table2.csv")
    done = fem("power", str(table), "--difference", "1.0", "--row", "sst2", "--comparison", "fe:random_k")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.lstrip().startswith("sst2 (accuracy)"))
    # sd 1, d 1: 10 seeds for the t-test (test above); 3 pairs now: MDD = (4.3027 + 1.0607) / sqrt(3)
    assert line.split()[-6:] == ["fe_minus_random_k", "3", "1", "3.097", "10", "10"]
    done = fem("power", str(table), "--difference", "0.05")
    assert done.returncode == 0, done.stderr
    loss = next(line for line in done.stdout.splitlines() if "(loss)" in line)
    # sd 0.02, d 0.05: MDD(3) = 5.3633 * 0.02 / sqrt(3) = 0.062 > 0.05, MDD(4) = (3.1824 + 0.9785) * 0.02 / 2
    # = 0.042; the sign-flip test needs 6 seeds for any p < 0.05
    assert seeds_needed(0.02, 0.05) == 4 and loss.split()[-2:] == ["4", "6"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.csv", "--difference", "1"], "missing.csv not found; expected a table CSV written by fem"),
        (["table2.csv", "--difference", "1", "--row", "qnli"], "table2.csv: no row 'qnli' (a task or a row label: "),
        (["table2.csv", "--difference", "1", "--comparison", "fe:random"], "no column fe_minus_random_sd"),
        (["table2.csv", "--difference", "0"], "--difference 0.0: expected a nonzero difference"),
    ],
)
def test_fem_power_bad_input_is_one_line(tmp_path, args, message):
    write_power_table(tmp_path / "table2.csv")
    done = fem("power", *args, cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
