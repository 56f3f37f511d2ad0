"""Paper tables, built from the metrics files of finished runs (never appended to).

Table 2: GLUE dev scores of BERT pre-trained from scratch, one row per task plus the
average, one column per masking strategy; each cell is the mean over seeds of the task
score x 100. Every row names the runs it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def load_runs(metrics_files: list[str | Path]) -> pd.DataFrame:
    """One row per fine-tuning run: task, strategy, seeds, score, the metrics file."""
    rows = []
    for path in metrics_files:
        data = json.loads(Path(path).read_text())
        rows.append(
            {
                "task": data["task"],
                "strategy": data["run"]["strategy"],
                "pretrain_seed": data["run"]["pretrain_seed"],
                "finetune_seed": data["run"]["finetune_seed"],
                "metric": "/".join(data["metric_names"]),
                "score": data["score"],
                "source": str(path),
            }
        )
    return pd.DataFrame(rows)


def glue_table(runs: pd.DataFrame, tasks: list[str], strategies: list[str]) -> pd.DataFrame:
    """Rows: tasks in order, then "average"; columns: task, metric, one per strategy,
    pretrain_seeds, finetune_seeds, runs. Scores are x 100, rounded to 2 decimals."""
    missing = [
        (t, s) for t in tasks for s in strategies
        if runs.empty or not ((runs.task == t) & (runs.strategy == s)).any()
    ]  # fmt: skip
    if missing:
        raise ValueError(f"no runs for (task, strategy) pairs {missing}")
    rows = []
    for task in tasks:
        of_task = runs[runs.task == task]
        row = {"task": task, "metric": of_task.metric.iloc[0]}
        for strategy in strategies:
            row[strategy] = 100 * of_task[of_task.strategy == strategy].score.mean()
        row["pretrain_seeds"] = of_task.pretrain_seed.nunique()
        row["finetune_seeds"] = of_task.finetune_seed.nunique()
        row["runs"] = ";".join(sorted(of_task.source))
        rows.append(row)
    table = pd.DataFrame(rows)
    average = {"task": "average", "metric": "mean of task scores"}
    average.update({s: table[s].mean() for s in strategies})
    average.update(
        pretrain_seeds=runs.pretrain_seed.nunique(),
        finetune_seeds=runs.finetune_seed.nunique(),
        runs="",
    )
    table = pd.concat([table, pd.DataFrame([average])], ignore_index=True)
    table[strategies] = table[strategies].round(2)
    return table


def to_markdown(table: pd.DataFrame, title: str, caption: str) -> str:
    """A readable Markdown rendering (without the runs column) with a caption."""
    shown = table.drop(columns=["runs"])
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = [
        "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    return "\n".join([f"## {title}", "", caption, "", header, rule, *body, ""])


def write_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str, caption: str) -> None:
    """Write the table as CSV (with the runs column) and as Markdown (with the caption)."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(md_path).write_text(to_markdown(table, title, caption))
