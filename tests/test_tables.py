import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fem.statistics import paired_t_p_value, paired_test, sign_flip_p_value
from fem.tables import glue_table, load_runs, to_markdown


def write_run(folder, task, strategy, seed, ftseed, score, metrics=("accuracy",), values=None):
    path = folder / f"{task}-{strategy}-{seed}-{ftseed}.json"
    path.write_text(json.dumps({
        "task": task, "metric_names": list(metrics), "score": score,
        "metrics": values or {m: score for m in metrics},
        "run": {"strategy": strategy, "pretrain_seed": seed, "finetune_seed": ftseed},
    }))  # fmt: skip
    return path


def test_table_means_std_differences_and_average(tmp_path):
    files = [
        write_run(tmp_path, "sst2", "random", 1, 1, 0.80),
        write_run(tmp_path, "sst2", "random", 2, 1, 0.70),
        write_run(tmp_path, "sst2", "fe", 1, 1, 0.90),
        write_run(tmp_path, "sst2", "fe", 2, 1, 0.86),
        write_run(tmp_path, "mrpc", "random", 1, 1, 0.60, ("f1", "accuracy")),
        write_run(tmp_path, "mrpc", "random", 2, 1, 0.62, ("f1", "accuracy")),
        write_run(tmp_path, "mrpc", "fe", 1, 1, 0.64, ("f1", "accuracy")),
        write_run(tmp_path, "mrpc", "fe", 2, 1, 0.66, ("f1", "accuracy")),
    ]
    table = glue_table(load_runs(files), ["sst2", "mrpc"], ["random", "fe"])
    assert table.task.tolist() == ["sst2", "mrpc", "glue average"]
    assert table.metric.tolist() == ["accuracy", "f1/accuracy", "mean of task scores"]
    assert table.random.tolist() == pytest.approx([75.0, 61.0, 68.0])
    assert table.fe.tolist() == pytest.approx([88.0, 65.0, 76.5])
    # sample standard deviation over the two runs, |a - b| / sqrt(2); the average's runs are
    # the per-seed means (0.80 + 0.60) / 2 = 0.70 and (0.70 + 0.62) / 2 = 0.66
    assert table.random_std.tolist() == pytest.approx([7.07, 1.41, 2.83], abs=0.01)
    assert table.fe_minus_random.tolist() == pytest.approx([13.0, 4.0, 8.5])
    # two pre-training seeds, both differences positive: 2 of the 4 sign flips are as extreme
    assert table.p_fe.tolist() == [0.5, 0.5, 0.5]
    assert table.pairs.tolist() == [2, 2, 2] and set(table.test) == {"sign-flip (exact)"}
    assert table.pretrain_seeds.tolist() == [2, 2, 2] and table.finetune_seeds.tolist() == [1, 1, 1]
    assert table.runs[0].count(";") == 3 and "sst2-fe-1-1.json" in table.runs[0]
    markdown = to_markdown(table, "Table 2", "Caption text.", ["random", "fe"])
    assert "Caption text." in markdown
    assert (
        "| sst2 | accuracy | 75.00 ± 7.07 | 88.00 ± 2.83 | 13.00 | 0.5000 | sign-flip (exact) | 2 | 2 | 1 |" in markdown
    )


def test_p_value_is_computed_from_the_per_seed_numbers(tmp_path):
    """By hand: per pre-training seed, fe - random averaged over the two fine-tuning seeds is
    seed 1: (0.90 + 0.80)/2 - (0.70 + 0.70)/2 = 0.15; seed 2: 0.61 - 0.59 = 0.02; seed 3:
    0.55 - 0.50 = 0.05. Of the 8 sign flips of (0.15, 0.02, 0.05) only all-plus and all-minus
    reach |mean| >= 0.22/3, so p = 2/8 = 0.25."""
    scores = {
        ("fe", 1): (0.90, 0.80), ("random", 1): (0.70, 0.70),
        ("fe", 2): (0.60, 0.62), ("random", 2): (0.60, 0.58),
        ("fe", 3): (0.55, 0.55), ("random", 3): (0.50, 0.50),
    }  # fmt: skip
    files = [
        write_run(tmp_path, "rte", strategy, seed, ftseed + 1, value)
        for (strategy, seed), values in scores.items()
        for ftseed, value in enumerate(values)
    ]
    table = glue_table(load_runs(files), ["rte"], ["random", "fe"])
    row = table.iloc[0]
    assert row.p_fe == 0.25 and row.pairs == 3
    assert row.fe_minus_random == pytest.approx(
        100 * (np.mean([0.9, 0.8, 0.6, 0.62, 0.55, 0.55]) - np.mean([0.7, 0.7, 0.6, 0.58, 0.5, 0.5])), abs=0.01
    )
    assert row.finetune_seeds == 2


def test_squad_gets_one_row_per_metric_and_wnli_stays_out_of_the_average(tmp_path):
    files = []
    for strategy, shift in (("random", 0.0), ("fe", 0.02)):
        for seed in (1, 2):
            files.append(write_run(tmp_path, "sst2", strategy, seed, 1, 0.80 + shift))
            files.append(write_run(tmp_path, "wnli", strategy, seed, 1, 0.20))
            files.append(write_run(tmp_path, "squad", strategy, seed, 1, 0.5, ("exact_match", "f1"),
                                   {"exact_match": 0.40 + shift, "f1": 0.60 + shift}))  # fmt: skip
    table = glue_table(load_runs(files), ["sst2", "wnli", "squad"], ["random", "fe"])
    assert list(zip(table.task, table.metric, strict=True)) == [
        ("sst2", "accuracy"), ("wnli", "accuracy"), ("glue average", "mean of task scores"),
        ("squad", "exact_match"), ("squad", "f1"),
    ]  # fmt: skip
    assert table.random.tolist() == pytest.approx([80.0, 20.0, 80.0, 40.0, 60.0])
    assert table.fe_minus_random.tolist() == pytest.approx([2.0, 0.0, 2.0, 2.0, 2.0])
    with_wnli = glue_table(load_runs(files), ["sst2", "wnli"], ["random", "fe"], average_exclude=())
    assert with_wnli.random.tolist()[-1] == pytest.approx(50.0)


def test_missing_runs_are_an_error(tmp_path):
    runs = load_runs([write_run(tmp_path, "sst2", "random", 1, 1, 0.8)])
    with pytest.raises(ValueError, match=r"\('sst2', 'fe'\)"):
        glue_table(runs, ["sst2"], ["random", "fe"])
    assert isinstance(runs, pd.DataFrame)


def test_sign_flip_test_by_enumeration():
    assert sign_flip_p_value([0.1]) == 1.0  # one pair: both signs are as extreme
    assert sign_flip_p_value([1.0, 2.0, 3.0, 4.0]) == 2 / 16
    # (1, -1): the observed mean is 0, so every flip is at least as extreme
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    # (3, 1, -1), observed sum 3: the 8 flips give sums +-5, +-3, +-3, +-1, so 6 of 8 reach |3|
    assert sign_flip_p_value([3.0, 1.0, -1.0]) == 0.75


def test_many_pairs_use_the_paired_t_test_as_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.02, 20), rng.normal(0.79, 0.02, 20)
    p_value, test = paired_test(a - b)
    assert test == "paired t"
    assert p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert math.isnan(paired_t_p_value([0.1]))


def test_report_joins_the_tables_with_their_figures_and_rebuild_commands(tmp_path):
    import subprocess
    import sys

    for n in (3, 5):
        (tmp_path / f"table{n}.md").write_text(f"## Table {n}\n\n| a |\n|---|\n| {n} |\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("efficiency.png", "variance_vs_hamming.png", "estimator_variance.png"):
        (figures / name).write_bytes(b"\x89PNG")
    out = tmp_path / "report.md"
    done = subprocess.run([sys.executable, "-m", "fem", "report", "--out", str(out), "--tables",
                           str(tmp_path / "table3.md"), str(tmp_path / "table5.md"), "--figures",
                           *map(str, sorted(figures.iterdir()))], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.index("## Table 3") < text.index("![efficiency.png](figures/efficiency.png)") < text.index("## Table 5")
    assert "![variance_vs_hamming.png](figures/variance_vs_hamming.png)" in text
    assert "Rebuild: `snakemake results/table3.csv` or `dvc repro table3`." in text
    assert (tmp_path / "report.provenance.json").is_file()
