"""`fem dvc pull TARGET`: outputs from the DVC remote that Snakemake sees as up to date.

`dvc pull` writes every file with a fresh modification time and in no particular order, and
Snakemake reruns a job whose inputs are newer than its outputs: after a plain `dvc pull`,
`snakemake results/table2.csv` would recompute most of what was pulled. This command pulls
the DVC stage that outputs TARGET with all the stages it depends on, checks with
`dvc status` that every one of them matches `dvc.lock` (its code, params and inputs are the
ones that produced the pulled outputs: code and params before anything is downloaded, the
pulled data after), and only then runs `snakemake --touch --forceall
TARGET`, which sets the times in the order of the DAG and records, in `.snakemake/metadata`,
this checkout's code and params for every job (the other rerun triggers). Stage names come
from fem.dvc_stages; the config files are those dvc.yaml's stage commands were generated with.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from fem.dvc_stages import dry_run_jobs, parse_dry_run, snakemake, stage_name
from fem.errors import PullError


def stage_of(target: str, stages: dict) -> str:
    """The name of the stage of dvc.yaml whose outs or metrics include `target`."""
    for name, stage in stages.items():
        if target in stage.get("outs", []) + stage.get("metrics", []):
            return name
    raise PullError(f"no stage of dvc.yaml outputs {target}: regenerate it (`fem dvc generate`) or name another target")


def configfiles_of(cmd: str) -> list[str]:
    """The --configfile values of a stage's command (`snakemake ... --configfile a b`)."""
    words, files = shlex.split(cmd), []
    for i, word in enumerate(words):
        if word == "--configfile":
            for value in words[i + 1 :]:
                if value.startswith("-"):
                    break
                files.append(value)
    return files


def upstream_stages(stages: dict, name: str) -> set[str]:
    """`name` and every stage whose outputs it depends on, transitively (DVC's --with-deps)."""
    producer = {out: n for n, stage in stages.items() for out in stage.get("outs", []) + stage.get("metrics", [])}
    found, pending = set(), [name]
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending += [producer[dep] for dep in stages[current].get("deps", []) if dep in producer]
    return found


def describe_status(status: dict, limit: int = 4) -> str:
    """One line from `dvc status --json` ({stage: [change, ...]}), at most `limit` stages."""
    parts = [f"{stage}: {'; '.join(_flatten(change) for change in status[stage])}" for stage in sorted(status)[:limit]]
    return ", ".join(parts) + (f" and {len(status) - limit} more stages" if len(status) > limit else "")


def _flatten(change) -> str:
    """{"changed deps": {"micro.yaml": {"pretrain.lr": "modified"}}}
    -> "changed deps micro.yaml pretrain.lr modified"."""
    if isinstance(change, dict):
        return ", ".join(f"{key} {_flatten(inner)}" for key, inner in change.items())
    return str(change)


def unpullable_changes(status: dict, stages: dict) -> dict:
    """The changes of `dvc status --json` that no pull can mend: deps no stage outputs (code,
    params, raw inputs) that are modified or new. Deps that are other stages' outputs, and
    missing ones, are what a pull brings."""
    produced = {out for stage in stages.values() for out in stage.get("outs", []) + stage.get("metrics", [])}
    found: dict = {}
    for stage, changes in status.items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            kept = {dep: what for dep, what in deps.items() if dep not in produced and what != "deleted"}
            if kept:
                found.setdefault(stage, []).append({"changed deps": kept})
    return found


def _status(stage: str, workdir: Path) -> dict:
    done = _dvc(["status", "--with-deps", "--json", stage], workdir, capture=True)
    if done.returncode != 0:
        raise PullError(f"`dvc status --with-deps {stage}` failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout or "{}")


def _dvc(args: list[str], workdir: Path, capture: bool) -> subprocess.CompletedProcess:
    # this environment's DVC, as for snakemake; a pull shows its progress on the terminal
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, capture_output=capture, text=True)


def pull(target: str, workdir: Path = Path(".")) -> str:
    """Pull `target` and everything it depends on from the DVC remote, check it against
    dvc.lock, and mark it up to date for Snakemake. Returns a one-line summary; raises
    PullError (nothing is marked) when a stage differs from dvc.lock or a step fails."""
    dvc_yaml = workdir / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise PullError(f"{dvc_yaml} not found: run `fem dvc generate` first")
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    stage = stage_of(target, stages)
    configfiles = configfiles_of(stages[stage]["cmd"])
    flags = ["--configfile", *configfiles] if configfiles else []
    changed = unpullable_changes(_status(stage, workdir), stages)
    if changed:  # before downloading anything: the remote's outputs are not this code's
        raise PullError(
            f"the remote's outputs do not match this checkout's code and params (dvc.lock): "
            f"{describe_status(changed)}; nothing was pulled: `snakemake {shlex.join([target, *flags])}` rebuilds "
            "what changed"
        )
    if _dvc(["pull", "--with-deps", stage], workdir, capture=False).returncode != 0:
        raise PullError(f"`dvc pull --with-deps {stage}` failed (its message is above); nothing was marked")
    status = _status(stage, workdir)
    if status:
        raise PullError(
            f"the pulled outputs do not match this checkout's code and params (dvc.lock): {describe_status(status)}; "
            f"nothing was marked up to date: `snakemake {shlex.join([target, *flags])}` rebuilds what changed"
        )
    checked = upstream_stages(stages, stage)
    unchecked = sorted({stage_name(job) for job in dry_run_jobs([target], configfiles, workdir)} - checked)
    if unchecked:  # a Snakemake job DVC did not check would be marked up to date
        raise PullError(f"Snakemake jobs of {target} that are no stage of {stage} in dvc.yaml: {', '.join(unchecked)}; "
                        "regenerate dvc.yaml (`fem dvc generate`)")  # fmt: skip
    touched = snakemake(["--touch", "--forceall", target], configfiles, workdir)
    if touched.returncode != 0:
        raise PullError(f"`snakemake --touch {target}` failed: {(touched.stdout + touched.stderr).strip()[-1000:]}")
    planned = snakemake(["--dry-run", target], configfiles, workdir)
    left = parse_dry_run(planned.stdout + planned.stderr)
    if planned.returncode != 0 or left:
        rules = ", ".join(sorted({job.rule for job in left})) or "none"
        raise PullError(f"after marking, `snakemake --dry-run {target}` still plans jobs ({rules}) or fails: "
                        f"{(planned.stdout + planned.stderr).strip()[-1000:]}")  # fmt: skip
    return f"pulled {len(checked)} stages for {target}; all match dvc.lock, and Snakemake sees them as up to date"
