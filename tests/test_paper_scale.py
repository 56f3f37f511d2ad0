"""config/paper.yaml plans the full paper-scale job graph (a dry run: nothing is downloaded)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fem.config import deep_update, load_yaml

ROOT = Path(__file__).resolve().parent.parent
TABLES = [f"results/table{n}.csv" for n in range(1, 6)]


@pytest.fixture(scope="module")
def dry_run() -> str:
    env = os.environ | {
        "FEM_CHECK_SOURCES": "0",  # the hub is unreachable here; the plan must not need it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *TABLES, "--configfile", "config/paper.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


def test_paper_config_plans_every_table_with_the_expected_job_counts(dry_run):
    config: dict = {}
    for path in ("config/config.yaml", "config/paper.yaml"):
        deep_update(config, load_yaml(ROOT / path))
    seeds, finetune_seeds = len(config["seeds"]["pretrain"]), len(config["seeds"]["finetune"])
    strategies = config["pretrain"]["strategies"]
    tasks = config["finetune"]["tasks"]
    glue = [t for t in tasks if not t.startswith("squad")]
    continual = config["continual"]
    other_k = [k for k in config["segment_counts"]["segments"] if k != 7]  # K = 7 is Table 2's fe
    saved = [s for s in config["efficiency"]["steps"] if s != "final"]
    cont_runs = len(continual["tasks"]) * len(continual["strategies"]) * len(continual["seeds"]["pretrain"])
    expected = {
        "download_corpus": 1,
        "download_task": len(tasks) + len(continual["tasks"]),
        "task_text": len(continual["tasks"]),
        "tokenize": 1 + len(continual["tasks"]),
        "pretrain": (len(strategies) + len(other_k)) * seeds,
        "pretrain_continual": cont_runs,
        # Table 2 (GLUE x strategies), Table 4 (its tasks x the other K), Table 1 (continual runs)
        "finetune": len(glue) * len(strategies) * seeds * finetune_seeds
        + len(config["segment_counts"]["tasks"]) * len(other_k) * seeds * finetune_seeds
        + cont_runs * len(continual["seeds"]["finetune"]),
        "finetune_squad": (len(tasks) - len(glue)) * len(strategies) * seeds * finetune_seeds,
        "finetune_checkpoint": len(saved) * len(strategies) * seeds * finetune_seeds,
        "variance": 1 + len(strategies) * (len(config["variance"]["checkpoints"]) - 1),
        **{f"table{n}": 1 for n in range(1, 6)},
    }
    table = dry_run.split("Job stats:")[1]
    planned = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE) if rule != "total"}
    assert planned == expected
    assert planned["finetune"] == 990 and sum(planned.values()) == 1274  # the numbers the README gives


def test_paper_config_requests_gpus_for_the_training_rules(dry_run):
    jobs = re.split(r"^\[.*\]$", dry_run, flags=re.MULTILINE)  # each job starts with a [timestamp] line
    resources = {}
    for job in jobs:
        rule = re.search(r"^(?:local)?rule (\w+):", job, flags=re.MULTILINE)
        line = re.search(r"^\s+resources: (.*)$", job, flags=re.MULTILINE)
        if rule and line:
            resources[rule.group(1)] = dict(item.split("=", 1) for item in line.group(1).split(", "))
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["resources"]
    for rule in ("pretrain", "pretrain_continual", "finetune", "finetune_squad", "variance"):
        assert resources[rule]["gpu"] == "1", rule
        assert int(resources[rule]["runtime"]) == paper[rule]["runtime"], rule
        assert int(resources[rule]["mem_mb"]) == paper[rule]["mem_mb"], rule
    assert "gpu" not in resources["table2"]
