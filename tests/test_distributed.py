"""Data-parallel training under torchrun (gloo on CPU): N processes give the result of one
process that accumulates the same global batch."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fem.distributed import World, batch_share, rank_share

ROOT = Path(__file__).resolve().parent.parent


def torchrun(processes: int, args: list[str], log: Path) -> None:
    """`torchrun --standalone --nproc_per_node N -m fem <args>` (as the rules launch it)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command + ["-m", "fem", *args], env=env, capture_output=True, text=True, timeout=600)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def pretrain_args(packed: Path, out: Path, strategy: str, accumulation_steps: int) -> list[str]:
    values = dict(
        strategy=strategy, seed=3, mask_ratio=0.15, segments="auto",
        replacement={"mask": 0.8, "random": 0.1, "keep": 0.1}, span={"geometric_p": 0.2, "max_length": 10},
        steps=5, rows_per_step=14, learning_rate=1e-3, schedule="linear", warmup_steps=1, weight_decay=0.01,
        max_grad_norm=1.0, validation_blocks=8, validate_every=0, save_steps=[], log_every=1, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        dropout=0.0,  # dropout draws differ between processes; everything else must not
        accumulation_steps=accumulation_steps, resume_every=0,
    )  # fmt: skip
    args = ["pretrain", "--data", str(packed), "--out", str(out)]
    for key, value in values.items():
        args += ["--" + key.replace("_", "-"), json.dumps(value)]
    return args


def test_rank_shares_tile_the_batch():
    for count in (1, 2, 7, 14, 15):
        for size in (1, 2, 3):
            shares = [rank_share(count, World(rank, size)) for rank in range(size)]
            covered = np.concatenate([np.arange(count)[s] for s in shares])
            assert covered.tolist() == list(range(count))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1
    batch = np.array([5, 9, 2])
    mine, factor = batch_share(batch, World(1, 2))
    assert mine.tolist() == [2] and factor == pytest.approx(1 / 3 * 2)
    assert batch_share(batch[:1], World(1, 2)) == (batch[:1], 0.0)  # an empty share still joins all-reduce


@pytest.mark.parametrize("strategy", ["fe", "random"])
def test_two_process_ddp_equals_one_process_with_accumulation(packed, tmp_path, strategy):
    """fe: 2 sequences x 7 copies per step, one per rank; random: 14 sequences, 7 per rank.
    After 5 AdamW steps every parameter agrees within 1e-6, and so do the logged losses."""
    single, parallel = tmp_path / "single", tmp_path / "ddp"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "fem", *pretrain_args(packed, single, strategy, 2)],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun(2, pretrain_args(packed, parallel, strategy, 1), tmp_path / "ddp.log")

    reference = load_file(single / "model" / "model.safetensors")
    distributed = load_file(parallel / "model" / "model.safetensors")
    assert reference.keys() == distributed.keys()
    for name, value in reference.items():
        assert (value - distributed[name]).abs().max().item() < 1e-6, name
    log_one = json.loads((single / "train_log.json").read_text())
    log_ddp = json.loads((parallel / "train_log.json").read_text())
    assert np.allclose(log_one["loss"], log_ddp["loss"], rtol=1e-6)
    assert log_one["rows"] == log_ddp["rows"] == [14] * 5  # the global batch, summed over ranks
    assert log_one["predictions"] == log_ddp["predictions"]
    metrics = json.loads((parallel / "metrics.json").read_text())
    assert metrics["processes"] == 2 and json.loads((single / "metrics.json").read_text())["processes"] == 1
    assert log_one["loss"][-1] < log_one["loss"][0]
    assert "2 processes" in (tmp_path / "ddp.log").read_text()


def test_two_process_ddp_finetuning_equals_one_process(mirror, tokenizer, tmp_path):
    """STS-B (regression: predictions are real numbers) fine-tuned from a dropout-free tiny
    BERT, batch 8 = 2 ranks x 4: the dev predictions of 2 processes equal those of 1."""
    from fem.data import download_task
    from fem.modeling import build_bert

    checkpoint = tmp_path / "model"
    torch.manual_seed(0)
    build_bert(len(tokenizer), 32, 1, 2, 64, dropout=0.0).save_pretrained(str(checkpoint))
    tokenizer.save_pretrained(str(checkpoint))
    task_dir = tmp_path / "stsb"
    download_task("stsb", task_dir, str(mirror))

    def args(out: Path) -> list[str]:
        return ["finetune", "--task", "stsb", "--task-dir", str(task_dir), "--checkpoint", str(checkpoint),
                "--out", str(out), "--seed", "1", "--max-train-examples", "25", "--max-eval-examples", "16",
                "--max-length", "64", "--epochs", "2", "--batch-size", "8", "--learning-rates", "[0.001]",
                "--warmup-ratio", "0.1", "--weight-decay", "0.01", "--metrics", "[pearson, spearman]"]  # fmt: skip

    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "fem", *args(tmp_path / "single")], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun(
        2, args(tmp_path / "ddp"), tmp_path / "ddp.log"
    )  # 25 examples: batches 4 + 4, and a last one of 1 (rank 1 joins with factor 0)

    def predictions(out: Path) -> np.ndarray:
        with open(out / "predictions.csv") as handle:
            return np.array([float(row["prediction"]) for row in csv.DictReader(handle)])

    single, parallel = predictions(tmp_path / "single"), predictions(tmp_path / "ddp")
    assert len(single) == 16 and np.ptp(single) > 0  # real, varied predictions
    assert np.abs(single - parallel).max() < 1e-5
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2
    assert (tmp_path / "ddp" / "provenance.json").is_file()
