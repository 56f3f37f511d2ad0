"""config/paper.yaml plans the full paper-scale job graph (a dry run: nothing is downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import planned

from fem.config import deep_update, load_yaml
from fem.dvc_stages import SnakemakeJob, parse_dry_run

ROOT = Path(__file__).resolve().parent.parent
TABLES = [f"results/table{n}.csv" for n in range(1, 6)]


def plan(*args: str) -> str:
    """Output of `snakemake -n <args>` in the repository (nothing runs or is submitted)."""
    env = os.environ | {
        "FEM_CHECK_SOURCES": "0",  # the hub is unreachable here; the plan must not need it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dry_run() -> str:
    return plan(*TABLES, "--configfile", "config/paper.yaml")


def test_paper_config_plans_every_table_with_the_expected_job_counts(dry_run):
    config: dict = {}
    for path in ("config/config.yaml", "config/paper.yaml"):
        deep_update(config, load_yaml(ROOT / path))
    seeds, finetune_seeds = len(config["seeds"]["pretrain"]), len(config["seeds"]["finetune"])
    strategies = config["pretrain"]["strategies"]
    tasks = config["finetune"]["tasks"]
    glue = [t for t in tasks if not t.startswith("squad")]
    continual = config["continual"]
    other_k = [k for k in config["segment_counts"]["segments"] if k != 7]  # K = 7 is Table 2's fe and random_k
    saved = [s for s in config["efficiency"]["steps"] if s != "final"]
    cont_runs = len(continual["tasks"]) * len(continual["strategies"]) * len(continual["seeds"]["pretrain"])
    expected = {
        "download_corpus": 1,
        "download_task": len(tasks) + len(continual["tasks"]),
        "task_text": len(continual["tasks"]),
        "tokenize": 1 + len(continual["tasks"]),
        "pretrain": (len(strategies) + 2 * len(other_k)) * seeds,  # Table 4: fe-k<K> and random_k-k<K>
        "pretrain_continual": cont_runs,
        # Table 2 (GLUE x strategies), Table 4 (its tasks x the other K), Table 1 (continual runs)
        "finetune": len(glue) * len(strategies) * seeds * finetune_seeds
        + len(config["segment_counts"]["tasks"]) * 2 * len(other_k) * seeds * finetune_seeds
        + cont_runs * len(continual["seeds"]["finetune"]),
        "finetune_squad": (len(tasks) - len(glue)) * len(strategies) * seeds * finetune_seeds,
        "finetune_checkpoint": len(saved) * len(strategies) * seeds * finetune_seeds,
        "variance": 1 + len(strategies) * (len(config["variance"]["checkpoints"]) - 1),
        **{f"table{n}": 1 for n in range(1, 6)},
    }
    counts = planned(dry_run)
    assert counts == expected
    assert counts["finetune"] == 1485 and sum(counts.values()) == 1858  # the numbers the README gives


def test_paper_config_requests_gpus_for_the_training_rules(dry_run):
    resources = {job.rule: job.resources for job in parse_dry_run(dry_run)}
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["resources"]
    for rule in ("pretrain", "pretrain_continual", "finetune", "finetune_squad", "variance"):
        assert int(resources[rule]["gpu"]) == paper[rule]["gpu"] >= 1, rule
        assert int(resources[rule]["runtime"]) == paper[rule]["runtime"], rule
        assert int(resources[rule]["mem_mb"]) == paper[rule]["mem_mb"], rule
    assert "gpu" not in resources["table2"]


def test_the_slurm_profile_plans_paper_table2_with_gpu_requests_and_torchrun():
    """Acceptance: `snakemake -n --configfile config/paper.yaml --profile workflow/profiles/slurm
    results/table2.csv` plans every job with its SLURM resources; a rule given N GPUs starts
    torchrun with N processes in one SLURM task (no `tasks`, which the plugin would turn
    into one task per GPU)."""
    jobs = parse_dry_run(plan("-p", "results/table2.csv", "--configfile", "config/paper.yaml",
                             "--profile", "workflow/profiles/slurm"))  # fmt: skip
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["resources"]
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    site = {k: str(v) for k, v in profile["default-resources"].items() if k.startswith("slurm_")}
    assert set(site) == {"slurm_account", "slurm_partition"}  # only the profile names them
    by_rule: dict[str, list[SnakemakeJob]] = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)
    assert {rule: len(group) for rule, group in by_rule.items()} == {
        "download_corpus": 1, "download_task": 11, "tokenize": 1, "pretrain": 9, "finetune": 405,
        "finetune_squad": 90, "table2": 1,
    }  # fmt: skip
    # (a dry run prints every job as `rule`; tests/test_cluster.py checks the localrules for real)
    for rule in ("pretrain", "finetune", "finetune_squad"):
        for job in by_rule[rule]:
            requested = job.resources
            assert requested.items() >= site.items()
            for key in ("gpu", "cpus_per_gpu", "mem_mb", "runtime"):
                assert int(requested[key]) == paper[rule][key], (rule, key)
            assert "tasks" not in requested and "tasks_per_gpu" not in requested
            gpus = paper[rule]["gpu"]
            assert requested.get("nodes") == ("1" if gpus > 1 else None)  # torchrun --standalone: one node
            launcher = f"torchrun --standalone --nproc_per_node {gpus} -m fem " if gpus > 1 else "fem "
            assert job.shell.startswith(launcher), job.shell[:80]
    assert paper["pretrain"]["gpu"] > 1  # so the torchrun path is planned here
    assert not any("gpu" in job.resources for job in by_rule["tokenize"] + by_rule["table2"])
    tokenize = by_rule["tokenize"][0].resources
    assert int(tokenize["runtime"]) == paper["tokenize"]["runtime"] and int(tokenize["cpus_per_task"]) >= 1


def test_paper_config_plans_table6_with_the_expected_job_counts_and_gpus():
    """Acceptance (#17): `snakemake -n results/table6.csv --configfile config/paper.yaml` plans every
    objective's BERT-base run with its GPU resources, and their fine-tunings."""
    config: dict = {}
    for path in ("config/config.yaml", "config/paper.yaml"):
        deep_update(config, load_yaml(ROOT / path))
    objectives, seeds = config["objectives"], config["seeds"]
    runs = len(objectives["runs"]) * len(seeds["pretrain"])
    jobs = parse_dry_run(plan("-p", "results/table6.csv", "--configfile", "config/paper.yaml"))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    assert counts == {"download_corpus": 1, "download_task": len(objectives["tasks"]), "tokenize": 1, "pretrain": runs,
                      "finetune": runs * len(objectives["tasks"]) * len(seeds["finetune"]), "table6": 1,
                      "coarse_vocab": 1, "entities": 1}  # fmt: skip
    assert counts["pretrain"] == 45 and counts["finetune"] == 1800  # the numbers the README gives
    paper = config["resources"]
    for job in jobs:
        if job.rule in ("pretrain", "finetune"):
            assert job.wildcards["setting"] == "objectives"
            assert {key: int(job.resources[key]) for key in ("gpu", "mem_mb", "runtime")} == {
                key: paper[job.rule][key] for key in ("gpu", "mem_mb", "runtime")}  # fmt: skip
    pmlm = next(job for job in jobs if job.rule == "pretrain" and job.wildcards["strategy"] == "pmlm.fe")
    for flag in ("--objective '\"pmlm\"'", "--strategy '\"fe\"'", "--steps 1000000", "--rows-per-step 280",
                 "--hidden-size 768", "--save-steps '[]'"):  # fmt: skip
        assert flag in pmlm.shell
    decay = next(job for job in jobs if job.rule == "pretrain" and job.wildcards["strategy"] == "random.decay")
    assert '--mask-ratio-schedule \'{"end": 0.15, "start": 0.3}\'' in decay.shell
