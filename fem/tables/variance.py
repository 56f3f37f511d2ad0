"""Table 5: the gradient-variance analysis of `fem variance`, one row per analysed checkpoint.
A checkpoint's strategy, seed and step are those its variance.json records under "run"."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fem.tables.render import write_csv_and_markdown

TITLE = "Table 5: gradient variance of fully-explored vs random masks"


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


def write_variance_table(
    table: pd.DataFrame,
    results: list[dict],
    csv_path: str | Path,
    md_path: str | Path,
    caption: str,
    hamming_figure: str | Path,
    estimator_figure: str | Path,
) -> list[str]:
    """Write Table 5 as CSV and Markdown (variance_markdown) and its two figures from `results`
    (load_variance_results): covariance against Hamming distance, and the estimators'
    variance; return the four paths."""
    from fem.figures import plot_estimator_variance, plot_variance_vs_hamming  # matplotlib: only when drawing

    outputs = write_csv_and_markdown(table, csv_path, md_path, variance_markdown(table, TITLE, caption))
    plot_variance_vs_hamming(results, hamming_figure)
    plot_estimator_variance(results, estimator_figure)
    return [*outputs, str(hamming_figure), str(estimator_figure)]
