"""dvc.yaml, generated from Snakemake's own view of the DAG (DESIGN §9).

Snakemake is the only place the DAG is written. `fem dvc generate` asks Snakemake for every
job of the targets (`snakemake --dry-run --forceall`, whose job listing names each job's
rule, inputs, outputs, log and wildcards) and writes one DVC stage per job:

  cmd      the same job, run through Snakemake with the dvc-stage profile (no rerun on
           timestamps: DVC does not keep them) and only the job's own rule allowed
  deps     the job's inputs (its fem/ modules included) and the rule file that defines it
  params   the config keys the job's rule reads: fem/rule_settings.py keys_read runs the rule's
           settings builder, the one the rule file uses, and records every key it reads
  outs     its outputs; metrics.json files go under `metrics`. Pre-training's resume/
           folder is not an output, so DVC never caches or deletes it

and the top-level `plots` that `dvc plots show` draws: per group of pre-training runs (a
setting, or a task's continual runs) their training loss, validation loss, gradient norm and
learning rate against the step, per group of fine-tuning runs (a setting and task) their
training loss, one line per run (from each run's curves/, fem/live_metrics.py), and every
figure (PNG) a job writes.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fem.config import deep_update, load_yaml
from fem.errors import ConfigError
from fem.rule_settings import keys_read

DVC_STAGE_PROFILE = "workflow/profiles/dvc-stage"
BASE_CONFIG = "config/config.yaml"  # the Snakefile's `configfile:`
DEFAULT_SETTING = "scratch"  # the `setting` wildcard's default value: left out of stage names
# Every stage's command depends on these besides its own rule file: they build its params and paths
RULE_CODE = ("workflow/rules/common.smk", "Snakefile", "fem/rule_settings.py", "fem/objective_settings.py")


@dataclass
class SnakemakeJob:
    """One job of a Snakemake dry run."""

    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: str = ""
    wildcards: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why Snakemake plans it ("Params have changed ...", "Input files updated by another job ...")
    resources: dict[str, str] = field(default_factory=dict)  # e.g. {"gpu": "1", "runtime": "360"}
    shell: str = ""  # the shell command (listed with --printshellcmds)


def snakemake(args: list[str], configfiles: list[str], workdir: str | Path = ".") -> subprocess.CompletedProcess:
    """`snakemake --cores 1 args --configfile configfiles` in `workdir`, with this Python's
    environment first on PATH (its `fem`); output captured."""
    command = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    if configfiles:  # --configfile takes several values: last
        command += ["--configfile", *configfiles]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)


def dry_run_jobs(targets: list[str], configfiles: list[str], workdir: str | Path = ".") -> list[SnakemakeJob]:
    """Every job Snakemake would run to build `targets` from nothing (--forceall)."""
    done = snakemake(["--dry-run", "--forceall", *targets], configfiles, workdir)
    if done.returncode != 0:
        raise ConfigError(f"snakemake could not plan {targets}: {(done.stdout + done.stderr)[-2000:]}")
    return parse_dry_run(done.stdout + done.stderr)


def parse_dry_run(text: str) -> list[SnakemakeJob]:
    """Jobs from the listing of `snakemake --dry-run` ("rule x:" then "    key: value" lines,
    and "Shell command: ..." with --printshellcmds)."""
    jobs, job = [], None
    for line in text.splitlines():
        started = re.match(r"^(?:local)?rule (\w+):$", line)
        if started:
            job = SnakemakeJob(started.group(1))
            jobs.append(job)
            continue
        if job is not None and line.startswith("Shell command: "):
            job.shell = line.removeprefix("Shell command: ")
            continue
        field_line = re.match(r"^    (input|output|log|wildcards|reason|resources): (.*)$", line)
        if job is None or not field_line:
            continue
        key, value = field_line.groups()
        if key == "reason":
            job.reason = value
            continue
        items = [item.strip() for item in value.split(",") if item.strip()]
        if key == "input":
            job.inputs = items
        elif key == "output":
            job.outputs = items
        elif key == "log":
            job.log = items[0]
        elif key == "resources":
            job.resources = dict(item.split("=", 1) for item in items)
        else:
            job.wildcards = dict(item.split("=", 1) for item in items)
    return jobs


def stage_name(job: SnakemakeJob) -> str:
    """`rule-what`, from the job's log path: logs/scratch/pretrain/fe-s1.log -> pretrain-fe-s1,
    logs/scratch/finetune/sst2/fe-s1-f1.log -> finetune-sst2-fe-s1-f1, logs/continual/finetune/
    sst2/fe-s1-f1.log -> finetune-continual-sst2-fe-s1-f1; table2 -> table2. Folders that
    repeat the rule's name (pretrain in pretrain_continual) are left out. DVC allows no punctuation
    but _ and - in a stage name (dvc.stage.INVALID_STAGENAME_CHARS), so the dot of a Table 6 run name
    becomes _: logs/objectives/pretrain/pmlm.block-s1.log -> pretrain-objectives-pmlm_block-s1.
    (Not `rule@what`: DVC reads `name@key` as an item of a foreach stage.)"""
    parts = Path(job.log).with_suffix("").parts[1:]
    rest = [p for p in parts if p not in ("tables", DEFAULT_SETTING) and not job.rule.startswith(p)]
    return "-".join([job.rule, *rest]).replace(".", "_")


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def rule_files(workdir: Path) -> dict[str, str]:
    """{rule name: the .smk file that defines it}."""
    found = {}
    for path in sorted((workdir / "workflow" / "rules").glob("*.smk")):
        for name in re.findall(r"^rule (\w+):", path.read_text(), flags=re.MULTILINE):
            found[name] = str(path.relative_to(workdir))
    return found


def build_dvc_yaml(jobs: list[SnakemakeJob], configfiles: list[str], workdir: Path) -> dict:
    """The dvc.yaml content for `jobs`: {"stages": {name: stage}}."""
    # as Snakemake: the Snakefile's config/config.yaml first, then --configfile files on top
    files = [BASE_CONFIG, *[f for f in configfiles if f != BASE_CONFIG]]
    configs = [(f, load_yaml(workdir / f)) for f in files]
    merged: dict = {}
    for _, config in configs:
        deep_update(merged, config)
    defined_in = rule_files(workdir)
    flags = " ".join(f"--configfile {f}" for f in configfiles)
    stages = {}
    for job in sorted(jobs, key=stage_name):
        params: dict[str, list[str]] = {}
        for key in keys_read(merged, job.rule, job.wildcards):
            owner = [f for f, c in configs if _has_key(c, key)][-1]  # the last file that sets it wins
            params.setdefault(owner, []).append(key)
        metrics = [o for o in job.outputs if o.endswith("metrics.json")]
        stage = {
            # targets first: --allowed-rules and --configfile take several values
            "cmd": f"snakemake {' '.join(job.outputs)} --profile {DVC_STAGE_PROFILE} --allowed-rules {job.rule}"
            + (f" {flags}" if flags else ""),
            "deps": sorted({*job.inputs, defined_in[job.rule], *RULE_CODE}),
        }
        if params:
            stage["params"] = [{f: keys} for f, keys in params.items()]
        stage["outs"] = [o for o in job.outputs if o not in metrics]
        if metrics:
            stage["metrics"] = metrics
        name = stage_name(job)
        if name in stages:  # two jobs, one name: DVC would silently keep only the last
            raise ConfigError(f"two Snakemake jobs map to the DVC stage name {name!r}; make their log paths differ")
        stages[name] = stage
    return {"stages": stages, "plots": plots_of(jobs)}


# The curves of a run's curves/ folder that dvc.yaml declares, per kind of run: (plot id, file,
# field, title, DVC template). A fine-tuning run's dev metrics are one point at its last step:
# Table 1-4's numbers, not curves; its learning rate is the same schedule for every run of a
# group. Training losses are noisy step to step: DVC's "smooth" template draws them with a
# slider for LOESS smoothing.
CURVE_PLOTS = {
    "pretrain": (
        ("training-loss", "train/loss", "loss", "training loss (nats per masked token)", "smooth"),
        (
            "validation-loss",
            "validation/loss",
            "loss",
            "validation MLM loss, fixed masks (nats/masked token)",
            "linear",
        ),
        ("grad-norm", "train/grad_norm", "grad_norm", "gradient norm before clipping", "linear"),
        ("learning-rate", "train/lr", "lr", "learning rate", "linear"),
    ),
    "finetune": (
        ("training-loss", "train/loss", "loss", "training loss (cross-entropy, or squared error for STS-B)", "smooth"),
    ),
}


def plots_of(jobs: list[SnakemakeJob]) -> list:
    """dvc.yaml's top-level plots for `jobs`: one plot per curve (CURVE_PLOTS) and group of
    runs, every run of the group a line, then every PNG the jobs write. A group: the
    pre-training runs of a setting (or of a task's continual runs), or the fine-tuning runs of
    a setting and task (Table 3's checkpoint fine-tunings: "scratch-efficiency-<task>")."""
    groups: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        for output in job.outputs:
            if output.endswith("/curves"):
                run = Path(output).parent  # results/<setting>/(pretrain|finetune)/[<task>/]<run>
                kind = "pretrain" if "pretrain" in run.parts else "finetune"
                group = "-".join(p for p in run.parent.parts[1:] if p not in ("pretrain", "finetune"))
                groups.setdefault((kind, group), []).append(output)
    plots: list = []
    for (kind, group), folders in sorted(groups.items()):
        for plot_id, curve, field_name, title, template in CURVE_PLOTS[kind]:
            files = {f"{folder}/plots/metrics/{curve}.tsv": field_name for folder in sorted(folders)}
            what = "Pre-training" if kind == "pretrain" else "Fine-tuning"
            plots.append({f"{kind}-{group}-{plot_id}": {
                "title": f"{what} ({group}): {title}", "x": "step", "y": files, "template": template,
                "x_label": f"{what.lower()} step", "y_label": title,
            }})  # fmt: skip
    figures = sorted({o for job in jobs for o in job.outputs if o.endswith(".png")})
    return plots + figures


def _has_key(config: dict, key: str) -> bool:
    try:
        _lookup(config, key)
    except (KeyError, TypeError):
        return False
    return True


def render(dvc_yaml: dict, command: str) -> str:
    """dvc.yaml text, starting with a comment that says it is generated and by what."""
    header = (
        f"# Generated by `{command}` from the Snakemake DAG (fem/dvc_stages.py).\n"
        "# Do not edit: change the rules or the config, then regenerate. A test fails when\n"
        "# this file differs from a fresh generation.\n"
    )
    return header + yaml.safe_dump(dvc_yaml, sort_keys=False, width=1000)


def generate(targets: list[str], configfiles: list[str], workdir: str | Path = ".") -> str:
    """The dvc.yaml text for `targets` under `configfiles` (the Snakefile in `workdir`)."""
    workdir = Path(workdir)
    command = "fem dvc generate" + "".join(f" --configfile {f}" for f in configfiles) + " " + " ".join(targets)
    return render(build_dvc_yaml(dry_run_jobs(targets, configfiles, workdir), configfiles, workdir), command)


def drift(generated: str, committed_path: str | Path) -> str:
    """A unified diff between the committed dvc.yaml and a fresh generation ("" if equal)."""
    committed = Path(committed_path).read_text() if Path(committed_path).is_file() else ""
    return "".join(
        difflib.unified_diff(committed.splitlines(True), generated.splitlines(True), str(committed_path), "generated")
    )
