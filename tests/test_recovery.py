"""Run the same command again: a run killed with SIGKILL resumes when the README's command is
typed again, as is (plain `snakemake results/table2.csv`, or `make table2`), and Snakemake's
lock is removed only when neither the killed run nor any job of it is alive."""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, copy_workflow, run, workflow_env

from fem.config import deep_update

TARGET = "results/table2.csv"
# micro, with fewer fine-tuning jobs and pre-training long enough (60 steps, a state every 2)
# to be killed while it runs
OVERRIDES = {"finetune": {"tasks": ["sst2"]}, "pretrain": {"steps": 60}}
SAVED = re.compile(r"step (\d+): saved resumable state")


def as_default_config(work: Path) -> Path:
    """Make the micro config (with OVERRIDES) the copy's default config/config.yaml, so that
    the README's commands run as typed, without --configfile."""
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    deep_update(config, yaml.safe_load((ROOT / "tests" / "configs" / "micro.yaml").read_text()))
    deep_update(config, OVERRIDES)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    return work


SNAKEMAKE = ["snakemake", TARGET]  # the README's command, as typed
MAKE = ["make", "-o", "setup", "table2", f"BIN={Path(sys.executable).parent}"]  # -o setup: this venv, no install


def start(command: list[str], work: Path, env: dict) -> subprocess.Popen:
    """`command` in its own process group (as a terminal runs it), output to work/run.log."""
    log = open(work / "run.log", "w")  # noqa: SIM115 (the child writes it)
    return subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def saved_steps(work: Path) -> dict[str, int]:
    """{run: last step it logged a resumable state at} for pre-training runs not finished."""
    found = {}
    for log in (work / "logs" / "scratch" / "pretrain").glob("*.log"):
        steps = [int(step) for step in SAVED.findall(log.read_text())]
        if steps and not (work / "results" / "scratch" / "pretrain" / log.stem / "metrics.json").exists():
            found[log.stem] = max(steps)
    return found


def wait_for_a_saved_pretrain_state(work: Path, process: subprocess.Popen, at_least: int = 2) -> None:
    """Poll until a pre-training job that is still running has saved a state at step >= at_least."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, (work / "run.log").read_text()[-3000:]
        if any(step >= at_least for step in saved_steps(work).values()):
            return
        time.sleep(0.05)
    raise AssertionError("no pre-training job saved a resumable state within 600 s")


def wait_until_gone(group: int) -> None:
    """Until no process of the process group `group` is left (jobs included)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {group} still alive after 300 s")


def kill_group(process: subprocess.Popen, work: Path) -> None:
    """SIGKILL Snakemake and every job it started (its whole process group), as a terminal's
    kill would; it leaves Snakemake's lock behind."""
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    wait_until_gone(process.pid)
    assert list((work / ".snakemake" / "locks").glob("*.lock"))


def group_processes(group: int) -> dict[int, tuple[int, list[str]]]:
    """{pid: (parent pid, argv)} of the live processes of process group `group` (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            argv = (entry / "cmdline").read_bytes().decode().split("\0") if stat else []
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if stat and fields[0] != "Z" and int(fields[2]) == group:
            found[int(entry.name)] = (int(fields[1]), argv)
    return found


def main_snakemake(group: int) -> int:
    """The Snakemake process of a process group (not its jobs, not `make` above it)."""
    processes = group_processes(group)
    snakemakes = {pid for pid, (_, argv) in processes.items() if any(Path(a).name == "snakemake" for a in argv)}
    (main,) = [pid for pid in snakemakes if processes[pid][0] not in snakemakes]
    return main


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mirror) -> Path:
    """The same table, built by one uninterrupted run."""
    work = as_default_config(copy_workflow(tmp_path_factory.mktemp("uninterrupted")))
    run(SNAKEMAKE, work, workflow_env(mirror))
    return work


def assert_resumed_to_the_uninterrupted_result(work: Path, reference: Path, interrupted: dict, output: str) -> None:
    assert "fem: removed the lock a killed run left in" in output
    for name, step in interrupted.items():
        metrics = json.loads((work / "results" / "scratch" / "pretrain" / name / "metrics.json").read_text())
        assert metrics["resumed_from_step"] >= step  # resumed, not started over
        weights = Path("results", "scratch", "pretrain", name, "model", "model.safetensors")
        assert (work / weights).read_bytes() == (reference / weights).read_bytes()
    assert (work / TARGET).read_bytes() == (reference / TARGET).read_bytes()


@pytest.mark.slow
def test_a_killed_snakemake_resumes_when_the_same_command_is_run_again(tmp_path, mirror, reference):
    work = as_default_config(copy_workflow(tmp_path))
    env = workflow_env(mirror)
    first = start(SNAKEMAKE, work, env)
    wait_for_a_saved_pretrain_state(work, first)
    # while it runs, its lock is live: the same command in another terminal is refused, and
    # the lock stays
    second = subprocess.run(SNAKEMAKE, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode != 0 and "LockException" in second.stdout + second.stderr
    assert "is kept: another snakemake runs in" in second.stdout + second.stderr
    wait_for_a_saved_pretrain_state(work, first)  # (a job that is still running)
    kill_group(first, work)
    interrupted = saved_steps(work)
    assert interrupted

    output = run(SNAKEMAKE, work, env)  # the very same command: no --unlock, no --rerun-incomplete
    assert_resumed_to_the_uninterrupted_result(work, reference, interrupted, output)


@pytest.mark.slow
def test_a_make_table2_killed_before_it_recorded_a_finished_job_completes_when_run_again(tmp_path, mirror, reference):
    """The kill lands after a job wrote all its outputs but before Snakemake recorded it as
    done (Snakemake is stopped first, so this is certain): the job is marked incomplete, and
    without rerun-incomplete the rerun would stop with IncompleteFilesException."""
    work = as_default_config(copy_workflow(tmp_path))
    env = workflow_env(mirror)
    first = start(MAKE, work, env)
    wait_for_a_saved_pretrain_state(work, first)
    snakemake = main_snakemake(first.pid)
    os.kill(snakemake, signal.SIGSTOP)  # its jobs run on, nothing is recorded
    running = set(saved_steps(work))
    assert running
    deadline = time.monotonic() + 300
    while set(group_processes(first.pid)) - {first.pid, snakemake}:  # until its jobs have ended
        assert time.monotonic() < deadline, group_processes(first.pid)
        time.sleep(0.1)
    for name in running:
        assert (work / "results" / "scratch" / "pretrain" / name / "metrics.json").is_file()
    kill_group(first, work)
    assert list((work / ".snakemake" / "incomplete").rglob("*"))  # finished, but marked incomplete

    output = run(MAKE, work, env)  # the very same command
    assert "fem: removed the lock a killed run left in" in output
    for name in running:  # rerun from the start (its state was removed when it finished)
        weights = Path("results", "scratch", "pretrain", name, "model", "model.safetensors")
        assert (work / weights).read_bytes() == (reference / weights).read_bytes()
    assert (work / TARGET).read_bytes() == (reference / TARGET).read_bytes()


@pytest.mark.slow
def test_a_lock_stays_while_jobs_of_the_killed_snakemake_still_run(tmp_path, mirror):
    """Snakemake killed alone (not its process group) leaves its jobs running: the lock stays
    until they have ended, then the same command runs."""
    work = as_default_config(copy_workflow(tmp_path))
    env = workflow_env(mirror)
    command = ["snakemake", "results/scratch/pretrain/fe-s1/metrics.json"]
    first = start(command, work, env)
    wait_for_a_saved_pretrain_state(work, first)
    os.kill(first.pid, signal.SIGKILL)  # Snakemake only
    assert first.wait(timeout=60) == -signal.SIGKILL
    # Hold the orphaned job while the second run starts: on a loaded machine it could otherwise
    # finish its steps before the second Snakemake has even read its lock. A stopped process runs.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        refused = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "LockException" in output, output[-2000:]
    assert re.search(r"jobs it started still run \(process ids \d+", output), output[-2000:]
    wait_until_gone(first.pid)  # the orphaned job ends by itself

    output = run(command, work, env)
    assert "fem: removed the lock a killed run left in" in output
    assert (work / "results" / "scratch" / "pretrain" / "fe-s1" / "metrics.json").is_file()


def plant_a_killed_runs_lock(work: Path, external_jobid: str | None = None) -> Path:
    """The lock files a killed run leaves (Snakemake's format: one path per line), and with
    `external_jobid` the incomplete-output record of a job it had submitted to a cluster, with
    the cluster's job id (as Snakemake's SLURM executor records it)."""
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("data/tokenized/bbc/train.npy\n")
    (locks / "0.output.lock").write_text(f"{TARGET}\n")
    if external_jobid is None:
        return locks
    record = work / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(TARGET.encode()).decode()
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"external_jobid": external_jobid}))
    return locks


def test_a_lock_stays_when_the_killed_run_had_cluster_jobs(tmp_path, mirror):
    """Cluster jobs outlive a killed Snakemake on other hosts: the lock stays, and the message
    names the jobs to check."""
    work = copy_workflow(tmp_path)
    locks = plant_a_killed_runs_lock(work, external_jobid="4242")
    done = subprocess.run(SNAKEMAKE + ["-n"], cwd=work, env=workflow_env(mirror), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    output = done.stdout + done.stderr
    assert "had submitted cluster jobs 4242" in output and "squeue -j 4242" in output, output[-2000:]
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]


def test_a_lock_stays_when_the_last_run_was_on_another_host(tmp_path, mirror):
    """File locks may be local to each host (Lustre localflock, NFS nolock): a lock left by a
    run on another login node is never taken for a dead run's."""
    work = copy_workflow(tmp_path)
    locks = plant_a_killed_runs_lock(work)
    (work / ".snakemake" / "fem-runs.host").write_text("login-node-2\n")
    done = subprocess.run(SNAKEMAKE + ["-n"], cwd=work, env=workflow_env(mirror), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    output = done.stdout + done.stderr
    assert "was left by a run on host login-node-2" in output and "snakemake --unlock" in output, output[-2000:]
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]
