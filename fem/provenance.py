"""provenance.json: what produced a job's outputs (DESIGN §8).

Written beside every job's outputs: the command and its parameters, the git commit of the
code (and whether the work tree was dirty), sha256 of inputs and outputs, package versions,
device and wall time. `fem audit` (a later issue) walks these files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "snakemake")
CODE_ROOT = Path(__file__).resolve().parent.parent
CODE_PATHS = ("fem", "workflow", "Snakefile", "config", "pyproject.toml")  # what "dirty" is about


def table_provenance_path(table: str | Path) -> Path:
    """`results/table2.csv` -> `results/table2.provenance.json`: where every table command
    writes its provenance and `fem audit` looks for it."""
    return Path(table).with_suffix(".provenance.json")


def sha256_file(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (sha256, or another hashlib algorithm such as md5)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_paths(
    paths: list[str | Path], skip: tuple[str, ...] = ("provenance.json", ".gitignore", ".snakemake_timestamp")
) -> dict[str, str]:
    """sha256 of each file; folders are expanded to every file inside (sorted). Files named
    in `skip` are left out: the provenance files themselves, the .gitignore files DVC writes
    beside its outputs and the timestamp Snakemake writes into folder outputs (bookkeeping,
    not data; `dvc pull` does not restore them)."""
    hashes = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.name not in skip and file.exists():
                hashes[str(file)] = sha256_file(file)
    return hashes


def git_state(root: Path = CODE_ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding the code."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # Only the code counts: dvc.lock, which `dvc repro` rewrites between stages, and data do not.
    status = git("status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = "cpu"
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "packages": versions,
    }


def write_provenance(
    path: str | Path,
    command: list[str],
    parameters: dict,
    inputs: list[str | Path],
    outputs: list[str | Path],
    wall_seconds: float,
) -> dict:
    """Write provenance.json at `path` and return its content."""
    record = {
        "command": command,
        "parameters": parameters,
        "git": git_state(),
        "inputs": hash_paths(inputs),
        "outputs": hash_paths(outputs),
        "wall_seconds": wall_seconds,
        **environment(),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
