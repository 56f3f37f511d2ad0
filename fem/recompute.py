"""Recomputing a results table for `fem audit --verify`.

Re-hashing files proves that they did not change since their provenance was written, not
that the table's numbers follow from its runs: a CSV edited together with the sha256 in its
provenance passes every hash. So the table is built again with the function that built it
(fem.tables.build.build_table: Tables 1 and 2 through `score-table`, Tables 3, 4 and 5) from the
parameters its provenance.json recorded, which name the run files read (metrics.json,
train_log.json, variance.json), and compared with the CSV cell by cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

TABLE_COMMANDS = ("score-table", "table2", "table3", "table4", "table5", "table6")  # fem.tables.build.TABLE_COMMANDS


def row_name(row: dict[str, str]) -> str:
    """How the audit names a table row: "checkpoint fe final" (Table 5), "fe step 3"
    (Table 3), "K=2 sst2 (accuracy)" (Table 4), "run pmlm.fe" (Table 6), "sst2 (accuracy)"
    (Tables 1 and 2)."""
    if "run" in row and "objective" in row:
        return f"run {row['run']}"
    if "checkpoint" in row:
        return f"checkpoint {row['checkpoint']}"
    if "step" in row and "strategy" in row:
        return f"{row['strategy']} step {row['step']}"
    label = f"{row.get('task', '?')} ({row.get('metric', '?')})"
    return f"K={row['K']} {label}" if "K" in row else label


def _same(text: str, expected: str) -> bool:
    """Two CSV cells agree: equal text, or equal numbers (up to float noise), or both NaN."""
    if text == expected:
        return True
    try:
        a, b = float(text), float(expected)
    except ValueError:
        return False
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def table_command(record: dict) -> str | None:
    """The fem sub-command a table's provenance recorded (argv[1]), or None."""
    command = record.get("command")
    return command[1] if isinstance(command, list) and len(command) > 1 else None


def table_differences(table: str | Path, command: str, parameters: dict) -> list[str]:
    """Each way the CSV `table` differs from the table `fem <command>` builds from
    `parameters` (its recorded flags): columns, row count, then one line per differing cell
    naming its row and column. Raises (KeyError, ValueError, OSError) when the table cannot
    be rebuilt from them."""
    from fem.tables.build import build_table  # pandas: only when verifying

    rebuilt = build_table(command, parameters)
    expected = list(csv.DictReader(io.StringIO(rebuilt.to_csv(index=False))))
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        actual, columns = list(reader), reader.fieldnames or []
    differences = []
    if columns != list(rebuilt.columns):
        differences.append(f"columns {columns} differ from the recomputed {list(rebuilt.columns)}")
    if len(actual) != len(expected):
        differences.append(f"{len(actual)} rows, recomputed {len(expected)}")
    for want, have in zip(expected, actual, strict=False):
        for column, value in want.items():
            if column in have and not _same(have[column], value):
                differences.append(
                    f"row {row_name(want)}, column {column}: the table has {have[column]!r}, "
                    f"recomputed from its runs {value!r}"
                )
    return differences


def recompute_problems(table: str, record_path: str, record: dict) -> tuple[list[dict], list[str]]:
    """(problems, notes) of recomputing `table` from its provenance `record` (at
    `record_path`): one problem per difference, or one saying why it cannot be rebuilt."""
    command = table_command(record)
    if command not in TABLE_COMMANDS:
        return [], [f"{table}: `fem {command}` is not a table command fem can rebuild; numbers not recomputed"]
    how = f"`fem {command}` with the parameters in {record_path}"
    try:
        differences = table_differences(table, command, record.get("parameters") or {})
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as err:
        differences = [f"cannot be rebuilt ({type(err).__name__}: {err})"]
    problems = [
        {"file": table, "kind": "recomputed", "algorithm": None, "expected": None, "actual": None,
         "record": record_path, "message": f"RECOMPUTED {table}: {difference} ({how})"}
        for difference in differences
    ]  # fmt: skip
    return problems, [] if problems else [f"{table}: every number recomputed from its runs (`fem {command}`)"]
