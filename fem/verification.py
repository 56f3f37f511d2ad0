"""Verification for `fem audit --verify`. Each problem names the file and the record:

- every file listed in a chain of provenance records (inputs, outputs, files kept beside the
  outputs, the source files a download read) is hashed again (sha256) and compared;
- every file recorded in dvc.lock (deps and outs; folders through their `.dir` manifest in
  the DVC cache, or recomputed the way DVC does when there is none) with its md5;
- the fem modules each job imported with the same modules of the checkout audited (the
  folder the audit runs in when it holds fem/, else the checkout of the running fem): a job
  that ran another copy of fem is a problem, modules of this checkout edited since a note;
- a file in a job's output folder that no record lists is reported;
- the table is recomputed from its runs and compared cell by cell (fem/recompute.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from fem.errors import DataError
from fem.provenance import BOOKKEEPING, CODE_ROOT, sha256_file
from fem.recompute import recompute_problems

PROVENANCE = "provenance.json"


def path_key(path: str | Path) -> str:
    """A path as a comparable string: absolute and normalised (symlinks are not followed)."""
    return os.path.normpath(os.path.abspath(path))


class _Hasher:
    """Hashes each file once per algorithm; None when the file does not exist."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], str | None] = {}

    def __call__(self, path: str | Path, algorithm: str) -> str | None:
        key = (path_key(path), algorithm)
        if key not in self.cache:
            if not Path(path).is_file():
                self.cache[key] = None
            else:
                self.cache[key] = sha256_file(path, algorithm)
        return self.cache[key]

    def files(self) -> int:
        return len({path for path, _ in self.cache})


def _problem(file: str, algorithm: str, expected: str, actual: str | None, record: str) -> dict:
    """A file whose hash differs from its record, or that is missing."""
    kind = "missing" if actual is None else "mismatch"
    return {
        "file": file,
        "kind": kind,
        "algorithm": algorithm,
        "expected": expected,
        "actual": actual,
        "record": record,
        "message": f"{kind.upper()} {file}: expected {algorithm} {expected}, actual "
        f"{actual or 'file not found'} (recorded in {record})",
    }


def _unlisted(file: str, field: str, record: str) -> dict:
    """A link of the chain that its record does not state (a run the table job did not read)."""
    return {
        "file": file,
        "kind": "unlisted",
        "algorithm": None,
        "expected": f"listed among the {field}",
        "actual": "not listed",
        "record": record,
        "message": f"UNLISTED {file}: expected among the {field} of {record}, not listed there",
    }


def _other(file: str, kind: str, record: str, message: str) -> dict:
    """A problem that is not a hash of a listed file: unrecorded files, code, recomputation."""
    return {"file": file, "kind": kind, "algorithm": None, "expected": None, "actual": None, "record": record,
            "message": message}  # fmt: skip


def audited_checkout() -> Path:
    """The checkout whose code the records are compared with: the current folder when it
    holds a fem package (the audit runs where snakemake ran), else the running fem's."""
    here = Path.cwd()
    return here if (here / "fem" / "__init__.py").is_file() else CODE_ROOT


def _code_problems(report: dict, checkout: Path, hasher: _Hasher) -> tuple[list[dict], list[str]]:
    """(problems, notes) of the code each record's job imported against the checkout's.

    A problem: the job recorded no code, or it ran another copy of fem whose modules differ
    from the checkout's (its numbers did not come from this code). A note: modules of this
    same checkout changed after the job ran. Whether such an edit matters is the rules' call:
    Snakemake reruns a job when a module among its rule's code inputs changes; for any other
    module (config checks, provenance itself) `snakemake --forcerun` records the new code."""
    problems, notes = [], []
    for path, record in report["provenance"].items():
        code = record.get("code") or {}
        if not code.get("modules"):
            problems.append(_other(path, "code", path, f"NO CODE {path}: records no code hash; rerun its job"))
            continue
        changed = [m for m, digest in code["modules"].items() if hasher(checkout / m, "sha256") != digest]
        if not changed:
            continue
        package = code.get("package")
        if package and Path(package).resolve() == (checkout / "fem").resolve():
            notes.append(f"code changed since {path} was made: {', '.join(changed)}")
            continue
        message = (
            f"CODE {path}: its job ran {', '.join(changed)} of {package} (code sha256 "
            f"{code.get('sha256')}), which differ from {checkout / 'fem'}; rerun it with this checkout's code"
        )
        problems.append(_other(path, "code", path, message))
    return problems, notes


def _folder_files(folder: Path):
    """Files below `folder`, leaving out folders that hold a provenance record of their own."""
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not (Path(current) / f / PROVENANCE).is_file())
        yield from (Path(current) / name for name in sorted(files))


def _unrecorded(report: dict) -> list[dict]:
    """Files in a job's output folder (the folder of its provenance.json; a table's record
    sits in results/, beside everything, and is left out) that no record lists."""
    listed = {path_key(f) for r in report["provenance"].values() for f in [*r["inputs"], *r["outputs"], *r["kept"]]}
    problems = []
    for path in report["provenance"]:
        for file in _folder_files(Path(path).parent) if Path(path).name == PROVENANCE else ():
            if file.name not in BOOKKEEPING and path_key(file) not in listed:
                message = f"UNRECORDED {file}: in the output folder of {path}, but listed by no provenance record"
                problems.append(_other(str(file), "unrecorded", path, message))
    return problems


def verify_report(report: dict) -> dict:
    """Run every check of the module docstring on the report (and its dvc.lock).
    Returns {"files": distinct files hashed, "checkout": the checkout the code is compared
    with, "problems": [...], "notes": [...], "ok": bool}."""
    hasher = _Hasher()
    problems: list[dict] = []
    notes: list[str] = []
    absent = []
    for path, record in report["provenance"].items():
        listed = [(f, e["sha256"], "inputs") for f, e in record["inputs"].items()]
        listed += [(f, digest, "outputs") for f, digest in record["outputs"].items()]
        listed += [(f, digest, "kept") for f, digest in record["kept"].items()]
        listed += [(f, digest, "sources") for f, digest in ((record["sources"] or {}).get("files") or {}).items()]
        for file, expected, field in listed:
            actual = hasher(file, "sha256")
            if actual is None and field in ("kept", "sources"):  # not tracked by DVC / another machine's
                absent.append(file)
            elif actual != expected:
                problems.append(_problem(file, "sha256", expected, actual, f"{path} ({field})"))
    if absent:
        notes.append(f"{len(absent)} kept or source file(s) not present here, not checked (e.g. {absent[0]})")
    checkout = audited_checkout()
    notes.append(f"code compared with {checkout / 'fem'}")
    code_problems, code_notes = _code_problems(report, checkout, hasher)
    problems, notes = problems + code_problems, notes + code_notes
    problems += _unrecorded(report)
    recomputed, recompute_notes = recompute_problems(
        report["table"], report["table_provenance"], report["provenance"][report["table_provenance"]]
    )
    problems += recomputed
    notes += recompute_notes
    table_record = report["provenance"][report["table_provenance"]]
    table_inputs = {path_key(f) for f in table_record["inputs"]}
    for run in report["runs"]:
        if path_key(run) not in table_inputs:
            problems.append(_unlisted(run, "inputs", report["table_provenance"]))
    if path_key(report["table"]) not in {path_key(f) for f in table_record["outputs"]}:
        problems.append(_unlisted(report["table"], "outputs", report["table_provenance"]))
    if report["dvc_lock"]:
        dvc_problems, dvc_notes = verify_dvc_lock(Path(report["dvc_lock"]), hasher)
        problems += dvc_problems
        notes += dvc_notes
    return {"files": hasher.files(), "checkout": str(checkout), "problems": problems, "notes": notes,
            "ok": not problems}  # fmt: skip


def _dvc_manifest(root: Path, digest: str) -> Path | None:
    """The `.dir` manifest of a folder hash in the DVC cache (DVC 3 layout, then DVC 2)."""
    hexdigest = digest[: -len(".dir")]
    for cache in (root / ".dvc" / "cache" / "files" / "md5", root / ".dvc" / "cache"):
        candidate = cache / hexdigest[:2] / (hexdigest[2:] + ".dir")
        if candidate.is_file():
            return candidate
    return None


def _dvc_folder_md5(folder: Path, hasher: _Hasher) -> str | None:
    """A folder's hash as DVC computes it: md5 of the sorted JSON list of {md5, relpath}."""
    if not folder.is_dir():
        return None
    entries = [
        {"md5": hasher(file, "md5"), "relpath": file.relative_to(folder).as_posix()}
        for file in folder.rglob("*")
        if file.is_file()
    ]
    entries.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def verify_dvc_lock(lock: Path, hasher: _Hasher) -> tuple[list[dict], list[str]]:
    """Compare every dep and out of every stage of a DVC 3 dvc.lock with the files on disk:
    a file by its md5, a folder file by file through its `.dir` manifest in the DVC cache (or,
    when the manifest is not cached, as a whole by DVC's folder hash). Paths are relative to
    the folder of dvc.lock."""
    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read {lock} ({err}); expected a dvc.lock written by `dvc repro`") from err
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise DataError(f"{lock}: no 'stages' mapping; expected a dvc.lock written by DVC 3 (`dvc repro`)")
    root = lock.parent
    problems: list[dict] = []
    notes: list[str] = []
    for name, stage in stages.items():
        for field in ("deps", "outs"):
            for entry in (stage or {}).get(field) or []:
                record = f"{lock} stage {name} {field}"
                digest = entry.get("md5")
                path = root / entry["path"]
                shown = os.path.normpath(path)
                if not digest:
                    notes.append(f"{record}: {shown} has no md5 (hash {entry.get('hash')!r}); not checked")
                elif not digest.endswith(".dir"):
                    actual = hasher(path, "md5")
                    if actual != digest:
                        problems.append(_problem(shown, "md5", digest, actual, record))
                elif (manifest := _dvc_manifest(root, digest)) is not None:
                    for item in json.loads(manifest.read_text()):
                        file = os.path.normpath(path / item["relpath"])
                        actual = hasher(file, "md5")
                        if actual != item["md5"]:
                            problems.append(_problem(file, "md5", item["md5"], actual, f"{record} {entry['path']}"))
                else:
                    actual = _dvc_folder_md5(path, hasher)
                    if actual != digest:
                        problems.append(
                            _problem(shown, "md5", digest, actual, f"{record} (folder, no manifest cached)")
                        )
    return problems, notes
