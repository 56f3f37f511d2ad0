"""A real SLURM cluster: the micro Table 2 through `snakemake --profile workflow/profiles/slurm`.

Needs a running SLURM controller that this machine can submit to. CI starts a single-node
cluster on localhost with scripts/slurm/start_local_cluster.sh (Debian's slurm-wlm, as
root); elsewhere deselect these tests with `-m "not cluster"`.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_pipeline import copy_workflow, snakemake

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


def test_micro_table2_on_slurm_equals_the_local_run(tmp_path, mirror):
    slurm("sinfo")
    local = copy_workflow(tmp_path / "local")
    snakemake(local, "results/table2.csv", mirror=mirror)

    cluster = copy_workflow(tmp_path / "cluster")
    profile = profile_for_this_cluster(tmp_path / "profile")
    # snakemake() adds --cores 2; the profile's executor sends every non-local job to sbatch
    output = snakemake(cluster, "--profile", str(profile), "results/table2.csv", mirror=mirror)

    submitted = {int(job): Path(log) for job, log in SUBMITTED.findall(output)}
    rules = sorted(re.search(r"rule_(\w+)", str(log)).group(1) for log in submitted.values())
    # downloads and the table are localrules: run by snakemake itself, never submitted
    assert rules == ["finetune"] * 8 + ["pretrain"] * 4 + ["tokenize"], output[-3000:]
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
    assert (cluster / "logs" / "scratch" / "pretrain" / "fe-s1.log").read_text().count("validation MLM loss") >= 1
