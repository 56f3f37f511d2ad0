"""Paper tables, built from the metrics files of finished runs (never appended to).

Table 2: dev scores of BERT pre-trained from scratch. One row per GLUE task (its score: the
mean of its metrics, e.g. MRPC F1 and accuracy, MNLI matched and mismatched accuracy), the
GLUE average (the mean of the task scores, WNLI excluded by default), then one row per
SQuAD metric (exact match, F1). Per strategy: the mean and standard deviation over all
(pre-training seed, fine-tuning seed) runs, x 100. Per strategy other than the baseline:
the difference of means and the p-value of a paired test over pre-training seeds
(fem/statistics.py). Every row names the runs it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fem.statistics import mean_and_std, paired_test

AVERAGE = "glue average"


def load_runs(metrics_files: list[str | Path]) -> pd.DataFrame:
    """One row per fine-tuning run: task, strategy, seeds, metrics, score, the file."""
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
                "metrics": data.get("metrics", {}),
                "score": data["score"],
                "step": data["run"].get("step"),  # pre-training step of the checkpoint (Table 3)
                "source": str(path),
            }
        )
    return pd.DataFrame(rows)


def _table_values(runs: pd.DataFrame, tasks: list[str], per_metric: set[str]) -> pd.DataFrame:
    """Long format, one value per (row, run): columns task, metric, strategy, pretrain_seed,
    finetune_seed, value, source. Tasks in `per_metric` (SQuAD) get one row per metric."""
    long = []
    for run in runs.itertuples(index=False):
        if run.task not in tasks:
            continue
        common = {"task": run.task, "strategy": run.strategy, "pretrain_seed": run.pretrain_seed,
                  "finetune_seed": run.finetune_seed, "source": run.source}  # fmt: skip
        if run.task in per_metric:
            long += [common | {"metric": name, "value": run.metrics[name]} for name in run.metric.split("/")]
        else:
            long.append(common | {"metric": run.metric, "value": run.score})
    return pd.DataFrame(long)


def _average_values(values: pd.DataFrame, tasks: list[str], label: str = AVERAGE) -> pd.DataFrame:
    """The average per run-seed pair (row `label`): the mean of the task scores of `tasks`."""
    of_tasks = values[values.task.isin(tasks)]
    keys = ["strategy", "pretrain_seed", "finetune_seed"]
    counts = of_tasks.groupby(keys).value.count()
    incomplete = counts[counts != len(tasks)]
    if len(incomplete):
        raise ValueError(f"the GLUE average needs every task for each run; incomplete: {list(incomplete.index)}")
    average = of_tasks.groupby(keys, as_index=False).value.mean()
    return average.assign(task=label, metric="mean of task scores", source="")


def _compare(of_row: pd.DataFrame, strategy: str, baseline: str) -> tuple[float, float, str, int]:
    """(difference of means x 100, p-value, test, pairs) of `strategy` against `baseline`,
    paired by pre-training seed (fine-tuning seeds averaged within a pair)."""
    per_seed = of_row.groupby(["strategy", "pretrain_seed", "finetune_seed"]).value.mean().unstack("strategy")
    per_seed = per_seed[[baseline, strategy]].dropna()  # fine-tuning seeds run under both
    by_pretrain_seed = per_seed.groupby(level="pretrain_seed").mean()
    differences = (by_pretrain_seed[strategy] - by_pretrain_seed[baseline]).to_numpy()
    p_value, test = paired_test(differences)
    mean_difference = 100 * (
        of_row[of_row.strategy == strategy].value.mean() - of_row[of_row.strategy == baseline].value.mean()
    )
    return mean_difference, p_value, test, len(differences)


def glue_table(
    runs: pd.DataFrame,
    tasks: list[str],
    strategies: list[str],
    baseline: str = "random",
    average_exclude: tuple[str, ...] = ("wnli",),
    per_metric: tuple[str, ...] = ("squad", "squad_v2"),
    average_label: str = AVERAGE,
) -> pd.DataFrame:
    """Table 2 (see the module docstring). Columns: task, metric; per strategy `<s>` (mean)
    and `<s>_std`; per strategy other than `baseline` `<s>_minus_<baseline>` and `p_<s>`;
    test, pairs, pretrain_seeds, finetune_seeds, runs. Scores x 100, rounded to 2 decimals."""
    missing = [
        (t, s) for t in tasks for s in strategies
        if runs.empty or not ((runs.task == t) & (runs.strategy == s)).any()
    ]  # fmt: skip
    if missing:
        raise ValueError(f"no runs for (task, strategy) pairs {missing}")
    values = _table_values(runs, tasks, set(per_metric))
    glue_tasks = [t for t in tasks if t not in per_metric and t not in average_exclude]
    row_keys = [(t, m) for t in tasks if t not in per_metric for m in values[values.task == t].metric.unique()]
    if glue_tasks:
        values = pd.concat([values, _average_values(values, glue_tasks, average_label)], ignore_index=True)
        row_keys.append((average_label, "mean of task scores"))
    row_keys += [(t, m) for t in tasks if t in per_metric for m in values[values.task == t].metric.unique()]
    compared = [s for s in strategies if s != baseline] if baseline in strategies else []

    rows = []
    for task, metric in row_keys:
        of_row = values[(values.task == task) & (values.metric == metric)]
        row: dict = {"task": task, "metric": metric}
        for strategy in strategies:
            mean, std = mean_and_std(of_row[of_row.strategy == strategy].value)
            row[strategy], row[f"{strategy}_std"] = 100 * mean, 100 * std
        test, pairs = "", 0
        for strategy in compared:
            difference, p_value, test, pairs = _compare(of_row, strategy, baseline)
            row[f"{strategy}_minus_{baseline}"], row[f"p_{strategy}"] = difference, p_value
        used = of_row if task != average_label else values[values.task.isin(glue_tasks)]
        row.update(
            test=test,
            pairs=pairs,
            pretrain_seeds=used.pretrain_seed.nunique(),
            finetune_seeds=used.finetune_seed.nunique(),
            runs=";".join(sorted(set(of_row.source) - {""})),
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    score_columns = [c for c in table.columns if c in strategies or c.endswith("_std") or "_minus_" in c]
    table[score_columns] = table[score_columns].round(2)
    p_columns = [c for c in table.columns if c.startswith("p_")]
    table[p_columns] = table[p_columns].round(4)
    return table


def build_table(command: str, parameters: dict) -> pd.DataFrame:
    """The table `fem <command>` builds from its flags, `parameters` (as recorded in the table's
    provenance.json): `score-table` (Tables 1, 2, 4), `table3` or `table5`. The table commands
    and `fem audit --verify`, which rebuilds a table from its recorded parameters, both build
    tables here. KeyError for a missing parameter, ValueError for another command."""
    p = parameters
    if command in ("score-table", "table2"):  # table2: the command's alias
        return glue_table(load_runs(p["metrics"]), p["tasks"], p["strategies"], p["baseline"],
                          tuple(p["average_exclude"]), average_label=p["average_label"])  # fmt: skip
    if command == "table3":
        from fem.efficiency import efficiency_table, validation_losses  # imported by Table 3 only

        return efficiency_table(load_runs(p["metrics"]), validation_losses(p["train_logs"]), p["task"],
                                p["strategies"], p["steps"], p["total_steps"])  # fmt: skip
    if command == "table5":
        return variance_table(load_variance_results(p["results"]))
    raise ValueError(f"`fem {command}` builds no table (table commands: score-table, table2, table3, table5)")


def to_markdown(table: pd.DataFrame, title: str, caption: str, strategies: list[str] | None = None) -> str:
    """A readable Markdown rendering with a caption: without the runs column, and with each
    strategy's cell as "mean ± std" when `strategies` are given."""
    shown = table.drop(columns=["runs"]).copy()
    for strategy in strategies or []:
        std = shown.pop(f"{strategy}_std")
        shown[strategy] = [
            f"{m:.2f}" if np.isnan(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(shown[strategy], std, strict=True)
        ]
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = [
        "| " + " | ".join(_cell(column, v) for column, v in zip(shown.columns, row, strict=True)) + " |"
        for row in shown.itertuples(index=False)
    ]
    return "\n".join([f"## {title}", "", caption, "", header, rule, *body, ""])


def _cell(column: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if column.startswith("p_") else f"{value:.2f}"
    return str(value)


def write_table(
    table: pd.DataFrame,
    csv_path: str | Path,
    md_path: str | Path,
    title: str,
    caption: str,
    strategies: list[str] | None = None,
) -> None:
    """Write the table as CSV (with the runs column) and as Markdown (with the caption)."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(md_path).write_text(to_markdown(table, title, caption, strategies))


def load_variance_results(files: list[str | Path]) -> list[dict]:
    """The variance.json files of `fem variance`, each with its path under "source", ordered
    by pre-training strategy (as given) and step (final last)."""
    results = []
    for path in files:
        data = json.loads(Path(path).read_text())
        data["source"] = str(path)
        results.append(data)
    return results


def checkpoint_label(run: dict) -> str:
    """ "init" for step 0 (the same weights for every strategy of a seed), else
    "<strategy> step N" or "<strategy> final"."""
    if run["step"] == 0:
        return "init"
    return f"{run['strategy']} {'final' if run['final'] else 'step ' + str(run['step'])}"


def variance_table(results: list[dict]) -> pd.DataFrame:
    """Table 5: one row per analysed checkpoint. Variances are traces (squared gradient
    norm); each estimate has a bootstrap 95% interval (_lo, _hi); *_closed_form is the
    prediction of independent per-token contributions (fem/variance.py)."""
    rows = []
    for result in results:
        run, hamming, estimators = result["run"], result["hamming"], result["estimators"]
        row = {
            "checkpoint": checkpoint_label(run),
            "strategy": run["strategy"],
            "pretrain_seed": run["pretrain_seed"],
            "step": run["step"],
            "validation_mlm_loss": run.get("validation_mlm_loss"),
            "n": result["n"],
            "m": result["m"],
            "K": result["segments"],
        }
        _add_interval(row, "single_mask_variance", hamming["single_mask_variance"])
        _add_interval(row, "covariance_slope", hamming["slope"])
        row["covariance_slope_closed_form"] = hamming["closed_form_slope"]
        _add_interval(row, "relative_slope", hamming["relative_slope"])
        row["relative_slope_closed_form"] = hamming["closed_form_relative_slope"]
        for name, interval in estimators["total_variance"].items():
            _add_interval(row, f"var_{name}", interval)
        for name, interval in estimators["ratios"].items():
            _add_interval(row, "ratio_" + name.replace("/", "_over_"), interval)
        for name, interval in estimators["mask_sampling_variance"].items():
            _add_interval(row, f"mask_var_{name}", interval)
            row[f"mask_var_{name}_closed_form"] = estimators["closed_form_mask_sampling_variance"][name]
        row["runs"] = result["source"]
        rows.append(row)
    return pd.DataFrame(rows)


def _add_interval(row: dict, name: str, interval: dict) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = interval["value"], interval["lo"], interval["hi"]


VARIANCE_MARKDOWN_COLUMNS = {
    "checkpoint": "checkpoint",
    "validation_mlm_loss": "val. MLM loss",
    "relative_slope": "slope of Cov/Var per Hamming unit",
    "ratio_total_fe_over_random_k": "Var(fe) / Var(random_k)",
    "ratio_total_fe_over_random_kseq": "Var(fe) / Var(random K seq.)",
    "ratio_mask_sampling_fe_over_random_k": "mask-sampling Var(fe) / Var(random_k)",
}


def variance_markdown(table: pd.DataFrame, title: str, caption: str) -> str:
    """Table 5 in Markdown: the key columns, each estimate as "value [lo, hi]", the closed
    form of the slope beside the measured one."""
    lines = [f"## {title}", "", caption, "", "| " + " | ".join(VARIANCE_MARKDOWN_COLUMNS.values()) + " |",
             "|" + "|".join("---" for _ in VARIANCE_MARKDOWN_COLUMNS) + "|"]  # fmt: skip
    for row in table.to_dict("records"):
        cells = []
        for column in VARIANCE_MARKDOWN_COLUMNS:
            value = row[column]
            if f"{column}_lo" in row:
                value = f"{value:.3g} [{row[column + '_lo']:.3g}, {row[column + '_hi']:.3g}]"
                if f"{column}_closed_form" in row:
                    value += f" (closed form {row[column + '_closed_form']:.3g})"
            elif isinstance(value, float):
                value = f"{value:.3f}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
