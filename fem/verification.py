"""Verification for `fem audit --verify`: every file listed in a chain of provenance records
is hashed again (sha256) and compared with its record, and every file recorded in dvc.lock
(deps and outs; folders through their `.dir` manifest in the DVC cache, or recomputed the
way DVC does when there is none) with its md5. Each mismatch names the file, both hashes
and the record it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from fem.config import ConfigError
from fem.provenance import sha256_file


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


def verify_report(report: dict) -> dict:
    """Hash again every file of every record of the report (and of its dvc.lock) and compare.
    Returns {"files": distinct files hashed, "problems": [...], "notes": [...], "ok": bool}."""
    hasher = _Hasher()
    problems: list[dict] = []
    notes: list[str] = []
    for path, record in report["provenance"].items():
        listed = [(f, e["sha256"], "inputs") for f, e in record["inputs"].items()]
        listed += [(f, digest, "outputs") for f, digest in record["outputs"].items()]
        for file, expected, field in listed:
            actual = hasher(file, "sha256")
            if actual != expected:
                problems.append(_problem(file, "sha256", expected, actual, f"{path} ({field})"))
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
    return {"files": hasher.files(), "problems": problems, "notes": notes, "ok": not problems}


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
        raise ConfigError(f"cannot read {lock} ({err}); expected a dvc.lock written by `dvc repro`") from err
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise ConfigError(f"{lock}: no 'stages' mapping; expected a dvc.lock written by DVC 3 (`dvc repro`)")
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
