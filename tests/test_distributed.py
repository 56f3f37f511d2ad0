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
from helpers import cli_args, pretrain_settings, save_tiny_checkpoint
from safetensors.torch import load_file

from fem.distributed import World, batch_share, rank_share

ROOT = Path(__file__).resolve().parent.parent


ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def fem_run(args: list[str], processes: int, log: Path) -> None:
    """`fem <args>` in one process, or under `torchrun --standalone --nproc_per_node N -m fem`
    as the rules launch it."""
    launcher = [sys.executable, "-m", "fem"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                    "-m", "fem"]  # fmt: skip
    result = subprocess.run(launcher + args, env=ENV, capture_output=True, text=True, timeout=600)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def pretrain_args(packed: Path, out: Path, strategy: str, accumulation_steps: int) -> list[str]:
    """`pretrain ...` flags of 5 steps (dropout off: its draws differ between processes)."""
    values = pretrain_settings(strategy, steps=5, log_every=1, dropout=0.0)
    return cli_args(packed, out, values, accumulation_steps=accumulation_steps, resume_every=0)[3:]


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
    fem_run(pretrain_args(packed, single, strategy, 2), 1, tmp_path / "single.log")
    fem_run(pretrain_args(packed, parallel, strategy, 1), 2, tmp_path / "ddp.log")

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
    # the logged norm is that of the whole step's gradient (after the all-reduce), not a rank's share
    assert np.allclose(log_one["grad_norm"], log_ddp["grad_norm"], rtol=1e-5)
    assert log_one["maskable"] == log_ddp["maskable"]
    metrics = json.loads((parallel / "metrics.json").read_text())
    assert metrics["processes"] == 2 and json.loads((single / "metrics.json").read_text())["processes"] == 1
    assert log_one["loss"][-1] < log_one["loss"][0]
    assert "2 processes" in (tmp_path / "ddp.log").read_text()


def test_two_process_ddp_finetuning_equals_one_process(mirror, tokenizer, tmp_path):
    """STS-B (regression: predictions are real numbers) fine-tuned from a dropout-free tiny
    BERT, batch 8 = 2 ranks x 4: the dev predictions of 2 processes equal those of 1."""
    from fem.data import download_task

    checkpoint = save_tiny_checkpoint(tmp_path / "model", tokenizer, dropout=0.0)
    task_dir = tmp_path / "stsb"
    download_task("stsb", task_dir, str(mirror))

    def args(out: Path) -> list[str]:
        return ["finetune", "--task", "stsb", "--task-dir", str(task_dir), "--checkpoint", str(checkpoint),
                "--out", str(out), "--seed", "1", "--max-train-examples", "25", "--max-eval-examples", "16",
                "--max-length", "64", "--epochs", "2", "--batch-size", "8", "--learning-rates", "[0.001]",
                "--warmup-ratio", "0.1", "--weight-decay", "0.01"]  # fmt: skip

    fem_run(args(tmp_path / "single"), 1, tmp_path / "single.log")
    # 25 examples: batches 4 + 4, and a last one of 1 (rank 1 joins with factor 0)
    fem_run(args(tmp_path / "ddp"), 2, tmp_path / "ddp.log")

    def predictions(out: Path) -> np.ndarray:
        with open(out / "predictions.csv") as handle:
            return np.array([float(row["prediction"]) for row in csv.DictReader(handle)])

    single, parallel = predictions(tmp_path / "single"), predictions(tmp_path / "ddp")
    assert len(single) == 16 and np.ptp(single) > 0  # real, varied predictions
    assert np.abs(single - parallel).max() < 1e-5
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2
    assert (tmp_path / "ddp" / "provenance.json").is_file()
