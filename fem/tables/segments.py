"""Table 4, the number of segments K: for every K, fe with K segments against its control
random_k with the same K (the same sequences, rows, per-copy masking ratio and predictions
per step; only the overlap of the K masks differs) and against random.

Runs are named "fe-k<K>" and "random_k-k<K>" (fem.registry.strategy_label; a pre-training run
by the strategy and K its metrics.json records), except at the default K (pretrain.segments),
whose runs are Table 2's plain "fe" and "random_k"; "random" does not depend on K. One row per
(K, task row), the rows of a score table (fem/tables/scores.py, intrinsic rows included), with
the strategy columns named by role (`fe`, `random_k`, `random`: the runs of that row's K) and
the comparisons fe:random_k (mask overlap alone at that K) and fe:random. Per role, the
per-copy masking ratio (masked / maskable tokens of a row: about 1/K for fe and random_k, p for
random) and the predictions per step, means over the roles' pre-training runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fem.comparisons import DEFAULTS, strategy_names
from fem.errors import DataError
from fem.tables.render import write_csv_and_markdown
from fem.tables.row_statistics import row_columns
from fem.tables.scores import check_runs, score_markdown, score_rows

ROLES = ["random", "random_k", "fe"]  # the keys of comparisons.strategy_names
COMPARISONS = list(DEFAULTS)
STEP_COLUMNS = ("masking_ratio_per_row", "predictions_per_step")


def _as_roles(frame: pd.DataFrame, role_of: dict[str, str]) -> pd.DataFrame:
    """The rows of `frame` whose strategy is a key of `role_of`, the strategy renamed to its role."""
    of_k = frame[frame.strategy.isin(list(role_of))]
    return of_k.assign(strategy=of_k.strategy.map(role_of))


def segments_table(runs: pd.DataFrame, pretrain: pd.DataFrame | None, tasks: list[str], segments: list[int],
                   default_segments: int, average_exclude: tuple[str, ...] = ("wnli",)) -> pd.DataFrame:  # fmt: skip
    """Table 4 (module docstring). Columns: K, task, metric, per role `<role>_masking_ratio_per_row`
    and `<role>_predictions_per_step`, then those of fem/tables/row_statistics.py, pretrain_seeds,
    finetune_seeds, runs. `pretrain` (intrinsic.load_pretrain_runs) is required."""
    if pretrain is None:
        raise DataError("Table 4 needs the pre-training metrics.json files (--pretrain-metrics)")
    rows = []
    for k in segments:
        names = strategy_names(k, default_segments)
        check_runs(runs, tasks, list(names.values()))
        role_of = {name: role for role, name in names.items()}
        runs_k = _as_roles(runs, role_of)
        pretrain_k = _as_roles(pretrain, role_of)
        absent = [names[r] for r in ROLES if r not in set(pretrain_k.strategy)]
        if absent:
            raise DataError(f"Table 4: no pre-training metrics.json of {absent} among the --pretrain-metrics")
        step = {f"{role}_{column}": round(float(pretrain_k[pretrain_k.strategy == role][column].mean()), 4)
                for role in ROLES for column in STEP_COLUMNS}  # fmt: skip
        for spec, of_row, counted in score_rows(runs_k, tasks, ROLES, average_exclude, pretrain=pretrain_k):
            row = {"K": k, "task": spec.task, "metric": spec.metric} | step
            row |= row_columns(of_row, spec, ROLES, COMPARISONS)
            row.update(pretrain_seeds=counted.pretrain_seed.nunique(), finetune_seeds=counted.finetune_seed.nunique(),
                       runs=";".join(sorted(set(of_row.source) - {""})))  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def write_segments_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str, caption: str,
                         steps: pd.DataFrame | None) -> list[str]:  # fmt: skip
    """Write Table 4 as CSV and Markdown (scores.score_markdown with the roles as strategies
    and `steps`, intrinsic.step_summary of its strategies); return the two paths."""
    markdown = score_markdown(table, title, caption, ROLES, COMPARISONS, ("K", "task", "metric"), steps)
    return write_csv_and_markdown(table, csv_path, md_path, markdown)
