"""Model FLOPs and model FLOPs utilisation (MFU) of masked-LM training.

MFU = (FLOPs the model needs per second) / (the hardware's peak FLOPs per second), as in
the PaLM paper: recomputation and padding do not count, only the model's own matmuls.
Forward + backward = 3 x forward. With sparse prediction the LM head runs only at the
masked positions, so it is counted there only.
"""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peaks per GPU, in TFLOP/s (vendor data sheets, without sparsity).
# MFU is always quoted against the bf16 peak, also for float32 runs (as nanoGPT does).
PEAK_TFLOPS_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def encoder_forward_flops(
    hidden_size: int, intermediate_size: int, num_hidden_layers: int, rows: int, length: int
) -> float:
    """FLOPs of the encoder's forward pass over `rows` rows of `length` tokens: per layer the
    Q, K, V and output projections (4 d^2 per token), the feed-forward block (2 d ff) and the
    attention scores and weighted sum (2 L d per token). A multiply-add counts 2."""
    d, ff = hidden_size, intermediate_size
    tokens = rows * length
    per_layer = tokens * (2 * 4 * d * d + 2 * 2 * d * ff) + rows * 2 * 2 * length * length * d
    return num_hidden_layers * per_layer


def head_forward_flops(hidden_size: int, vocab_size: int, positions: int) -> float:
    """FLOPs of the LM head (dense transform + decoder to the vocabulary) at `positions`."""
    return positions * 2 * (hidden_size * hidden_size + hidden_size * vocab_size)


def training_flops(config, rows: int, length: int, predictions: int, auxiliary=None) -> float:
    """Model FLOPs of one training pass (forward + backward = 3 x forward) of a BERT-like
    model with transformers `config` over rows x length tokens, predicting `predictions`
    masked positions; `auxiliary(rows, length)`: forward FLOPs of an objective's other parts
    (fem.objective_losses.auxiliary_forward_flops: MASS's decoder), None: none."""
    encoder = encoder_forward_flops(
        config.hidden_size, config.intermediate_size, config.num_hidden_layers, rows, length
    )
    extra = auxiliary(rows, length) if auxiliary is not None else 0.0
    return 3 * (encoder + head_forward_flops(config.hidden_size, config.vocab_size, predictions) + extra)


def peak_flops(device: torch.device, peak_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one `device`: `peak_tflops` when given, else the bf16 peak of a known
    GPU by name, else None (CPUs, unknown GPUs: MFU is not reported)."""
    if peak_tflops:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for model, tflops in PEAK_TFLOPS_BF16.items():
        if model in name:
            return tflops * 1e12
    return None


def mfu(flops: float, seconds: float, devices: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation of `flops` done in `seconds` on `devices` devices of `peak`
    FLOP/s each; None when the peak is unknown."""
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (devices * peak)
