"""Rendering shared by every table: number formats, Markdown table lines, and writing a
table's CSV and Markdown files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def number(value: float, unit: str) -> str:
    """A value in a row's unit: 3 decimals for nats, else 2."""
    return "nan" if pd.isna(value) else f"{value:.3f}" if unit.startswith("nats") else f"{value:.2f}"


def interval_cell(row: dict, name: str, sign: bool = False) -> str:
    """ "mean [lo, hi]" of the columns `name`, `name_lo`, `name_hi` (just the mean without an
    interval, with a single seed)."""
    unit = row["unit"]
    mean = number(row[name], unit)
    mean = f"+{mean}" if sign and row[name] > 0 else mean
    if pd.isna(row[f"{name}_lo"]):
        return mean
    return f"{mean} [{number(row[name + '_lo'], unit)}, {number(row[name + '_hi'], unit)}]"


def p_cell(value: float) -> str:
    """A p-value with 3 significant digits."""
    return "nan" if pd.isna(value) else f"{value:.3g}"


def markdown_lines(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the header, the separator, one line per row of cells."""
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|",
            *("| " + " | ".join(cells) + " |" for cells in rows)]  # fmt: skip


def write_csv_and_markdown(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, markdown: str) -> list[str]:
    """Write `table` as CSV (no index; its runs column names the files behind each row) and
    `markdown` beside it; return both paths, as the table's provenance records its outputs."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(md_path).write_text(markdown)
    return [str(csv_path), str(md_path)]
