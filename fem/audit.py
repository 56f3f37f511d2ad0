"""`fem audit`: the chain of evidence behind every number of a results table (DESIGN §8).

A table CSV (fem/tables/) names, per row, the fine-tuning `metrics.json` files it came from
(the `runs` column); `<table>.provenance.json` beside it records the table job. Every job
writes a provenance.json (fem/provenance.py) listing its input and output files with sha256.
The chain is found generically, one step at a time: for each input file of a record, the
record that produced it is the provenance.json in the nearest folder above the file whose
"outputs" list that file. Records are loaded once and every record is visited once.

`audit` builds the report (a plain dict, written as JSON by `--json`); fem/audit_text.py
renders it as indented text. With `verify=True` (fem/verification.py) every file listed in every
record of the chain is hashed again and compared with its recorded sha256, every file
recorded in dvc.lock with its md5, the code each job ran with the audited checkout's, output
folders are searched for files no record lists, and the table is recomputed from its runs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from fem.errors import DataError
from fem.provenance import table_provenance_path
from fem.recompute import row_name
from fem.verification import PROVENANCE, path_key, verify_report

SKIPPED_COLUMNS = ("task", "metric", "runs")
SHORT_HASH = 12


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{path} not found; expected {what}") from err
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path} ({err}); expected {what}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {what} (a JSON object), got {type(data).__name__}")
    return data


class ProvenanceGraph:
    """The provenance records reached so far, each loaded once, with the record that
    produced each of their input files."""

    def __init__(self) -> None:
        self.records: dict[str, dict] = {}  # provenance path -> its content
        self.outputs: dict[str, set[str]] = {}  # provenance path -> keys of its output files
        self.upstream: dict[str, list[str]] = {}  # provenance path -> producers of its inputs, in input order
        self.producers: dict[str, dict[str, str | None]] = {}  # provenance path -> {input file: producer}

    def load(self, path: str) -> dict:
        if path not in self.records:
            record = _read_json(Path(path), "a provenance record written by fem/provenance.py")
            for field in ("inputs", "outputs"):
                if not isinstance(record.get(field, {}), dict):
                    raise DataError(f"{path}: '{field}' must map file paths to sha256")
            self.records[path] = record
            self.outputs[path] = {path_key(file) for file in record.get("outputs", {})}
        return self.records[path]

    def producer(self, file: str) -> str | None:
        """The provenance.json in the nearest folder above `file` that lists it among its
        outputs, or None (a source file: nothing recorded producing it)."""
        key = path_key(file)
        for folder in Path(file).parents:
            candidate = folder / PROVENANCE
            if candidate.is_file():
                path = str(candidate)
                self.load(path)
                if key in self.outputs[path]:
                    return path
        return None

    def walk(self, start: str) -> list[str]:
        """Every record reachable from `start` through the producers of inputs, `start` first
        (depth first, in input order), each once."""
        order: list[str] = []
        pending = [start]
        while pending:
            path = pending.pop()
            if path in order:
                continue
            order.append(path)
            if path not in self.upstream:
                self._link(path)
            pending.extend(reversed([p for p in self.upstream[path] if p not in order]))
        return order

    def _link(self, path: str) -> None:
        record = self.load(path)
        producers: dict[str, str | None] = {}
        upstream: list[str] = []
        for file in record.get("inputs", {}):
            producer = self.producer(file)
            producers[file] = producer if producer != path else None
            if producers[file] and producers[file] not in upstream:
                upstream.append(producers[file])
        self.producers[path] = producers
        self.upstream[path] = upstream


def _read_table(table: Path) -> list[dict[str, str]]:
    if not table.is_file():
        raise DataError(f"table {table} not found; expected a results table CSV written by fem/tables/")
    with open(table, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames or []
    if "runs" not in columns:
        raise DataError(
            f"table {table} has no 'runs' column (columns: {', '.join(columns) or 'none'}); expected a table "
            "written by fem/tables/, whose 'runs' column names the metrics.json files of each row"
        )
    return rows


def _number(text: str) -> float | int | None:
    """A table cell as a number, None when it is not one (NaN becomes None: strict JSON)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    return int(value) if text.strip().lstrip("-").isdigit() else value


def _row_runs(table: Path, rows: list[dict[str, str]], parameters: dict) -> list[dict]:
    """Per row: its runs and, for a row without runs (the GLUE average), the task rows above
    it that it is derived from (those not in the table job's `average_exclude`)."""
    excluded = set(parameters.get("average_exclude") or [])
    result = []
    for index, row in enumerate(rows):
        runs = [path for path in (row.get("runs") or "").split(";") if path]
        derived_from = None
        if not runs:
            above = [r for r in rows[:index] if r.get("runs") and r.get("task") not in excluded]
            derived_from = [row_name(r) for r in above]
            runs = [path for r in above for path in r["runs"].split(";") if path]
        for path in runs:
            if not Path(path).is_file():
                raise DataError(
                    f"table {table} row {row_name(row)}: run {path} not found; expected the metrics.json of a "
                    "fine-tuning run (paths are relative to the folder where snakemake ran: run the audit there)"
                )
        result.append({"row": row, "runs": runs, "derived_from": derived_from})
    return result


def _column_runs(
    column: str, runs: list[str], strategy_of: dict[str, str | None], strategies: list[str], baselines: set[str]
) -> list[str]:
    """The runs a number column is computed from: `<s>` and `<s>_<statistic>` (std, lo, hi)
    from the runs of strategy s; `<a>_minus_<b>` and its statistics from those of a and b;
    `p_<s>` (older tables) from those of s and the baseline; any other column (seed counts,
    pairs, trivial) from all runs of the row. Runs of unknown strategy count for every
    column, and so do all runs of the row when none has a wanted strategy (Table 4 names its
    columns by role: `fe` holds the runs of fe-k<K>)."""
    wanted: set[str] | None = None
    pairs = [(a, b) for a in strategies for b in strategies if f"{a}_minus_{b}" in column]
    if column in strategies:
        wanted = {column}
    elif pairs:
        wanted = set(max(pairs, key=lambda pair: len(pair[0]) + len(pair[1])))  # fe_minus_random_k, not ..._random
    elif "_minus_" in column:
        wanted = set(column.split("_minus_", 1))
    elif column.startswith("p_") and column[2:] in strategies:
        wanted = {column[2:], *baselines}
    elif any(column.startswith(f"{s}_") for s in strategies):
        wanted = {max((s for s in strategies if column.startswith(f"{s}_")), key=len)}
    if wanted is None:
        return list(runs)
    chosen = [run for run in runs if strategy_of.get(run) is None or strategy_of[run] in wanted]
    return chosen or list(runs)


def _dirty_reason(record: dict) -> str | None:
    git = record.get("git") or {}
    if not git.get("commit"):
        return "no git commit recorded"
    if git.get("dirty") is True:
        return f"work tree of {str(git['commit'])[:SHORT_HASH]} was dirty"
    if git.get("dirty") is None:
        return f"work tree state of {str(git['commit'])[:SHORT_HASH]} unknown"
    return None


def _record_summary(graph: ProvenanceGraph, path: str) -> dict:
    record = graph.records[path]
    producers = graph.producers.get(path, {})
    return {
        "command": record.get("command"),
        "code": record.get("code"),
        "git": record.get("git"),
        "parameters": record.get("parameters", {}),
        "inputs": {
            file: {"sha256": digest, "producer": producers.get(file)}
            for file, digest in record.get("inputs", {}).items()
        },
        "outputs": dict(record.get("outputs", {})),
        "kept": dict(record.get("kept", {})),
        "sources": record.get("sources"),
        "upstream": list(graph.upstream.get(path, [])),
        "wall_seconds": record.get("wall_seconds"),
        "python": record.get("python"),
        "platform": record.get("platform"),
        "device": record.get("device"),
        "packages": record.get("packages", {}),
    }


def audit(
    table: str | Path, dvc_lock: str | Path | None = None, verify: bool = False, allow_dirty: bool = False
) -> dict:
    """The evidence report of `table` (see the module docstring for how the chain is found).

    Raises ConfigError for a missing table, table provenance, runs column or run file, and
    when a record of the chain is not a clean git commit (unless `allow_dirty`). `dvc_lock`
    None means `dvc.lock` when that file exists; a given path must exist.
    """
    table = Path(table)
    rows = _read_table(table)
    table_provenance = table_provenance_path(table)
    if not table_provenance.is_file():
        raise DataError(f"provenance of table {table} not found; expected {table_provenance} (written by fem)")
    if dvc_lock is None:
        dvc_lock = "dvc.lock" if Path("dvc.lock").is_file() else None
    elif not Path(dvc_lock).is_file():
        raise DataError(f"dvc lock file {dvc_lock} not found; expected the dvc.lock written by `dvc repro`")

    graph = ProvenanceGraph()
    table_record = graph.load(str(table_provenance))
    parameters = table_record.get("parameters") or {}
    columns = list(rows[0]) if rows else []
    strategies = list(parameters.get("strategies") or [c[: -len("_std")] for c in columns if c.endswith("_std")])

    runs_of_rows = _row_runs(table, rows, parameters)
    runs: dict[str, dict] = {}
    for path in dict.fromkeys(run for entry in runs_of_rows for run in entry["runs"]):
        metrics = _read_json(Path(path), "the metrics.json of a fine-tuning run")
        labels = metrics.get("run") or {}
        producer = graph.producer(path)
        if producer is None:
            raise DataError(
                f"no provenance.json in the folders above {path} lists it among its outputs; "
                "expected the provenance.json of the fine-tuning job beside it"
            )
        runs[path] = {
            "task": metrics.get("task"),
            "strategy": labels.get("strategy"),
            "pretrain_seed": labels.get("pretrain_seed"),
            "finetune_seed": labels.get("finetune_seed"),
            "provenance": producer,
            "chain": graph.walk(producer),
        }
    table_chain = graph.walk(str(table_provenance))
    strategy_of = {path: run["strategy"] for path, run in runs.items()}
    baselines = {c.split("_minus_", 1)[1] for c in columns if "_minus_" in c}

    report_rows = []
    for entry in runs_of_rows:
        row = entry["row"]
        numbers = []
        for column, text in row.items():
            value = _number(text)
            if column in SKIPPED_COLUMNS or value is None:
                continue
            numbers.append(
                {
                    "column": column,
                    "value": value,
                    "runs": _column_runs(column, entry["runs"], strategy_of, strategies, baselines),
                }
            )
        report_rows.append(
            {
                "name": row_name(row),
                "task": row.get("task"),
                "metric": row.get("metric"),
                "runs": entry["runs"],
                "derived_from": entry["derived_from"],
                "numbers": numbers,
            }
        )

    all_records = list(dict.fromkeys(table_chain + [p for run in runs.values() for p in run["chain"]]))
    dirty = [{"provenance": p, "reason": r} for p in all_records if (r := _dirty_reason(graph.records[p]))]
    if dirty and not allow_dirty:
        names = "; ".join(f"{d['provenance']} ({d['reason']})" for d in dirty)
        raise DataError(
            f"{len(dirty)} provenance file(s) of the chain of {table} do not record a clean git commit: {names}. "
            "Rerun from a clean commit, or pass --allow-dirty to audit anyway"
        )

    report = {
        "table": str(table),
        "table_provenance": str(table_provenance),
        "dvc_lock": None if dvc_lock is None else str(dvc_lock),
        "allow_dirty": allow_dirty,
        "dirty": dirty,
        "rows": report_rows,
        "runs": runs,
        "provenance": {path: _record_summary(graph, path) for path in all_records},
    }
    if verify:
        report["verification"] = verify_report(report)
    return report


def write_report(report: dict, path: str | Path) -> None:
    """The full report as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
