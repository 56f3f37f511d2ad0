"""The table sub-commands of `fem` (score-table, table3, table4, table5, table6) and `fem power`,
each parser right above its handler.

A table command parses its flags, calls fem.tables.build.write_table_files, which builds the
table (the same build_table call `fem audit --verify` makes from the recorded flags) and
writes its CSV, Markdown and figures, then writes provenance.json beside them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fem.cli_args import record_provenance
from fem.provenance import table_provenance_path

COMPARISONS_HELP = "A:B pairs, A minus B (default: fe:random_k and fe:random when configured, others against random)"


def _table_parser(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A table command's parser with the flags every table command has: --csv, --md, --caption."""
    p = sub.add_parser(name, help=help, **kwargs)
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--caption", required=True)
    return p


def _write_table(args: argparse.Namespace, command: str, inputs: list) -> None:
    """Build and write the table of `fem <command>` from the parsed flags, print its Markdown,
    and record provenance.json beside the CSV (`inputs`: the run files the flags name)."""
    from fem.tables.build import write_table_files

    start = time.perf_counter()
    outputs = write_table_files(command, vars(args))
    print(Path(args.md).read_text())
    record_provenance(table_provenance_path(args.csv), args, inputs, outputs, start)


def add_score_table(sub) -> None:
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


def cmd_score_table(args: argparse.Namespace) -> None:
    """Tables 1 and 2: tasks as rows, strategies as columns (fem.tables.scores.glue_table)."""
    _write_table(args, "score-table", args.metrics + (args.pretrain_metrics or []))


def add_table3(sub) -> None:
    p = _table_parser(sub, "table3", "build results/table3.csv, .md and the efficiency figure")
    p.add_argument("--figure", required=True)
    p.add_argument("--task", required=True, help="the downstream task scored")
    p.add_argument("--strategies", nargs="+", required=True)
    p.add_argument("--comparisons", nargs="*", default=None, help=COMPARISONS_HELP)
    p.add_argument("--steps", nargs="+", type=int, required=True, help="checkpoint steps, the final one included")
    p.add_argument("--total-steps", type=int, required=True, help="pre-training steps (the final model's step)")
    p.add_argument("--train-logs", nargs="+", required=True,
                   help="train_log.json of the pre-training runs, each beside its run's metrics.json")  # fmt: skip
    p.add_argument("--pretrain-metrics", nargs="+", required=True,
                   help="metrics.json of the pre-training runs (whose run each log is; the baseline)")  # fmt: skip
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_table3)


def cmd_table3(args: argparse.Namespace) -> None:
    """Table 3: efficiency along pre-training (fem.tables.efficiency)."""
    _write_table(args, "table3", args.metrics + args.train_logs + args.pretrain_metrics)


def add_table4(sub) -> None:
    p = _table_parser(sub, "table4", "build results/table4.csv and .md: fe against random_k and random per K")
    p.add_argument("--title", default="Table 4: number of segments K")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--segments", nargs="+", type=int, required=True, help="the K values")
    p.add_argument("--default-segments", type=int, required=True, help="K of the plain fe and random_k runs")
    p.add_argument("--average-exclude", nargs="*", default=["wnli"], help="tasks left out of the GLUE average")
    p.add_argument("--pretrain-metrics", nargs="+", required=True, help="metrics.json of the pre-training runs")
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_table4)


def cmd_table4(args: argparse.Namespace) -> None:
    """Table 4: the number of segments K (fem.tables.segments)."""
    _write_table(args, "table4", args.metrics + args.pretrain_metrics)


def add_table5(sub) -> None:
    p = _table_parser(sub, "table5", "build results/table5.csv, .md and the two variance figures")
    p.add_argument("--hamming-figure", required=True)
    p.add_argument("--estimator-figure", required=True)
    p.add_argument("results", nargs="+", help="variance.json files of `fem variance`")
    p.set_defaults(handler=cmd_table5)


def cmd_table5(args: argparse.Namespace) -> None:
    """Table 5: gradient variance (fem.tables.variance)."""
    _write_table(args, "table5", args.results)


def add_table6(sub) -> None:
    p = _table_parser(sub, "table6", "build results/table6.csv and .md: objectives, one row per run")
    p.add_argument("--title", default="Table 6: pre-training objectives at matched FLOPs per step")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="run names (fem.registry.run_label), e.g. random pmlm.fe")
    p.add_argument("--control", required=True, help="the run every other run is compared with")
    p.add_argument(
        "--comparisons", nargs="+", required=True, help="A:B pairs, A minus B: B the control or A's counterpart"
    )
    p.add_argument("--default-segments", type=int, required=True, help="K of runs named without -k<K>")
    p.add_argument("--average-exclude", nargs="*", default=["wnli"], help="tasks left out of the GLUE average")
    p.add_argument("--pretrain-metrics", nargs="+", required=True, help="metrics.json of the pre-training runs")
    p.add_argument("metrics", nargs="+", help="metrics.json files of fine-tuning runs")
    p.set_defaults(handler=cmd_table6)


def cmd_table6(args: argparse.Namespace) -> None:
    """Table 6: pre-training objectives (fem.tables.objectives)."""
    _write_table(args, "table6", args.metrics + args.pretrain_metrics)


def add_power(sub) -> None:
    p = sub.add_parser("power", help="pre-training seeds needed to detect a difference on a row of a built table")
    p.add_argument("table", help="a table CSV with comparison columns, e.g. results/table2.csv")
    p.add_argument("--difference", type=float, required=True, help="the difference d to detect, in the row's unit")
    p.add_argument("--row", default=None, help="a task (e.g. sst2) or row label (e.g. 'fe step 6'); default: all")
    p.add_argument("--comparison", default=None, help="A:B, e.g. fe:random_k; default: every comparison")
    p.set_defaults(handler=cmd_power)


def cmd_power(args: argparse.Namespace) -> None:
    """Pre-training seeds needed to detect a difference (fem.tables.power)."""
    from fem.tables.power import format_power, power_table

    print(format_power(power_table(args.table, args.difference, args.row, args.comparison), args.difference))


def add_curves_figure(sub) -> None:
    p = sub.add_parser("curves-figure", help="pre-training curves of a table's runs: validation and training loss")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--title", required=True)
    p.add_argument("--labels", nargs="+", required=True, help="one label per train log (its strategy or objective)")
    p.add_argument("--train-logs", nargs="+", required=True, help="train_log.json of the pre-training runs")
    p.set_defaults(handler=cmd_curves_figure)


def cmd_curves_figure(args: argparse.Namespace) -> None:
    """The curves of runs with the same label drawn as one line, their mean and range (fem.figures)."""
    import json

    from fem.errors import ConfigError
    from fem.figures import plot_pretrain_curves

    if len(args.labels) != len(args.train_logs):
        raise ConfigError(f"--labels has {len(args.labels)} values, --train-logs {len(args.train_logs)}: one each")
    start, runs = time.perf_counter(), {}
    for label, path in zip(args.labels, args.train_logs, strict=True):
        runs.setdefault(label, []).append(json.loads(Path(path).read_text()))
    plot_pretrain_curves(runs, args.title, args.out)
    print(f"wrote {args.out}: {len(runs)} lines from {len(args.train_logs)} runs")
    record_provenance(table_provenance_path(args.out), args, args.train_logs, [args.out], start)


def add_table_commands(sub) -> None:
    """The table commands, `fem curves-figure` and `fem power`, on the `fem` sub-parsers `sub`."""
    for add in (add_score_table, add_table3, add_table4, add_table5, add_table6, add_curves_figure, add_power):
        add(sub)
