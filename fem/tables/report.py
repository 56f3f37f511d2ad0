"""results/report.md: every table with its caption, the figures, and per table the command
that rebuilds it (Snakemake and DVC)."""

from __future__ import annotations

import os
from pathlib import Path

# Figures shown under each table (by file name).
FIGURES_OF = {
    "table2": ("pretrain_curves_scratch.png",),
    "table3": ("efficiency.png", "pretrain_curves_scratch.png"),  # Tables 2 and 3 share their pre-training runs
    "table5": ("variance_vs_hamming.png", "estimator_variance.png"),
    "table6": ("pretrain_curves_objectives.png",),
}


def write_report(out: str | Path, tables: list[str | Path], figures: list[str | Path]) -> None:
    """Concatenate the tables' Markdown (in the order given), each followed by its figures
    (linked relative to `out`) and the commands that rebuild it."""
    out = Path(out)
    by_name = {Path(f).name: Path(f) for f in figures}
    parts = ["# fem results report", "",
             "Every number below is rebuilt by the command under its table; `fem audit results/<table>.csv` "
             "shows the files, code commit, config and seeds behind each one.", ""]  # fmt: skip
    for table in map(Path, tables):
        name = table.stem
        parts += [table.read_text().rstrip(), ""]
        for figure_name in FIGURES_OF.get(name, ()):
            if figure_name in by_name:
                link = os.path.relpath(by_name[figure_name], out.parent)
                parts += [f"![{figure_name}]({link})", ""]
        parts += [f"Rebuild: `snakemake results/{name}.csv` or `dvc repro {name}`.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"wrote {out}: {len(tables)} tables, {len(figures)} figures")
