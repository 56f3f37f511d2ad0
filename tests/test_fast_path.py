"""The GPU fast path is a set of speed switches: on the CPU each must leave the trained model
equal up to floating-point rounding. And the FLOP count behind MFU matches a real model."""

import json

import pytest
import torch
from helpers import pretrain_settings
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from fem.pretraining import pretrain
from fem.settings import PretrainImplementation
from fem.throughput import mfu, peak_flops, training_flops

SETTINGS = pretrain_settings("fe", steps=6, log_every=3)


def trained(packed, out, **switches) -> tuple[dict, dict]:
    metrics = pretrain(packed, out, SETTINGS, PretrainImplementation(resume_every=0, **switches))
    return metrics, load_file(out / "model" / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def baseline(packed, tmp_path_factory):
    return trained(packed, tmp_path_factory.mktemp("baseline"))


@pytest.mark.parametrize(
    ("switches", "tolerance"),
    [
        ({"attention": "eager"}, 1e-5),  # plain matmul attention instead of SDPA: same math
        ({"fused_adamw": True}, 1e-6),  # one fused AdamW kernel instead of the foreach one
        ({"bf16": True}, 2e-2),  # bfloat16 forward: 8-bit mantissa, so a looser bound
    ],
)
def test_a_fast_path_switch_changes_the_model_only_by_rounding(packed, tmp_path, baseline, switches, tolerance):
    reference_metrics, reference = baseline
    metrics, model = trained(packed, tmp_path, **switches)
    assert reference_metrics["implementation"]["attention"] == reference_metrics["attention"] == "sdpa"
    assert metrics["implementation"] | switches == metrics["implementation"]  # recorded in metrics.json
    assert metrics["attention"] == switches.get("attention", "sdpa")  # the model really uses that kernel
    difference = max_difference(reference, model)
    assert difference < tolerance
    initial = reference_metrics["validation_mlm_loss_init"]
    assert metrics["validation_mlm_loss"] == pytest.approx(reference_metrics["validation_mlm_loss"], rel=tolerance)
    assert reference_metrics["validation_mlm_loss"] < initial  # both runs really trained


def test_the_switches_are_not_no_ops(packed, tmp_path, baseline):
    """bf16 must actually change the arithmetic (else the tolerance test above proves nothing)."""
    _, reference = baseline
    _, model = trained(packed, tmp_path, bf16=True)
    assert max_difference(reference, model) > 1e-7


def test_training_flops_match_six_times_the_parameters_of_a_real_model():
    """For short sequences the attention-score term is small, so forward + backward of the
    encoder is about 6 FLOPs per parameter per token (Kaplan et al.), counted here from the
    parameters of a real BERT; the LM head adds 6 x (its parameters) per predicted token."""
    config = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024)  # fmt: skip
    model = BertForMaskedLM(config)
    layers = sum(p.numel() for p in model.bert.encoder.parameters())
    rows, length = 3, 8
    encoder_only = training_flops(config, rows, length, predictions=0)
    assert encoder_only == pytest.approx(6 * layers * rows * length, rel=0.02)
    head = model.cls.predictions
    head_weights = head.transform.dense.weight.numel() + model.bert.embeddings.word_embeddings.weight.numel()
    assert training_flops(config, rows, length, 5) - encoder_only == pytest.approx(6 * head_weights * 5)


def test_model_flops_utilisation_and_its_logging(packed, tmp_path, capsys):
    assert mfu(2e12, 2.0, 2, 1e12) == 0.5
    assert mfu(1e12, 1.0, 1, None) is None
    assert peak_flops(torch.device("cpu")) is None and peak_flops(torch.device("cpu"), 2.0) == 2e12
    metrics = pretrain(packed, tmp_path, SETTINGS, PretrainImplementation(resume_every=0, peak_tflops=0.001))
    log = json.loads((tmp_path / "train_log.json").read_text())
    meta = json.loads((packed / "meta.json").read_text())
    config = BertConfig(vocab_size=meta["vocab_size"], hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    flops = sum(training_flops(config, r, 32, p) for r, p in zip(log["rows"], log["predictions"], strict=True))
    tokens = sum(log["rows"]) * 32
    seconds = tokens / metrics["tokens_per_second"]
    assert metrics["model_flops_utilisation"] == pytest.approx(flops / seconds / 1e9, rel=1e-6)
    assert metrics["peak_flops_per_device"] == 1e9 and metrics["processes"] == 1
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 3/6")]
    assert progress and " MFU " in progress[0] and "tokens/s" in progress[0]


@pytest.mark.slow
def test_gpu_fast_path_benchmark_runs_on_the_cpu(packed):
    """A few tiny steps of benchmarks/gpu_fast_path.py (fast path off and on): it must keep
    working for the GPU machine it is written for; the numbers are not asserted."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_fast_path.py"
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(packed), "--size", "tiny", "--steps", "5", "--warmup", "2",
         "--rows", "14"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("fast path off") and "tokens/s" in line for line in lines)
    assert any(line.startswith("fast path on") and "tokens/s" in line for line in lines)
    assert "speed-up of the fast path" in lines[-1]
