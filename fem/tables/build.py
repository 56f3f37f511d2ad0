"""A table from the flags of the `fem` command that builds it, the one place where a table
command's flags become the arguments of its library functions.

The table commands (fem/tables/cli.py) call write_table_files with their parsed flags;
`fem audit --verify` (fem/recompute.py) calls build_table with the flags the table's
provenance.json recorded, and compares the result with the CSV cell by cell. Both therefore
build each table through the same call.
"""

from __future__ import annotations

import pandas as pd

from fem.comparisons import parse_comparisons, table4_strategies
from fem.tables.efficiency import efficiency_table, validation_losses, write_efficiency_table
from fem.tables.intrinsic import load_pretrain_runs
from fem.tables.objectives import load_objective_runs, objectives_table, write_objectives_table
from fem.tables.scores import glue_table, load_runs, pretrain_steps, write_score_table
from fem.tables.segments import segments_table, write_segments_table
from fem.tables.variance import load_variance_results, variance_table, write_variance_table

SCORE_COMMANDS = ("score-table", "table2")  # table2: the alias of score-table
TABLE_COMMANDS = (*SCORE_COMMANDS, "table3", "table4", "table5", "table6")


def build_table(command: str, parameters: dict) -> pd.DataFrame:
    """The table `fem <command>` builds from its flags, `parameters` (as recorded in the table's
    provenance.json): `score-table` (Tables 1, 2), `table3`, `table4`, `table5` or `table6`. KeyError for
    a missing parameter, ValueError for another command. Records made before comparisons and
    pre-training metrics existed rebuild with the default comparisons and no intrinsic rows."""
    p = parameters
    default_segments = p.get("default_segments")  # Table 4 names runs of a non-default K "fe-k2"
    if command == "table6":  # its runs are named by objective too (fem.registry.run_label)
        comparisons = parse_comparisons(p["comparisons"], p["runs"])
        pretrain = load_objective_runs(p["pretrain_metrics"], default_segments)
        return objectives_table(load_runs(p["metrics"]), pretrain, p["tasks"], p["runs"], p["control"], comparisons,
                                tuple(p["average_exclude"]))  # fmt: skip
    pretrain = load_pretrain_runs(p["pretrain_metrics"], default_segments) if p.get("pretrain_metrics") else None
    if command in SCORE_COMMANDS:
        comparisons = parse_comparisons(p.get("comparisons"), p["strategies"])
        return glue_table(load_runs(p["metrics"]), p["tasks"], p["strategies"], comparisons,
                          tuple(p["average_exclude"]), average_label=p["average_label"], pretrain=pretrain)  # fmt: skip
    if command == "table3":
        comparisons = parse_comparisons(p.get("comparisons"), p["strategies"])
        return efficiency_table(load_runs(p["metrics"]), validation_losses(p["train_logs"], pretrain), p["task"],
                                p["strategies"], p["steps"], p["total_steps"], comparisons, pretrain)  # fmt: skip
    if command == "table4":
        return segments_table(load_runs(p["metrics"]), pretrain, p["tasks"], p["segments"], default_segments,
                              tuple(p["average_exclude"]))  # fmt: skip
    if command == "table5":
        return variance_table(load_variance_results(p["results"]))
    raise ValueError(f"`fem {command}` builds no table (table commands: {', '.join(TABLE_COMMANDS)})")


def write_table_files(command: str, parameters: dict) -> list[str]:
    """Build the table of `fem <command>` from its flags (build_table) and write its files:
    the CSV and Markdown (--csv, --md; with --caption and, for Tables 1 and 2, --title), and
    the figures of Tables 3 and 5. Returns the paths written. A bad --comparisons stops before
    any run file is read."""
    p = parameters
    if command in SCORE_COMMANDS:
        comparisons = parse_comparisons(p.get("comparisons"), p["strategies"])
        table = build_table(command, p)
        steps = pretrain_steps(p["pretrain_metrics"], p["strategies"])
        return write_score_table(table, p["csv"], p["md"], p["title"], p["caption"], p["strategies"], comparisons,
                                 steps)  # fmt: skip
    if command == "table3":
        comparisons = parse_comparisons(p.get("comparisons"), p["strategies"])
        table = build_table(command, p)
        return write_efficiency_table(table, p["csv"], p["md"], p["caption"], comparisons, p["task"], p["figure"])
    if command == "table4":
        table = build_table(command, p)
        strategies = table4_strategies(p["segments"], p["default_segments"])
        steps = pretrain_steps(p["pretrain_metrics"], strategies, p["default_segments"])
        return write_segments_table(table, p["csv"], p["md"], p["title"], p["caption"], steps)
    if command == "table6":
        return write_objectives_table(build_table(command, p), p["csv"], p["md"], p["title"], p["caption"])
    if command == "table5":
        table = build_table(command, p)
        results = load_variance_results(p["results"])  # for the figures
        return write_variance_table(table, results, p["csv"], p["md"], p["caption"], p["hamming_figure"],
                                    p["estimator_figure"])  # fmt: skip
    raise ValueError(f"`fem {command}` writes no table (table commands: {', '.join(TABLE_COMMANDS)})")
