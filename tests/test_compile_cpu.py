"""torch.compile of the encoder (inductor, here on the CPU) and bf16 autocast are speed switches
of the GPU fast path: a few real pre-training steps with each must give the per-step losses
and final weights of the eager float32 run up to floating-point rounding (float32 rounding
for compile, bfloat16 rounding for bf16), and compile must really compile.

Dropout is 0 (inductor draws its own random numbers, so with dropout the compiled run would
not follow eager's stream) and inductor falls back to torch's random ops anyway. Inductor
compiles with one thread into a cache folder of the test's own."""

import json

import numpy as np
import pytest
import torch
from helpers import pretrain_settings
from safetensors.torch import load_file

from fem.pretraining import pretrain
from fem.settings import PretrainImplementation

pytestmark = pytest.mark.slow

SETTINGS = pretrain_settings("fe", steps=5, log_every=1, dropout=0.0, save_steps=[0])  # step-0: the initialisation

# Bounds, from what was measured on the 2-core CPU (torch 2.13) and what a real bug does there.
# "update" is the relative difference of the trained update: |w - w_eager| / |w_eager - w_0|
# over all weights (L2); it is the weights' measure that separates rounding from a bug, since
# AdamW moves nearly-gradient-free weights by about lr in either direction, so their largest
# absolute difference is about lr for any change at all.
#   compile: losses equal, weights 2.0e-7 absolute, update 2.0e-7 (a compiled encoder whose output
#            is 1e-4 too large moves the weights by 2.9e-5: caught);
#   bf16:    losses <= 7.8e-5 nats apart, update 2.3e-3 (bfloat16 keeps 8 mantissa bits: 3.9e-3);
#   bugs in an eager float32 run: no weight decay: update 2.5e-4, weights 3.5e-6; learning rate x1.01:
#            update 9.9e-3, losses 6.1e-4 nats; x1.1: update 9.8e-2, losses 6.0e-3; max_grad_norm 0.9:
#            update 1.2e-2, losses 1.3e-4.
# The losses barely leave ln(vocabulary) = 10.33 in 5 steps (10.35 -> 10.28), so relative loss bounds
# must be tight to mean anything: bf16's bound is in nats, not 2e-2 relative (0.2 nats would accept any bug).
COMPILE_LOSS_RTOL, COMPILE_WEIGHT_ATOL, COMPILE_UPDATE = 1e-5, 1e-5, 5e-5  # catches no weight decay (2.5e-4)
BF16_LOSS_ATOL, BF16_UPDATE = 1e-3, 1e-2  # catches a learning rate 10% off (6.0e-3 nats, 9.8e-2)


def trained(packed, out, **switches) -> tuple[dict, list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(metrics, per-step training losses, initial weights, final weights) of SETTINGS with `switches`."""
    metrics = pretrain(packed, out, SETTINGS, PretrainImplementation(resume_every=0, **switches))
    log = json.loads((out / "train_log.json").read_text())
    initial = load_file(out / "checkpoints" / "step-0" / "model.safetensors")
    return metrics, log["loss"], initial, load_file(out / "model" / "model.safetensors")


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()  # compile in place: the same parameter names in the checkpoint
    return max((a[name] - b[name]).abs().max().item() for name in a)


def update_difference(initial: dict, reference: dict, other: dict) -> float:
    """|other - reference| / |reference - initial|, L2 over all weights."""
    difference = torch.cat([(other[name] - reference[name]).flatten() for name in reference])
    update = torch.cat([(reference[name] - initial[name]).flatten() for name in reference])
    return (difference.norm() / update.norm()).item()


def loss_differences(a: list[float], b: list[float]) -> np.ndarray:
    assert len(a) == len(b) == SETTINGS.steps
    return np.abs(np.subtract(a, b))


@pytest.fixture(scope="module")
def eager(packed, tmp_path_factory):
    return trained(packed, tmp_path_factory.mktemp("eager"))


@pytest.fixture
def inductor(tmp_path, monkeypatch):
    """Inductor with one compile thread, its cache in tmp_path, torch's own random ops; dynamo
    reset before and after, so the test neither reuses nor leaves compiled code."""
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    cache = tmp_path / "inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))  # read on every use
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")  # read when the config is imported ...
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)  # ... which it already was
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    counters.clear()
    yield cache
    torch._dynamo.reset()


def test_compile_changes_losses_and_weights_only_by_float32_rounding(packed, tmp_path, eager, inductor):
    from torch._dynamo.utils import counters

    eager_metrics, eager_losses, initial, eager_weights = eager
    metrics, losses, compiled_initial, weights = trained(packed, tmp_path / "run", compile=True)

    # compilation really happened: dynamo captured graphs, inductor compiled them into our cache
    assert counters["stats"]["unique_graphs"] > 0
    assert sum(counters["inductor"].values()) > 0
    assert inductor.is_dir() and any(path.is_file() for path in inductor.rglob("*"))
    assert metrics["implementation"]["compile"] is True and eager_metrics["implementation"]["compile"] is False

    assert largest_difference(initial, compiled_initial) == 0  # the same initialisation
    loss_difference = float(np.max(loss_differences(eager_losses, losses) / np.abs(eager_losses)))
    weight_difference = largest_difference(eager_weights, weights)
    update = update_difference(initial, eager_weights, weights)
    print(f"compile vs eager: losses {loss_difference:.1e}, weights {weight_difference:.1e}, update {update:.1e}")
    assert loss_difference < COMPILE_LOSS_RTOL
    assert weight_difference < COMPILE_WEIGHT_ATOL
    assert update < COMPILE_UPDATE
    assert metrics["validation_mlm_loss"] == pytest.approx(eager_metrics["validation_mlm_loss"], rel=COMPILE_LOSS_RTOL)
    assert eager_metrics["validation_mlm_loss"] < eager_metrics["validation_mlm_loss_init"]  # it trained


def test_bf16_changes_losses_and_weights_only_by_bfloat16_rounding(packed, tmp_path, eager):
    eager_metrics, eager_losses, initial, eager_weights = eager
    metrics, losses, _, weights = trained(packed, tmp_path, bf16=True)

    loss_difference = float(np.max(loss_differences(eager_losses, losses)))
    update = update_difference(initial, eager_weights, weights)
    print(f"bf16 vs eager: losses {loss_difference:.1e} nats, update {update:.1e}")
    assert update > 1e-5  # bf16 really changed the arithmetic, so the bounds below mean something
    assert loss_difference < BF16_LOSS_ATOL
    assert update < BF16_UPDATE
    assert metrics["validation_mlm_loss"] == pytest.approx(eager_metrics["validation_mlm_loss"], abs=BF16_LOSS_ATOL)
