"""provenance.json: what produced a job's outputs (DESIGN §8).

Written beside every job's outputs: the command and its parameters, the code that ran (the
folder of the imported fem package, sha256 of its modules, and the git commit of that
package's repository and whether its work tree was dirty), sha256 of inputs and outputs,
package versions, device and wall time. `fem audit` (fem/audit.py) walks these files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from fem.errors import ConfigError

PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "snakemake")
PACKAGE = Path(__file__).resolve().parent  # the fem package this process imported
CODE_ROOT = PACKAGE.parent  # the checkout holding it (when it is one)
CODE_PATHS = ("fem", "workflow", "profiles", "Snakefile", "config", "pyproject.toml")  # what "dirty" is about
CODE_ROOT_ENV = "FEM_CODE_ROOT"  # set by workflow/rules/common.smk: the checkout whose fem jobs must run
# Bookkeeping files, not data: provenance files themselves, the .gitignore files DVC writes
# beside its outputs and the timestamp Snakemake writes into folder outputs (`dvc pull` does
# not restore them).
BOOKKEEPING = ("provenance.json", ".gitignore", ".snakemake_timestamp")


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


def hash_paths(paths: list[str | Path], skip: tuple[str, ...] = BOOKKEEPING) -> dict[str, str]:
    """sha256 of each file; folders are expanded to every file inside (sorted). Files named
    in `skip` (BOOKKEEPING) are left out."""
    hashes = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.name not in skip and file.exists():
                hashes[str(file)] = sha256_file(file)
    return hashes


def git_state(root: Path = CODE_ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository whose top folder is
    `root` (the checkout of the imported fem package). None and None when `root` is not the
    top of a git work tree: a package installed into site-packages inside some checkout's
    .venv must not report that checkout's state."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    # Only the code counts: dvc.lock, which `dvc repro` rewrites between stages, and data do not.
    status = git("status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def code_state(package: Path = PACKAGE) -> dict:
    """The code of this process: {"package": the fem folder imported, "sha256": digest of
    every .py file under it, "modules": {"fem/<path>.py": sha256} of the fem modules imported
    so far}. "sha256" equals `find fem -name '*.py' | sort | xargs sha256sum | sha256sum` run in
    the checkout (lines "<sha256>  fem/<path>.py", sorted by path; sub-packages such as
    fem/finetuning/ included)."""
    files = {
        f"fem/{file.relative_to(package).as_posix()}": sha256_file(file)
        for file in sorted(package.rglob("*.py"))
        if "__pycache__" not in file.parts
    }
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    imported = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(package):
            imported.add(f"fem/{Path(file).resolve().relative_to(package).as_posix()}")
    return {
        "package": str(package),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "modules": {name: files[name] for name in sorted(imported) if name in files},
    }


def job_environment(checkout: str | Path, environ: Mapping[str, str], python: str) -> dict[str, str]:
    """The variables to set so that the jobs of a Snakemake run in `checkout` run its own fem
    package, whichever `fem` or `torchrun` is first on PATH: `checkout` first on PYTHONPATH
    (Python looks there before site-packages and before an editable install of another
    checkout), $FEM_CODE_ROOT (with which fem refuses any other copy: check_code_root), and
    the scripts folder of `python` (the interpreter running Snakemake) first on PATH when it
    has a `fem`. The rules' shell commands stay as written, so Snakemake's code trigger does
    not depend on where the checkout lies."""
    root = os.path.abspath(checkout)
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    updates = {CODE_ROOT_ENV: root, "PYTHONPATH": os.pathsep.join([root, *paths])}
    scripts = os.path.dirname(python)
    if os.access(os.path.join(scripts, "fem"), os.X_OK):
        updates["PATH"] = os.pathsep.join([scripts, environ.get("PATH", "")])
    return updates


def check_code_root(package: Path = PACKAGE) -> None:
    """Under a pipeline (workflow/rules/common.smk sets $FEM_CODE_ROOT to its checkout), stop
    unless the imported fem package is that checkout's: its jobs must not run another copy."""
    expected = os.environ.get(CODE_ROOT_ENV)
    if expected and Path(expected).resolve() / "fem" != package:
        raise ConfigError(
            f"this pipeline runs the fem package of {expected} (${CODE_ROOT_ENV}), but {sys.executable} "
            f"imported {package}; put {expected} first on PYTHONPATH (workflow/rules/common.smk does)"
        )


@dataclass
class SourcesRead:
    """What a download read (fem/data.py fills it), for its provenance.json: each place the
    data came from (a mirror folder and the setting that chose it, the hub, a URL, a pip
    package) and every local file read there (a mirror's data files and dataset card, a
    package's text files), so that `fem audit --verify` finds a source file changed since.
    Files fetched from the hub or a URL go through the datasets cache; their place names them.
    `duplicates`: the exact copies the download found in what it read (fem/data.py says what
    each count means), recorded beside the places."""

    places: list[dict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)

    def add(self, place: dict, files: list[Path] = ()) -> None:
        self.places.append(place)
        self.files += [Path(os.path.abspath(f)) for f in files]

    def note_duplicates(self, counts: dict) -> None:
        self.duplicates.update(counts)

    def record(self) -> dict:
        """{"places": [...], "files": {absolute path: sha256}}, and "duplicates" when noted."""
        files = {str(f): sha256_file(f) for f in dict.fromkeys(self.files)}
        return {"places": self.places, "files": files} | ({"duplicates": self.duplicates} if self.duplicates else {})


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
    sources: dict | None = None,
    kept: list[str | Path] = (),
) -> dict:
    """Write provenance.json at `path` and return its content. `sources`: what a download
    read (SourcesRead.record()); `kept`: files kept beside the outputs for reading
    that are not declared outputs (neither Snakemake nor DVC tracks them), hashed under
    "kept" so that `fem audit --verify` knows them."""
    record = {
        "command": command,
        "parameters": parameters,
        "code": code_state(),
        "git": git_state(),
        "inputs": hash_paths(inputs),
        "outputs": hash_paths(outputs),
        **({"sources": sources} if sources is not None else {}),
        **({"kept": hash_paths(list(kept))} if kept else {}),
        "wall_seconds": wall_seconds,
        **environment(),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
