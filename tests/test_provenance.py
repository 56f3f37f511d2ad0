"""Provenance records the code that really ran: the rules run their own checkout's fem package
whichever `fem` is first on PATH, and every provenance.json names that package, the sha256 of
its code and the state of its repository. A download records where its data came from and
the sha256 of every source file it read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fem.provenance import sha256_file

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["Snakefile", "workflow", "config", "fem"]
MARKER = "this line comes from the edited checkout"
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def package_hash(package: Path) -> str:
    """`find fem -name '*.py' | sort | xargs sha256sum | sha256sum` in the folder above
    `package`: coreutils, independently of fem.provenance (sub-packages included)."""
    command = "find fem -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum"
    done = subprocess.run(["bash", "-c", command], cwd=package.parent, capture_output=True, text=True, check=True)
    return done.stdout.split()[0]


def git(clone: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=clone, env=os.environ | GIT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_jobs_run_this_checkouts_package_and_record_it(tmp_path, mirror):
    """Two checkouts: this one, installed into the venv whose `fem` is first on PATH, and a
    clone whose fem/cli.py is edited. A real download job of the clone runs the clone's code,
    and its provenance names the clone's package, its code hash and its repository."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in COPIED:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, clone / name)
    shutil.copy(ROOT / "tests" / "configs" / "micro.yaml", clone / "micro.yaml")
    git(clone, "init", "-q")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "clone")
    cli = clone / "fem" / "cli.py"
    cli.write_text(
        cli.read_text().replace("    read = SourcesRead()", f"    print({MARKER!r})\n    read = SourcesRead()")
    )
    assert MARKER in cli.read_text()

    venv_bin = Path(sys.executable).parent
    installed = subprocess.run([str(venv_bin / "fem"), "--help"], capture_output=True, text=True)
    assert installed.returncode == 0  # PATH's `fem`: the venv's install of this checkout, not the clone
    env = os.environ | {"FEM_HUB_MIRROR": str(mirror), "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(venv_bin / "snakemake"), "--cores", "1", "data/raw/tasks/sst2", "--configfile", "micro.yaml"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert MARKER in (clone / "logs" / "download_task" / "sst2.log").read_text()

    record = json.loads((clone / "data" / "raw" / "tasks" / "sst2" / "provenance.json").read_text())
    assert record["code"]["package"] == str((clone / "fem").resolve())
    assert record["code"]["sha256"] == package_hash(clone / "fem") != package_hash(ROOT / "fem")
    assert record["code"]["modules"]["fem/cli.py"] == sha256_file(cli)
    assert record["code"]["modules"]["fem/data.py"] == sha256_file(clone / "fem" / "data.py")
    assert record["git"] == {"commit": git(clone, "rev-parse", "HEAD"), "dirty": True}  # cli.py is edited

    # the download names the mirror it used, the setting that chose it and every file it read
    assert record["sources"]["places"] == [
        {"from": "mirror", "path": str(mirror / "nyu-mll" / "glue"), "set_by": "$FEM_HUB_MIRROR"}
    ]
    read = {str(mirror / "nyu-mll" / "glue" / name) for name in
            ("README.md", "sst2/train-00000-of-00001.parquet", "sst2/validation-00000-of-00001.parquet")}  # fmt: skip
    assert set(record["sources"]["files"]) == read
    assert all(record["sources"]["files"][file] == sha256_file(file) for file in read)

    # the jobs' environment is not part of their code: planned again from elsewhere on PATH, nothing reruns
    env["PATH"] = os.environ["PATH"]
    done = subprocess.run([str(venv_bin / "snakemake"), "-n", "data/raw/tasks/sst2", "--configfile", "micro.yaml"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr, done.stdout + done.stderr


def test_a_job_refuses_another_checkouts_package(tmp_path):
    """Under a pipeline ($FEM_CODE_ROOT names its checkout), fem stops at once with one line
    naming both places when the package it imported is another copy."""
    elsewhere = tmp_path / "elsewhere"
    env = os.environ | {"FEM_CODE_ROOT": str(elsewhere), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "fem", "check-config", "config/config.yaml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert str(elsewhere) in done.stderr and str(ROOT / "fem") in done.stderr
    done = subprocess.run([sys.executable, "-m", "fem", "check-config", "config/config.yaml"], cwd=ROOT,
                          env=env | {"FEM_CODE_ROOT": str(ROOT)}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_package_installed_inside_a_checkout_does_not_report_that_checkouts_state(tmp_path):
    """git state is that of the repository whose top folder holds the package: a copy of fem
    in a non-repository folder below a checkout (site-packages of its .venv) has none."""
    from fem.provenance import git_state

    git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text("a checkout\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "checkout")
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    assert git_state(site) == {"commit": None, "dirty": None}
    assert git_state(ROOT)["commit"] == git(ROOT, "rev-parse", "HEAD")
