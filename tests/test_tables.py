import json

import pandas as pd
import pytest

from fem.tables import glue_table, load_runs, to_markdown


def write_run(folder, task, strategy, seed, ftseed, score, metrics=("accuracy",)):
    path = folder / f"{task}-{strategy}-{seed}-{ftseed}.json"
    path.write_text(json.dumps({
        "task": task, "metric_names": list(metrics), "score": score,
        "run": {"strategy": strategy, "pretrain_seed": seed, "finetune_seed": ftseed},
    }))  # fmt: skip
    return path


def test_table_means_over_seeds_and_averages_tasks(tmp_path):
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
    assert table.task.tolist() == ["sst2", "mrpc", "average"]
    assert table.metric.tolist() == ["accuracy", "f1/accuracy", "mean of task scores"]
    assert table.random.tolist() == pytest.approx([75.0, 61.0, 68.0])
    assert table.fe.tolist() == pytest.approx([88.0, 65.0, 76.5])
    assert table.pretrain_seeds.tolist() == [2, 2, 2] and table.finetune_seeds.tolist() == [1, 1, 1]
    assert table.runs[0].count(";") == 3 and "sst2-fe-1-1.json" in table.runs[0]
    markdown = to_markdown(table, "Table 2", "Caption text.")
    assert "Caption text." in markdown and "| sst2 | accuracy | 75.00 | 88.00 | 2 | 1 |" in markdown


def test_missing_runs_are_an_error(tmp_path):
    runs = load_runs([write_run(tmp_path, "sst2", "random", 1, 1, 0.8)])
    with pytest.raises(ValueError, match=r"\('sst2', 'fe'\)"):
        glue_table(runs, ["sst2"], ["random", "fe"])
    assert isinstance(runs, pd.DataFrame)
