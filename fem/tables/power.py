"""`fem power`: how many pre-training seeds it takes to detect a difference of d on a row of
a built table, from the table's sd of the paired difference (columns `..._<A>_minus_<B>_sd`
of fem/tables/row_statistics.py and fem/tables/efficiency.py).

For each (row, comparison): the pairs the table has, the sd of the difference, the minimum
detectable difference with those pairs, and the smallest number of seeds n whose minimum
detectable difference (80% power, two-sided alpha 0.05, fem.statistics) is at most |d|. The
exact sign-flip test cannot reach p < 0.05 with fewer than 6 seeds (2 / 2^n), so its column
is max(n, 6).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fem.errors import ConfigError, DataError
from fem.recompute import row_name as row_label
from fem.statistics import MIN_SIGN_FLIP_SEEDS, minimum_detectable_difference, seeds_needed

MAX_SEEDS = 10_000


def _pairs(row: dict, base: str) -> int:
    """The pairs of comparison column `base`: its own `<A>_minus_<B>_pairs` (Table 3), else the row's."""
    for column, value in row.items():
        if column.endswith("_pairs") and (base == column[:-6] or base.endswith("_" + column[:-6])):
            return int(value)
    return int(row["pairs"])


def power_table(table: str | Path, difference: float, row: str | None = None, comparison: str | None = None
                ) -> pd.DataFrame:  # fmt: skip
    """One line per (row, comparison) of the CSV `table` (filtered by `row`: a task name or a
    row label; `comparison`: "A:B"): row, comparison, pairs, sd, mdd, seeds_t, seeds_sign_flip
    (None where even MAX_SEEDS is not enough, nan where the sd is unknown). ConfigError for a
    missing file, row or column, or a zero difference."""
    path = Path(table)
    if not path.is_file():
        raise DataError(f"{path} not found; expected a table CSV written by fem, e.g. results/table2.csv")
    if difference == 0 or math.isnan(difference):
        raise ConfigError(f"--difference {difference}: expected a nonzero difference, in the row's unit")
    frame = pd.read_csv(path)
    bases = [c[: -len("_sd")] for c in frame.columns if c.endswith("_sd") and "_minus_" in c]
    if comparison is not None:
        a, colon, b = comparison.partition(":")
        if not colon:
            raise ConfigError(f"--comparison {comparison!r}: expected A:B, e.g. fe:random_k")
        name = f"{a}_minus_{b}"
        bases = [base for base in bases if base == name or base.endswith("_" + name)]
        if not bases:
            raise DataError(f"{path}: no column {name}_sd (expected the sd of comparison {comparison})")
    if not bases:
        raise DataError(f"{path}: no '<A>_minus_<B>_sd' column; expected a table with comparisons (Tables 1-4)")
    records = frame.to_dict("records")
    if row is not None:
        records = [r for r in records if row in (str(r.get("task")), row_label(r))]
        if not records:
            labels = ", ".join(dict.fromkeys(row_label(r) for r in frame.to_dict("records")))
            raise DataError(f"{path}: no row {row!r} (a task or a row label: {labels})")
    lines = []
    for record in records:
        for base in bases:
            sd = float(record[base + "_sd"])
            if math.isnan(sd) and math.isnan(float(record.get(base, math.nan))):
                continue  # Table 3: this comparison belongs to another strategy's rows
            pairs = _pairs(record, base)
            needed = math.nan if math.isnan(sd) else seeds_needed(sd, difference, MAX_SEEDS) or math.inf
            lines.append({"row": row_label(record), "comparison": base, "unit": record.get("unit", ""),
                          "pairs": pairs, "sd": sd, "mdd": minimum_detectable_difference(sd, pairs),
                          "seeds_t": needed, "seeds_sign_flip": max(needed, MIN_SIGN_FLIP_SEEDS)})  # fmt: skip
    return pd.DataFrame(lines)


def _count(value: float) -> str:
    if math.isinf(value):
        return f"> {MAX_SEEDS}"
    return "sd unknown" if math.isnan(value) else str(int(value))


def format_power(lines: pd.DataFrame, difference: float) -> str:
    """The power table as aligned text, with what its columns mean."""
    header = (f"Pre-training seeds needed to detect a difference of {abs(difference):g} (in each row's unit) "
              "with 80% power, two-sided alpha 0.05:\nMDD(n) = (t_0.975,n-1 + t_0.80,n-1) * sd / sqrt(n), sd = the "
              "table's sd of the paired difference; seeds (t) = smallest n with MDD(n) <= d; the exact sign-flip "
              f"test reaches p < 0.05 only from {MIN_SIGN_FLIP_SEEDS} seeds (2/2^n).\n")  # fmt: skip
    shown = pd.DataFrame({
        "row": lines.row, "comparison": lines.comparison, "pairs": lines.pairs,
        "sd": [f"{v:.4g}" for v in lines.sd], "MDD now": [f"{v:.4g}" for v in lines.mdd],
        "seeds (t)": [_count(v) for v in lines.seeds_t],
        "seeds (sign-flip)": [_count(v) for v in lines.seeds_sign_flip],
    })  # fmt: skip
    return header + shown.to_string(index=False)
