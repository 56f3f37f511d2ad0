"""Optimizer pieces shared by pre-training and fine-tuning: AdamW parameter groups and
the learning-rate schedules (linear warm-up, then linear or cosine decay to 0); pre-training's
AdamW and schedule (build_optimizer)."""

from __future__ import annotations

import math

import torch

from fem.settings import PretrainSettings

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


def finetuning_optimizer(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, warmup_ratio: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and the linear warm-up (warmup_ratio of total_steps) / linear decay schedule of
    the BERT fine-tuning recipe, shared by GLUE and SQuAD."""
    warmup = round(warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_schedule(s, warmup, total_steps))
    return optimizer, scheduler


def shared_step(model: torch.nn.Module, loss: torch.Tensor, share: float, optimizer, scheduler) -> float:
    """optimizer_step on this rank's mean `loss` times its `share` of the batch
    (fem.distributed.batch_share; 1 for one process); returns the unscaled loss (0 for an
    empty share). Every rank steps, an empty share too (factor 0), so each backward joins
    DistributedDataParallel's gradient all-reduce."""
    scaled = optimizer_step(model, loss * share, optimizer, scheduler)
    return scaled / share if share else 0.0


def optimizer_step(
    model: torch.nn.Module, loss: torch.Tensor, optimizer, scheduler, max_grad_norm: float = 1.0
) -> float:
    """Backward pass of `loss`, gradient clipping, one optimizer and scheduler step; returns
    the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    return loss.item()


def build_optimizer(model: torch.nn.Module, settings: PretrainSettings, fused: bool = False) -> tuple:
    """(AdamW, its learning-rate schedule) of a run: RoBERTa's betas and eps, no decay on
    biases and LayerNorm weights (fem.optimization.param_groups), warm-up then decay."""
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay), lr=settings.learning_rate, betas=(0.9, 0.98), eps=1e-6,
        fused=fused or None,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(settings.schedule, s, settings.warmup_steps, settings.steps)
    )
    return optimizer, scheduler
