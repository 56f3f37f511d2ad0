"""Snakemake's lock on a working directory: telling a killed run's lock from a live one.

Snakemake writes `.snakemake/locks/<n>.input.lock` and `<n>.output.lock` when a run starts
and removes them when it ends. A run killed with SIGKILL (or by a power cut) cannot remove
them, and Snakemake cannot tell such a stale lock from a live run's: the next run stops with
`LockException` until someone types `snakemake --unlock`. So that "run the same command
again" works after a kill, the Snakefile calls `claim_workdir` in the main Snakemake process,
before Snakemake locks the directory, and the lock is removed only when all of these hold:

1. No live Snakemake run of this workflow works in the directory. Every run holds a shared
   `flock` on `.snakemake/fem-runs.lock` for as long as its process lives; the kernel drops
   it when the process dies, however it dies (also for runs on other hosts of a file system
   with working locks, such as NFS). The lock is stale when an exclusive `flock` succeeds.
2. No job started by a killed run still runs on this host: every run puts the directory in
   the environment of its jobs (`FEM_SNAKEMAKE_DIR`), which `/proc/<pid>/environ` shows for as
   long as the job lives (a SIGKILL of Snakemake alone leaves its jobs running).
3. The killed run had no job on a cluster: Snakemake records an external job id (SLURM's) for
   every output of a submitted job, and such jobs outlive the run on other hosts.
4. The last run that was alone in the directory ran on this host (`.snakemake/fem-runs.host`):
   on a file system whose locks are local to each host (Lustre's localflock, NFS mounted
   nolock) a live run on another login node would look dead from here.

Otherwise the lock stays, and the message says what to check before `snakemake --unlock`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from pathlib import Path

JOB_MARKER = "FEM_SNAKEMAKE_DIR"  # set in the environment of every job a run starts
RUNS_LOCK = "fem-runs.lock"  # in .snakemake/: the flock every live run holds (shared)
RUNS_HOST = "fem-runs.host"  # in .snakemake/: the host of the last run that was alone there
_SNAKEMAKE_LOCK = re.compile(r"\d+\.(input|output)\.lock")  # Snakemake's own lock files
_held: list = []  # the open lock file of this process: closing it would drop the flock


def snakemake_locks(workdir: Path) -> list[Path]:
    """Snakemake's lock files in `workdir` (its `.snakemake/locks/<n>.input|output.lock`)."""
    folder = workdir / ".snakemake" / "locks"
    return sorted(p for p in folder.glob("*.lock") if _SNAKEMAKE_LOCK.fullmatch(p.name)) if folder.is_dir() else []


def cluster_jobs(workdir: Path) -> list[str]:
    """External (cluster) job ids that Snakemake recorded for outputs still marked incomplete."""
    ids = set()
    for record in (workdir / ".snakemake" / "incomplete").rglob("*"):
        try:
            job = json.loads(record.read_text()).get("external_jobid") if record.is_file() else None
        except (OSError, ValueError, AttributeError):  # a half-written record names no job
            job = None
        if job:
            ids.add(str(job))
    return sorted(ids)


def running_jobs(workdir: Path) -> list[int] | None:
    """Processes on this host started by a Snakemake run in `workdir` (their environment has
    JOB_MARKER=workdir), other than this process and its ancestors; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "environ").exists():
        return None
    ours = {os.getpid(), *_ancestors()}
    marker = f"{JOB_MARKER}={workdir}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or another user's process
            continue
        if marker in environ:
            found.append(int(entry.name))
    return sorted(found)


def _ancestors() -> list[int]:
    pids, pid = [], os.getppid()
    while pid > 1:
        pids.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command in parentheses
    return pids


def claim_workdir(workdir: Path) -> str | None:
    """Register this Snakemake run as live in `workdir` (for the life of this process), mark
    the jobs it will start, and remove Snakemake's lock if a killed run left it (see the
    module docstring). Returns a one-line message for the user, or None when there was
    nothing to say. Call once, in the main Snakemake process, before Snakemake locks."""
    workdir = workdir.resolve()
    os.environ[JOB_MARKER] = str(workdir)  # inherited by every job this run starts
    (workdir / ".snakemake").mkdir(exist_ok=True)
    handle = open(workdir / ".snakemake" / RUNS_LOCK, "a")  # noqa: SIM115 (held until exit)
    _held.append(handle)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another live run: Snakemake's lock, if any, is its own
        fcntl.flock(handle, fcntl.LOCK_SH)
        locks = snakemake_locks(workdir)
        return f"fem: the lock in {locks[0].parent} is kept: another snakemake runs in {workdir}" if locks else None
    except OSError as err:  # no file locks on this file system: nothing can be told apart
        locks = snakemake_locks(workdir)
        return (
            f"fem: cannot tell whether the lock in {locks[0].parent} is a killed run's (file locks: {err}); "
            "when no snakemake runs here, run `snakemake --unlock` and then the same command again"
            if locks
            else None
        )
    try:  # the only run: Snakemake's lock files, if any, belong to a dead one
        return _remove_if_stale(workdir)
    finally:
        (workdir / ".snakemake" / RUNS_HOST).write_text(socket.gethostname() + "\n")
        fcntl.flock(handle, fcntl.LOCK_SH)  # live from now on, as every other run


def _remove_if_stale(workdir: Path) -> str | None:
    locks = snakemake_locks(workdir)
    if not locks:
        return None
    where = locks[0].parent
    host_file = workdir / ".snakemake" / RUNS_HOST
    host = host_file.read_text().strip() if host_file.is_file() else socket.gethostname()
    if host != socket.gethostname():
        return (
            f"fem: the lock in {where} was left by a run on host {host}, which this host cannot see: when no "
            "snakemake runs there, run `snakemake --unlock` and then the same command again"
        )
    submitted = cluster_jobs(workdir)
    if submitted:
        return (
            f"fem: a killed run left its lock in {where} and had submitted cluster jobs {', '.join(submitted)}; "
            f"once none of them is queued or running (squeue -j {','.join(submitted)}), run `snakemake --unlock` "
            "and then the same command again"
        )
    jobs = running_jobs(workdir)
    if jobs is None:
        return (
            f"fem: a killed run left its lock in {where}; this system has no /proc to check that none of its "
            "jobs still runs: when none does, run `snakemake --unlock` and then the same command again"
        )
    if jobs:
        return (
            f"fem: a killed run left its lock in {where}, and jobs it started still run (process ids "
            f"{', '.join(map(str, jobs))}): wait for them to end or kill them, then run the same command again"
        )
    for lock in locks:
        lock.unlink(missing_ok=True)
    return f"fem: removed the lock a killed run left in {where} (no run, and no job of one, is alive in {workdir})"
