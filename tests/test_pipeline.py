"""End to end: the real `snakemake` on the micro config, in a copy of the repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["Snakefile", "workflow", "config", "fem", "tests/configs"]


def snakemake(workdir: Path, *args: str, mirror: Path) -> str:
    env = os.environ | {
        "FEM_HUB_MIRROR": str(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        # --configfile takes several values, so it goes after the targets
        [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "micro.yaml"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    return output


def planned(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: count}."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows if rule != "total"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    for name in COPIED:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, work / name)
    shutil.copy(ROOT / "tests" / "configs" / "micro.yaml", work / "micro.yaml")
    return work


@pytest.mark.slow
def test_pipeline_builds_table2_and_reruns_only_what_changed(workdir, mirror):
    plan = planned(snakemake(workdir, "-n", "results/table2.csv", mirror=mirror))
    assert plan == {"download_corpus": 1, "download_task": 2, "tokenize": 1, "pretrain": 2, "finetune": 4, "table2": 1}

    snakemake(workdir, "results/table2.csv", mirror=mirror)
    table = pd.read_csv(workdir / "results" / "table2.csv")
    assert table.task.tolist() == ["sst2", "stsb", "average"]
    assert table.metric.tolist()[:2] == ["accuracy", "pearson/spearman"]
    assert table[["random", "fe"]].notna().all().all()
    for strategy in ["random", "fe"]:  # the average row is the mean of the task rows
        assert table.loc[2, strategy] == pytest.approx(table.loc[:1, strategy].mean(), abs=0.01)
    stsb = json.loads((workdir / "results/scratch/finetune/stsb/fe-s1-f1/metrics.json").read_text())
    expected = 100 * (stsb["metrics"]["pearson"] + stsb["metrics"]["spearman"]) / 2
    assert table.loc[1, "fe"] == pytest.approx(expected, abs=0.01)
    assert (table.pretrain_seeds == 1).all() and (table.finetune_seeds == 1).all()
    assert "results/scratch/finetune/sst2/fe-s1-f1/metrics.json" in table.runs[0]
    markdown = (workdir / "results" / "table2.md").read_text()
    assert "Scale 'micro'" in markdown and "| stsb | pearson/spearman |" in markdown
    for run in ["pretrain/fe-s1", "pretrain/random-s1", "finetune/stsb/fe-s1-f1"]:
        assert (workdir / "results" / "scratch" / run / "provenance.json").is_file()

    pretrained = workdir / "results" / "scratch" / "pretrain" / "fe-s1"
    assert (pretrained / "checkpoints" / "step-3" / "config.json").is_file()  # pretrain.save_steps: [3]
    assert not (pretrained / "resume").exists()  # resumable state removed once the job is complete

    assert planned(snakemake(workdir, "-n", "results/table2.csv", mirror=mirror)) == {}

    # speed settings do not rerun finished jobs; science settings do
    config = yaml.safe_load((workdir / "micro.yaml").read_text())
    config["implementation"]["pretrain_resume_every"] = 1
    config["implementation"]["pretrain_accumulation_steps"] = 2
    (workdir / "micro.yaml").write_text(yaml.safe_dump(config))
    assert planned(snakemake(workdir, "-n", "results/table2.csv", mirror=mirror)) == {}
    config["pretrain"]["learning_rate"] = 5e-4
    (workdir / "micro.yaml").write_text(yaml.safe_dump(config))
    plan = planned(snakemake(workdir, "-n", "results/table2.csv", mirror=mirror))
    assert plan == {"pretrain": 2, "finetune": 4, "table2": 1}
