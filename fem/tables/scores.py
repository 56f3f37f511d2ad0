"""Paper tables, built from the metrics files of finished runs (never appended to).

Table 2: dev scores of BERT pre-trained from scratch. One row per GLUE task (its score: the
mean of its metrics, e.g. MRPC F1 and accuracy, MNLI matched and mismatched accuracy), the
GLUE average (the mean of the task scores, WNLI excluded by default), one row per SQuAD
metric (exact match, F1), then, given the pre-training runs' metrics.json, the intrinsic
rows (validation MLM loss, masked-token accuracy; fem/tables/intrinsic.py). Every row has
its trivial baseline (the task's majority class / constant predictor, x 100; the unigram model
for the intrinsic rows) and, per strategy and per comparison A:B, the statistics over
pre-training seeds of fem/tables/row_statistics.py. Every row names the runs it came from.
Table 1 (continual) is the same table of other runs; Table 4 is fem/tables/segments.py.
A run's strategy and seeds are those its metrics.json records, never its path.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fem.comparisons import comparison_name, parse_comparisons
from fem.errors import DataError
from fem.tables.intrinsic import intrinsic_values, load_pretrain_runs, read_json_keys, step_markdown, step_summary
from fem.tables.render import interval_cell, markdown_lines, number, p_cell, write_csv_and_markdown
from fem.tables.row_statistics import RowSpec, row_columns

AVERAGE = "glue average"
RUN_KEYS = ["task", "metric_names", "score", "metrics", "run", "trivial_metrics", "trivial_score"]


def load_runs(metrics_files: list[str | Path]) -> pd.DataFrame:
    """One row per fine-tuning run: task, strategy, seeds, metrics, score, their trivial
    baselines (fem/finetuning/glue.py: trivial_metrics, trivial_score), the file. ConfigError
    naming the file and key when one is missing."""
    rows = []
    for path in metrics_files:
        data = read_json_keys(path, RUN_KEYS, "the metrics.json of a fine-tuning run")
        rows.append(
            {
                "task": data["task"],
                "strategy": data["run"]["strategy"],
                "pretrain_seed": data["run"]["pretrain_seed"],
                "finetune_seed": data["run"]["finetune_seed"],
                "metric": "/".join(data["metric_names"]),
                "metrics": data["metrics"],
                "score": data["score"],
                "trivial_metrics": data["trivial_metrics"],
                "trivial_score": data["trivial_score"],
                "step": data["run"].get("step"),  # pre-training step of the checkpoint (Table 3)
                "source": str(path),
            }
        )
    return pd.DataFrame(rows)


def _trivial_metric(run, name: str) -> float:
    if name not in run.trivial_metrics:
        raise DataError(f"{run.source}: no key {name!r} under 'trivial_metrics' (expected one per metric)")
    return run.trivial_metrics[name]


def table_values(runs: pd.DataFrame, tasks: list[str], per_metric: set[str]) -> pd.DataFrame:
    """Long format, one value per (row, run): columns task, metric, strategy, pretrain_seed,
    finetune_seed, value, trivial, source. Tasks in `per_metric` (SQuAD) get one row per metric."""
    long = []
    for run in runs.itertuples(index=False):
        if run.task not in tasks:
            continue
        common = {"task": run.task, "strategy": run.strategy, "pretrain_seed": run.pretrain_seed,
                  "finetune_seed": run.finetune_seed, "source": run.source}  # fmt: skip
        if run.task in per_metric:
            long += [common | {"metric": name, "value": run.metrics[name], "trivial": _trivial_metric(run, name)}
                     for name in run.metric.split("/")]  # fmt: skip
        else:
            long.append(common | {"metric": run.metric, "value": run.score, "trivial": run.trivial_score})
    return pd.DataFrame(long)


def average_values(values: pd.DataFrame, tasks: list[str], label: str = AVERAGE) -> pd.DataFrame:
    """The average per run-seed pair (row `label`): the mean of the task scores of `tasks`
    (and of their trivial baselines)."""
    of_tasks = values[values.task.isin(tasks)]
    keys = ["strategy", "pretrain_seed", "finetune_seed"]
    counts = of_tasks.groupby(keys).value.count()
    incomplete = counts[counts != len(tasks)]
    if len(incomplete):
        raise DataError(f"the GLUE average needs every task for each run; incomplete: {list(incomplete.index)}")
    average = of_tasks.groupby(keys, as_index=False)[["value", "trivial"]].mean()
    return average.assign(task=label, metric="mean of task scores", source="")


def check_runs(runs: pd.DataFrame, tasks: list[str], strategies: list[str]) -> None:
    missing = [
        (t, s) for t in tasks for s in strategies
        if runs.empty or not ((runs.task == t) & (runs.strategy == s)).any()
    ]  # fmt: skip
    if missing:
        raise DataError(f"no runs for (task, strategy) pairs {missing}")


def score_rows(
    runs: pd.DataFrame,
    tasks: list[str],
    strategies: list[str],
    average_exclude: tuple[str, ...] = ("wnli",),
    per_metric: tuple[str, ...] = ("squad", "squad_v2"),
    average_label: str = AVERAGE,
    pretrain: pd.DataFrame | None = None,
) -> list[tuple[RowSpec, pd.DataFrame, pd.DataFrame]]:
    """The rows of a score table in order: (spec, the row's long values, the values whose
    seeds the row counts). Tasks, the GLUE average, SQuAD metrics, then the intrinsic rows
    of `pretrain` (load_pretrain_runs) when given."""
    check_runs(runs, tasks, strategies)
    values = table_values(runs, tasks, set(per_metric))
    glue_tasks = [t for t in tasks if t not in per_metric and t not in average_exclude]
    keys = [(t, m) for t in tasks if t not in per_metric for m in values[values.task == t].metric.unique()]
    if glue_tasks:
        values = pd.concat([values, average_values(values, glue_tasks, average_label)], ignore_index=True)
        keys.append((average_label, "mean of task scores"))
    keys += [(t, m) for t in tasks if t in per_metric for m in values[values.task == t].metric.unique()]
    rows = []
    for task, metric in keys:
        of_row = values[(values.task == task) & (values.metric == metric)]
        of_row = of_row[of_row.strategy.isin(strategies)]
        counted = of_row if task != average_label else values[values.task.isin(glue_tasks)]
        rows.append((RowSpec(task, metric), of_row, counted))
    if pretrain is not None:
        absent = [s for s in strategies if s not in set(pretrain.strategy)]
        if absent:
            raise DataError(f"no pre-training metrics.json of strategies {absent} among the --pretrain-metrics")
        specs, intrinsic = intrinsic_values(pretrain[pretrain.strategy.isin(strategies)])
        for spec in specs:
            of_row = intrinsic[(intrinsic.task == spec.task) & (intrinsic.metric == spec.metric)]
            rows.append((spec, of_row, of_row))
    return rows


def glue_table(
    runs: pd.DataFrame,
    tasks: list[str],
    strategies: list[str],
    comparisons: list[tuple[str, str]] | None = None,
    average_exclude: tuple[str, ...] = ("wnli",),
    per_metric: tuple[str, ...] = ("squad", "squad_v2"),
    average_label: str = AVERAGE,
    pretrain: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tables 1 and 2 (see the module docstring). Columns: task, metric, unit, better,
    trivial; per strategy and per comparison (default: comparisons.default_comparisons)
    those of fem/tables/row_statistics.py; pairs, pretrain_seeds, finetune_seeds, runs."""
    if comparisons is None:
        comparisons = parse_comparisons(None, strategies)
    table = []
    for spec, of_row, counted in score_rows(runs, tasks, strategies, average_exclude, per_metric, average_label,
                                            pretrain):  # fmt: skip
        row = {"task": spec.task, "metric": spec.metric} | row_columns(of_row, spec, strategies, comparisons)
        row.update(pretrain_seeds=counted.pretrain_seed.nunique(), finetune_seeds=counted.finetune_seed.nunique(),
                   runs=";".join(sorted(set(of_row.source) - {""})))  # fmt: skip
        table.append(row)
    return pd.DataFrame(table)


def score_markdown(
    table: pd.DataFrame,
    title: str,
    caption: str,
    strategies: list[str],
    comparisons: list[tuple[str, str]],
    labels: tuple[str, ...] = ("task", "metric"),
    steps: pd.DataFrame | None = None,
) -> str:
    """Tables 1, 2 and 4 in Markdown: per row its trivial baseline, each strategy as "mean
    [lo, hi]" and the strategies whose interval is above the baseline (below it where lower
    is better); then the differences with interval, sd, MDD and both p-values; then, given
    `steps` (intrinsic.step_summary), what one pre-training step of each strategy is."""
    records = table.to_dict("records")
    main = [[str(r[c]) for c in labels] + [number(r["trivial"], r["unit"])]
            + [interval_cell(r, s) for s in strategies]
            + [", ".join(s for s in strategies if r[f"{s}_above_trivial"]) or "none"] for r in records]  # fmt: skip
    parts = [f"## {title}", "", caption, ""]
    parts += markdown_lines([*labels, "trivial", *strategies, "interval beyond trivial"], main)
    if comparisons:
        differences = [
            [str(r[c]) for c in labels] + [f"{a} − {b}", interval_cell(r, comparison_name(a, b), sign=True)]
            + [number(r[f"{comparison_name(a, b)}_{s}"], r["unit"]) for s in ("sd", "mdd")]
            + [p_cell(r[f"{comparison_name(a, b)}_{s}"]) for s in ("p_sign", "p_t")] + [str(r["pairs"])]
            for r in records for a, b in comparisons
        ]  # fmt: skip
        parts += ["", "Differences over pre-training seeds (paired by seed):", ""]
        parts += markdown_lines([*labels, "difference", "mean [95% interval]", "sd of difference",
                                 "MDD (80% power)", "p sign-flip", "p paired t", "pairs"], differences)  # fmt: skip
    if steps is not None:
        parts += ["", "One pre-training step of each strategy (means over its runs' metrics.json):", ""]
        parts.append(step_markdown(steps))
    return "\n".join(parts) + "\n"


def to_markdown(
    table: pd.DataFrame,
    title: str,
    caption: str,
    strategies: list[str] | None = None,
    comparisons: list[tuple[str, str]] | None = None,
    steps: pd.DataFrame | None = None,
) -> str:
    """score_markdown with the comparisons found in the table's columns when not given."""
    strategies = strategies or [c.removesuffix("_above_trivial") for c in table.columns if c.endswith("_above_trivial")]
    if comparisons is None:
        names = {comparison_name(a, b): (a, b) for a in strategies for b in strategies}
        comparisons = [names[c] for c in table.columns if c in names]  # in the table's order
    return score_markdown(table, title, caption, strategies, comparisons, steps=steps)


def write_score_table(
    table: pd.DataFrame,
    csv_path: str | Path,
    md_path: str | Path,
    title: str,
    caption: str,
    strategies: list[str] | None = None,
    comparisons: list[tuple[str, str]] | None = None,
    steps: pd.DataFrame | None = None,
) -> list[str]:
    """Write a score table (Tables 1, 2) as CSV (with the runs column) and as Markdown (with
    the caption, to_markdown); return the two paths."""
    markdown = to_markdown(table, title, caption, strategies, comparisons, steps)
    return write_csv_and_markdown(table, csv_path, md_path, markdown)


def pretrain_steps(
    pretrain_metrics: list[str] | None, strategies: list[str], default_segments: int | None = None
) -> pd.DataFrame | None:
    """intrinsic.step_summary of the given pre-training metrics.json files (strategies named as
    intrinsic.load_pretrain_runs names them), or None."""
    if not pretrain_metrics:
        return None
    return step_summary(load_pretrain_runs(pretrain_metrics, default_segments), strategies)
