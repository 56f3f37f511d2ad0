"""`fem audit` as text: the report of fem/audit.py rendered as indented lines, per row its
numbers and runs, per run the chain of provenance records down to the downloads."""

from __future__ import annotations

import json
import shlex

from fem.audit import SHORT_HASH

SHOWN_PARAMETER_WORDS = ("seed", "strateg", "task", "corpus", "checkpoint", "data", "kind", "name", "label", "out")
SHOWN_SOURCES = 10  # source files of a download listed in the text report
PLACES = {"mirror": "mirror {path} (set by {set_by})", "hub": "the hub: {id} config {config}", "url": "{url}",
          "package": "package {name} {version} at {path}"}  # fmt: skip


def _short(digest: str | None) -> str:
    return "-" if digest is None else digest[:SHORT_HASH]


def _command(command) -> str:
    text = shlex.join(command) if isinstance(command, list) else str(command)
    return text if len(text) <= 200 else text[:200] + " ..."


def _git(git: dict | None) -> str:
    git = git or {}
    state = {True: "dirty", False: "clean", None: "state unknown"}.get(git.get("dirty"), str(git.get("dirty")))
    return f"{git.get('commit') or 'no commit'} ({state})"


def _code(code: dict | None) -> str:
    if not code:
        return "not recorded"
    return f"{code.get('package')} (sha256 {_short(code.get('sha256'))}, {len(code.get('modules') or {})} modules)"


def _place(place: dict) -> str:
    """Where a download read (fem.data): a mirror and the setting that chose it, the hub, a URL, a package."""
    template = PLACES.get(place.get("from"), "{}")
    try:
        return template.format(**place)
    except (KeyError, IndexError):
        return json.dumps(place)


def _shown_parameters(parameters: dict) -> str:
    shown = []
    for name, value in parameters.items():
        if any(word in name for word in SHOWN_PARAMETER_WORDS) and not (isinstance(value, list) and len(value) > 8):
            shown.append(f"{name}={json.dumps(value, default=str)}")
    return " ".join(shown) or "-"


def _format_record(report: dict, path: str, depth: int, shown: set[str], lines: list[str], expand: bool = True) -> None:
    """One record, indented by `depth`, then (when `expand`) the records upstream of it one
    level deeper; a record already shown is named only."""
    pad = "  " * depth
    if path in shown:
        lines.append(f"{pad}{path} (shown above)")
        return
    shown.add(path)
    record = report["provenance"][path]
    packages = ", ".join(f"{name} {version}" for name, version in (record["packages"] or {}).items())
    lines += [
        f"{pad}{path}",
        f"{pad}  command: {_command(record['command'])}",
        f"{pad}  code: {_code(record['code'])}",
        f"{pad}  git: {_git(record['git'])}",
        f"{pad}  parameters: {_shown_parameters(record['parameters'] or {})}",
        f"{pad}  device: {record['device']}; python {record['python']}; {record['platform']}",
        f"{pad}  packages: {packages or '-'}",
        f"{pad}  inputs ({len(record['inputs'])}):",
    ]
    for file, entry in record["inputs"].items():
        source = f"<- {entry['producer']}" if entry["producer"] else "(source: no provenance produced it)"
        lines.append(f"{pad}    {_short(entry['sha256'])}  {file}  {source}")
    lines.append(f"{pad}  outputs ({len(record['outputs'])}):")
    lines += [f"{pad}    {_short(digest)}  {file}" for file, digest in record["outputs"].items()]
    if record["kept"]:
        lines.append(f"{pad}  kept beside the outputs: {len(record['kept'])} file(s)")
    if record["sources"]:
        places = "; ".join(map(_place, record["sources"]["places"])) or "nowhere recorded"
        lines.append(f"{pad}  read from {places}; source files ({len(record['sources']['files'])}):")
        files = list(record["sources"]["files"].items())
        lines += [f"{pad}    {_short(digest)}  {file}" for file, digest in files[:SHOWN_SOURCES]]
        if len(files) > SHOWN_SOURCES:  # e.g. the 2,225 text files of the BBC corpus
            lines.append(f"{pad}    ... and {len(files) - SHOWN_SOURCES} more (all in --json; --verify checks all)")
    for upstream in record["upstream"] if expand else []:
        _format_record(report, upstream, depth + 1, shown, lines)


def format_report(report: dict) -> str:
    """The report as indented text: per row its numbers and runs, per run the chain of
    records down to the downloads (each record in full once, then "(shown above)")."""
    lines = [f"audit of {report['table']}"]
    if report["dirty"]:
        names = ", ".join(d["provenance"] for d in report["dirty"])
        lines.append(f"WARNING: --allow-dirty: {len(report['dirty'])} record(s) not from a clean git commit: {names}")
    if report["dvc_lock"]:
        lines.append(f"dvc.lock: {report['dvc_lock']}")
    shown: set[str] = set()
    lines.append("table job (its inputs, the runs, are shown per row below):")
    _format_record(report, report["table_provenance"], 1, shown, lines, expand=False)
    run_numbers = {run: f"[{i}]" for i, run in enumerate(report["runs"], start=1)}
    for row in report["rows"]:
        lines.append(f"row {row['name']}")
        if row["derived_from"] is not None:
            lines.append(f"  derived from the rows: {', '.join(row['derived_from']) or 'none'}")
        for number in row["numbers"]:
            used = " ".join(run_numbers[run] for run in number["runs"]) or "none"
            lines.append(f"  {number['column']} = {number['value']:g}  <- runs {used}")
        lines.append("  runs:")
        for run in row["runs"]:
            info = report["runs"][run]
            lines.append(
                f"    {run_numbers[run]} {run} (task {info['task']}, strategy {info['strategy']}, "
                f"pretrain seed {info['pretrain_seed']}, finetune seed {info['finetune_seed']})"
            )
            _format_record(report, info["provenance"], 3, shown, lines)
    verification = report.get("verification")
    if verification is not None:
        lines += [f"note: {note}" for note in verification["notes"]]
        lines += [problem["message"] for problem in verification["problems"]]
        if verification["ok"]:
            lines.append(f"verified {verification['files']} files: OK")
        else:
            lines.append(
                f"verification FAILED: {len(verification['problems'])} problem(s) in {verification['files']} files"
            )
    return "\n".join(lines)
