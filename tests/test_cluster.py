"""A real SLURM cluster: the micro Table 2 through `snakemake --profile workflow/profiles/slurm`.

Needs a running SLURM controller that this machine can submit to. CI starts a single-node
cluster on localhost with scripts/slurm/start_local_cluster.sh (Debian's slurm-wlm, as
root); elsewhere deselect these tests with `-m "not cluster"`.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import copy_workflow, run, snakemake

ROOT = Path(__file__).resolve().parent.parent
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def slurm(*command: str) -> str:
    """Output of a SLURM command; a clear failure when there is no cluster to talk to."""
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} not found: start a cluster with scripts/slurm/start_local_cluster.sh (as root)")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr.strip()} (is the SLURM controller running?)"
    return done.stdout


def profile_for_this_cluster(folder: Path) -> Path:
    """workflow/profiles/slurm with only the site settings changed: this cluster's default
    partition, no account (no slurmdbd), job states from squeue (sacct needs slurmdbd), a
    quick first status check, and SLURM's job logs kept so the test can read them."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    partition = next(p for p in slurm("sinfo", "-h", "-o", "%P").split() if p.endswith("*")).rstrip("*")
    profile["default-resources"].pop("slurm_account")
    profile["default-resources"] |= {"slurm_partition": partition, "mem_mb": 1500}  # 2 jobs fit a laptop-size node
    profile |= {
        "slurm-no-account": True,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "latency-wait": 10,
    }
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def job_completion_records() -> dict[int, dict[str, str]]:
    """SLURM's own record of every finished job (JobCompType=jobcomp/filetxt): {JobId: fields}."""
    config = slurm("scontrol", "show", "config")
    location = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, flags=re.MULTILINE).group(1)
    records = {}
    for line in Path(location).read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        records[int(fields["JobId"])] = fields
    return records


def test_micro_table2_on_slurm_equals_the_local_run_and_dvc_records_it(tmp_path, mirror):
    """The documented cluster command, `make cluster-table2`, with the micro config: every
    training job through sbatch, then one `dvc commit` and one `dvc push` on the submit host."""
    slurm("sinfo")
    local = copy_workflow(tmp_path / "local")
    snakemake(local, "results/table2.csv", mirror=mirror)

    cluster = copy_workflow(tmp_path / "cluster")
    shutil.copy(ROOT / "Makefile", cluster / "Makefile")
    profile = profile_for_this_cluster(tmp_path / "profile")
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"FEM_HUB_MIRROR": str(mirror), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    run(["git", "init", "-q"], cluster, env)
    run(["dvc", "init", "-q"], cluster, env)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], cluster, env)
    tracked = ["Snakefile", "profiles", "workflow", "config", "fem", "micro.yaml", "Makefile", ".dvc"]
    run(["git", "add", *tracked], cluster, env)
    run(["git", "commit", "-qm", "pipeline"], cluster, env)
    # -o setup: use this interpreter's environment instead of building .venv in the copy
    output = run(["make", "-o", "setup", "cluster-table2", f"BIN={bin_dir}", f"SLURM_PROFILE={profile}",
                  "CONFIG=micro.yaml"], cluster, env)  # fmt: skip

    submitted = {int(job): Path(log) for job, log in SUBMITTED.findall(output)}
    rules = sorted(re.search(r"rule_(\w+)", str(log)).group(1) for log in submitted.values())
    # downloads and the table are localrules: run by snakemake itself, never submitted
    assert rules == ["finetune"] * 12 + ["pretrain"] * 6 + ["tokenize"], output[-3000:]  # random, random_k, fe
    assert re.search(r"^localrule download_corpus:", output, flags=re.MULTILINE)
    assert re.search(r"^localrule table2:", output, flags=re.MULTILINE)
    records = job_completion_records()
    for job, log in submitted.items():
        assert records[job]["JobState"] == "COMPLETED", records[job]
        assert Path(records[job]["WorkDir"]).resolve() == cluster.resolve()
        assert log.is_file() and "Finished jobid" in log.read_text(), log  # SLURM's log of the job step

    expected = pd.read_csv(local / "results" / "table2.csv")
    table = pd.read_csv(cluster / "results" / "table2.csv")
    pd.testing.assert_frame_equal(table, expected)  # same seeds, same numbers, wherever they ran
    assert "validation MLM loss" in (cluster / "logs" / "scratch" / "pretrain" / "fe-s1.log").read_text()

    # DVC recorded what the cluster computed: nothing is stale, and the remote holds it
    assert "up to date" in run(["dvc", "status", "--with-deps", "table2"], cluster, env)
    assert "are in sync" in run(["dvc", "status", "--cloud", "--with-deps", "table2"], cluster, env)
    assert len([f for f in (tmp_path / "remote").rglob("*") if f.is_file()]) > 20  # checkpoints, metrics, data
    lock = yaml.safe_load((cluster / "dvc.lock").read_text())["stages"]
    assert {"pretrain-fe-s1", "finetune-sst2-random-s2-f1", "table2"} <= set(lock)
    assert "micro.yaml" in lock["pretrain-fe-s1"]["params"]  # the parameters the jobs ran with
