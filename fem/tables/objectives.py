"""Table 6, objectives: one row per pre-training run of objectives.runs (fem/objective_settings.py),
each a run name of fem.registry.run_label ("random", "pmlm.block", "mpnet.fe", "random.decay").

A row holds, per measure (each fine-tuning task, the GLUE average, and the validation MLM loss and
masked-token accuracy of the pre-training runs' metrics.json, which score every objective's
encoder as a plain masked LM), the statistics of Table 2 (fem/tables/row_statistics.py, computed by
the same calls through fem/tables/scores.py score_rows and row_columns): the mean over
pre-training seeds with its sd and 95% interval, the trivial baseline, whether the interval beats
it, and the paired difference against the control (`<measure>_minus_control...`) and, for a
fully-explored variant, against its non-fe counterpart (`<measure>_minus_counterpart...`; which
runs those are: the `control` and `counterpart` columns). Then what one step of the run is (model
FLOPs and their ratio to the plain-MLM step, tokens, rows, distinct sequences, predictions) and
its wall seconds, means over its runs; the pairs, seeds, a note when the seeds cannot reach
significance, and the files behind the row (its runs and those it is compared with).

A pre-training run's name is built from what its metrics.json records (objective, strategy,
K, mask_ratio_schedule), a fine-tuning run's is its `strategy` label, never a path.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fem.comparisons import comparison_name
from fem.errors import DataError
from fem.registry import parse_run_label, parse_strategy_label, run_label
from fem.statistics import MIN_SIGN_FLIP_SEEDS, smallest_sign_flip_p
from fem.tables.intrinsic import ACCURACY, LOSS, load_pretrain_runs
from fem.tables.render import interval_cell, markdown_lines, number, p_cell, write_csv_and_markdown
from fem.tables.row_statistics import COMPARISON_SUFFIXES, STRATEGY_SUFFIXES, RowSpec, row_columns
from fem.tables.scores import score_rows

ROLES = ("control", "counterpart")
# What one step of a run is (metrics.json of fem pretrain), in the order of the columns and the Markdown.
STEP_COLUMNS = {
    "flops_per_step": "model FLOPs / step",
    "flops_ratio_to_mlm": "ratio to MLM step",
    "tokens_per_step": "tokens / step",
    "rows_per_step": "rows / step",
    "sequences_per_step": "sequences / step",
    "predictions_per_step": "predictions / step",
    "wall_seconds": "wall s",
}
# metrics.json keys read besides intrinsic.load_pretrain_runs's (which has the other STEP_COLUMNS)
EXTRA_KEYS = ("objective", "mask_ratio_schedule", "flops_ratio_to_mlm", "tokens_per_step", "wall_seconds")
INTRINSIC_MEASURES = {(LOSS.task, LOSS.metric): "validation_mlm_loss",
                      (ACCURACY.task, ACCURACY.metric): "validation_masked_accuracy"}  # fmt: skip


def load_objective_runs(files: list[str | Path], default_segments: int) -> pd.DataFrame:
    """intrinsic.load_pretrain_runs with the objective, the schedule and STEP_COLUMNS required,
    each run named by registry.run_label (the `.decay` suffix when it had a schedule)."""
    runs = load_pretrain_runs(files, default_segments, EXTRA_KEYS)
    if runs.empty:
        return runs
    names = [
        run_label(objective, parse_strategy_label(name)[0], k, default_segments, schedule is not None)
        for objective, name, k, schedule in zip(runs.objective, runs.strategy, runs.segments, runs.mask_ratio_schedule,
                                                strict=True)
    ]  # fmt: skip
    return runs.assign(strategy=names)


def measure_name(spec: RowSpec) -> str:
    """A score row's name as a column prefix: the task, glue_average, validation_mlm_loss, ..."""
    return INTRINSIC_MEASURES.get((spec.task, spec.metric), spec.task.replace(" ", "_"))


def run_roles(names: list[str], control: str, comparisons: list[tuple[str, str]]) -> dict[str, dict[str, str | None]]:
    """Per run, the run it is compared with as control and as counterpart (None: none). A
    DataError for a comparison whose first run is not in `names`, or two counterparts of one run."""
    roles: dict[str, dict[str, str | None]] = {name: dict.fromkeys(ROLES) for name in names}
    for a, b in comparisons:
        role = "control" if b == control else "counterpart"
        if a not in roles or roles[a][role] is not None:
            raise DataError(f"comparison {a}:{b}: expected one control and at most one counterpart per run of {names}")
        roles[a][role] = b
    return roles


def measure_columns(measure: str, wide: dict, name: str, others: dict[str, str | None]) -> dict:
    """The columns of one measure in run `name`'s row, from the Table 2 row `wide` (row_columns)."""
    columns = {measure: wide[name]} | {f"{measure}_{s}": wide[f"{name}_{s}"] for s in STRATEGY_SUFFIXES}
    columns[f"{measure}_trivial"] = wide["trivial"]
    for role, other in others.items():
        source = comparison_name(name, other) if other else None
        for suffix in ("", *(f"_{s}" for s in COMPARISON_SUFFIXES)):
            columns[f"{measure}_minus_{role}{suffix}"] = wide[source + suffix] if source else math.nan
    return columns


def significance(pairs: int, compared: bool) -> str:
    """What the seeds allow, in words ("" when the sign-flip test can reach p < 0.05)."""
    if not compared or pairs >= MIN_SIGN_FLIP_SEEDS:
        return ""
    return (f"{pairs} pairs: the sign-flip p cannot go below {smallest_sign_flip_p(pairs):.3g}, so no difference "
            f"can reach p < 0.05 (needs {MIN_SIGN_FLIP_SEEDS} seeds)")  # fmt: skip


def objectives_table(
    runs: pd.DataFrame, pretrain: pd.DataFrame, tasks: list[str], names: list[str], control: str,
    comparisons: list[tuple[str, str]], average_exclude: tuple[str, ...] = ("wnli",),
) -> pd.DataFrame:  # fmt: skip
    """Table 6 (module docstring): `runs` (scores.load_runs) of the fine-tuning, `pretrain`
    (load_objective_runs) of the pre-training of the runs `names`."""
    if control not in names:
        raise DataError(f"the control {control!r} is not among the runs {names}")
    roles = run_roles(names, control, comparisons)
    measures = [(measure_name(spec), row_columns(of_row, spec, names, comparisons))
                for spec, of_row, _ in score_rows(runs, tasks, names, average_exclude, pretrain=pretrain)]  # fmt: skip
    pairs = min(wide["pairs"] for _, wide in measures)
    rows = []
    for name in names:
        run = parse_run_label(name)
        own = pretrain[pretrain.strategy == name]
        row = {"run": name, "objective": run.objective, "strategy": run.strategy, "decay": run.decay}
        row |= {role: other or "" for role, other in roles[name].items()}  # "": none
        row |= {column: round(float(own[column].astype(float).mean()), 4) for column in STEP_COLUMNS}
        for measure, wide in measures:
            row |= measure_columns(measure, wide, name, roles[name])
        involved = {name, *(other for other in roles[name].values() if other)}
        files = set(runs[runs.strategy.isin(involved)].source) | set(pretrain[pretrain.strategy.isin(involved)].source)
        row.update(pairs=pairs, pretrain_seeds=own.pretrain_seed.nunique(),
                   finetune_seeds=runs[runs.strategy == name].finetune_seed.nunique(),
                   significance=significance(pairs, any(roles[name].values())),
                   runs=";".join(sorted(files)))  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _unit(measure: str) -> str:
    return LOSS.unit if measure == "validation_mlm_loss" else "score x 100"


def measures_of(table: pd.DataFrame) -> list[str]:
    """The measures of a Table 6 frame, in column order (those with a `_trivial` column)."""
    return [c for c in table.columns if f"{c}_trivial" in table.columns]


def objectives_markdown(table: pd.DataFrame, title: str, caption: str) -> str:
    """Table 6 in Markdown: per run its measures as "mean [lo, hi]" and its step; the trivial
    baselines; the differences against the control and counterpart; what the seeds allow."""
    measures, records = measures_of(table), table.to_dict("records")
    main = [[r["run"]] + [interval_cell(r | {"unit": _unit(m)}, m) for m in measures]
            + [", ".join(m for m in measures if r[f"{m}_above_trivial"]) or "none"]
            + [f"{r['flops_per_step']:.3g}", f"{r['flops_ratio_to_mlm']:.3f}"]
            + [f"{r[c]:g}" for c in ("tokens_per_step", "rows_per_step", "sequences_per_step")]
            + [f"{r['predictions_per_step']:.1f}", f"{r['wall_seconds']:.0f}"] for r in records]  # fmt: skip
    trivial = ", ".join(f"{m} {number(records[0][f'{m}_trivial'], _unit(m))}" for m in measures)
    parts = [f"## {title}", "", caption, ""]
    parts += markdown_lines(["run", *measures, "interval beyond trivial", *STEP_COLUMNS.values()], main)
    parts += ["", f"Trivial baselines: {trivial}.", "", "Differences over pre-training seeds (paired by seed):", ""]
    differences = [
        [r["run"], f"{role} {r[role]}", m, interval_cell(_difference(r, f"{m}_minus_{role}", _unit(m)), "d", sign=True),
         number(r[f"{m}_minus_{role}_sd"], _unit(m)), number(r[f"{m}_minus_{role}_mdd"], _unit(m)),
         p_cell(r[f"{m}_minus_{role}_p_sign"]), p_cell(r[f"{m}_minus_{role}_p_t"]), str(r["pairs"])]
        for r in records for role in ROLES if isinstance(r[role], str) and r[role] for m in measures
    ]  # fmt: skip
    parts += markdown_lines(["run", "against", "measure", "difference [95% interval]", "sd of difference",
                             "MDD (80% power)", "p sign-flip", "p paired t", "pairs"], differences)  # fmt: skip
    notes = sorted({r["significance"] for r in records if isinstance(r["significance"], str) and r["significance"]})
    parts += ["", *(f"Significance: {note}." for note in notes)]
    return "\n".join(parts).rstrip() + "\n"


def _difference(row: dict, base: str, unit: str) -> dict:
    return {"unit": unit, "d": row[base], "d_lo": row[f"{base}_lo"], "d_hi": row[f"{base}_hi"]}


def write_objectives_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str,
                           caption: str) -> list[str]:  # fmt: skip
    """Write Table 6 as CSV and Markdown (objectives_markdown); return the two paths."""
    return write_csv_and_markdown(table, csv_path, md_path, objectives_markdown(table, title, caption))
