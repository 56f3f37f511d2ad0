"""The table sub-commands of `fem` (score-table, table3, table4, table5) and `fem power`.

Each table command builds its table with fem.tables.build_table from its flags (the same
call `fem audit --verify` makes from the recorded flags), writes CSV and Markdown, and
provenance.json beside them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fem.provenance import table_provenance_path


def _provenance(args: argparse.Namespace, inputs: list, outputs: list, start: float) -> None:
    from fem.cli_args import record_provenance as write  # the record of flags, inputs and outputs

    write(table_provenance_path(args.csv), args, inputs, outputs, start)


def _comparisons(args: argparse.Namespace) -> list[tuple[str, str]]:
    from fem.comparisons import parse_comparisons

    return parse_comparisons(args.comparisons, args.strategies)


def cmd_score_table(args: argparse.Namespace) -> None:
    """Tables 1 and 2: tasks as rows, strategies as columns (fem.tables.glue_table)."""
    from fem.tables import build_table, pretrain_steps, write_table

    start = time.perf_counter()
    comparisons = _comparisons(args)  # a bad --comparisons stops here, before any file is read
    table = build_table("score-table", vars(args))
    steps = pretrain_steps(args.pretrain_metrics, args.strategies)
    write_table(table, args.csv, args.md, args.title, args.caption, args.strategies, comparisons, steps)
    print(Path(args.md).read_text())
    _provenance(args, args.metrics + (args.pretrain_metrics or []), [args.csv, args.md], start)


def cmd_table3(args: argparse.Namespace) -> None:
    from fem.efficiency import efficiency_markdown
    from fem.figures import plot_efficiency
    from fem.tables import build_table

    start = time.perf_counter()
    comparisons = _comparisons(args)
    table = build_table("table3", vars(args))
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    title = "Table 3: efficiency, score and validation loss along pre-training"
    Path(args.md).write_text(efficiency_markdown(table, title, args.caption, comparisons))
    plot_efficiency(table, args.task, args.figure)
    print(Path(args.md).read_text())
    inputs = args.metrics + args.train_logs + args.pretrain_metrics
    _provenance(args, inputs, [args.csv, args.md, args.figure], start)


def cmd_table4(args: argparse.Namespace) -> None:
    from fem.comparisons import table4_strategies
    from fem.segments_table import COMPARISONS, ROLES
    from fem.tables import build_table, pretrain_steps, score_markdown

    start = time.perf_counter()
    table = build_table("table4", vars(args))
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    steps = pretrain_steps(args.pretrain_metrics, table4_strategies(args.segments, args.default_segments))
    markdown = score_markdown(table, args.title, args.caption, ROLES, COMPARISONS, ("K", "task", "metric"), steps)
    Path(args.md).write_text(markdown)
    print(markdown)
    _provenance(args, args.metrics + args.pretrain_metrics, [args.csv, args.md], start)


def cmd_table5(args: argparse.Namespace) -> None:
    from fem.figures import plot_estimator_variance, plot_variance_vs_hamming
    from fem.tables import build_table
    from fem.variance_table import load_variance_results, variance_markdown

    start = time.perf_counter()
    table = build_table("table5", vars(args))
    results = load_variance_results(args.results)  # for the figures
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    title = "Table 5: gradient variance of fully-explored vs random masks"
    Path(args.md).write_text(variance_markdown(table, title, args.caption))
    plot_variance_vs_hamming(results, args.hamming_figure)
    plot_estimator_variance(results, args.estimator_figure)
    print(Path(args.md).read_text())
    outputs = [args.csv, args.md, args.hamming_figure, args.estimator_figure]
    _provenance(args, args.results, outputs, start)


def cmd_power(args: argparse.Namespace) -> None:
    from fem.power import format_power, power_table

    print(format_power(power_table(args.table, args.difference, args.row, args.comparison), args.difference))


COMPARISONS_HELP = "A:B pairs, A minus B (default: fe:random_k and fe:random when configured, others against random)"


def _table_parser(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A table command's parser with the flags every table command has: --csv, --md, --caption."""
    p = sub.add_parser(name, help=help, **kwargs)
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--caption", required=True)
    return p


def add_table_commands(sub) -> None:
    """The parsers of the table commands and `fem power`, on the `fem` sub-parsers `sub`."""
    p = _table_parser(sub, "score-table", "build a table of task scores (Tables 1, 2)", aliases=["table2"])
    p.add_argument("--title", default="Table 2: BERT pre-trained from scratch, GLUE and SQuAD dev")
    p.add_argument("--average-label", default="glue average", help="name of the row averaging the task scores")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--strategies", nargs="+", required=True)
    p.add_argument("--comparisons", nargs="*", default=None, help=COMPARISONS_HELP)
    p.add_argument("--average-exclude", nargs="*", default=["wnli"], help="tasks left out of the GLUE average")
    p.add_argument("--pretrain-metrics", nargs="+", default=None,
                   help="metrics.json of the pre-training runs: the intrinsic rows (Table 2)")  # fmt: skip
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_score_table)

    p = _table_parser(sub, "table3", "build results/table3.csv, .md and the efficiency figure")
    p.add_argument("--figure", required=True)
    p.add_argument("--task", required=True, help="the downstream task scored")
    p.add_argument("--strategies", nargs="+", required=True)
    p.add_argument("--comparisons", nargs="*", default=None, help=COMPARISONS_HELP)
    p.add_argument("--steps", nargs="+", type=int, required=True, help="checkpoint steps, the final one included")
    p.add_argument("--total-steps", type=int, required=True, help="pre-training steps (the final model's step)")
    p.add_argument("--train-logs", nargs="+", required=True, help="train_log.json of the pre-training runs")
    p.add_argument("--pretrain-metrics", nargs="+", required=True,
                   help="metrics.json of the pre-training runs (the loss's unigram baseline)")  # fmt: skip
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_table3)

    p = _table_parser(sub, "table4", "build results/table4.csv and .md: fe against random_k and random per K")
    p.add_argument("--title", default="Table 4: number of segments K")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--segments", nargs="+", type=int, required=True, help="the K values")
    p.add_argument("--default-segments", type=int, required=True, help="K of the plain fe and random_k runs")
    p.add_argument("--average-exclude", nargs="*", default=["wnli"], help="tasks left out of the GLUE average")
    p.add_argument("--pretrain-metrics", nargs="+", required=True, help="metrics.json of the pre-training runs")
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_table4)

    p = _table_parser(sub, "table5", "build results/table5.csv, .md and the two variance figures")
    p.add_argument("--hamming-figure", required=True)
    p.add_argument("--estimator-figure", required=True)
    p.add_argument("results", nargs="+", help="variance.json files of `fem variance`")
    p.set_defaults(handler=cmd_table5)

    p = sub.add_parser("power", help="pre-training seeds needed to detect a difference on a row of a built table")
    p.add_argument("table", help="a table CSV with comparison columns, e.g. results/table2.csv")
    p.add_argument("--difference", type=float, required=True, help="the difference d to detect, in the row's unit")
    p.add_argument("--row", default=None, help="a task (e.g. sst2) or row label (e.g. 'fe step 6'); default: all")
    p.add_argument("--comparison", default=None, help="A:B, e.g. fe:random_k; default: every comparison")
    p.set_defaults(handler=cmd_power)
