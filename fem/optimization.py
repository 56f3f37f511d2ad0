"""Optimizer pieces shared by pre-training and fine-tuning: AdamW parameter groups and
the learning-rate schedules (linear warm-up, then linear or cosine decay to 0)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")


def linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then linear decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def cosine_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then half a cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(name: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of schedule `name` ("linear" or "cosine") at `step` (0-based)."""
    if name == "linear":
        return linear_schedule(step, warmup_steps, total_steps)
    if name == "cosine":
        return cosine_schedule(step, warmup_steps, total_steps)
    raise ValueError(f"unknown learning-rate schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (BERT convention)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
