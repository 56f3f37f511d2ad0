"""Settings of one pre-training or fine-tuning run, as plain dataclasses.

They live apart from the training code so the CLI can build its flags without importing
torch. Each field is one config key; the CLI has one required flag per field.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainSettings:
    """Science settings of one pre-training run (the config's pretrain and model keys)."""

    strategy: str  # "random" | "fe"
    seed: int
    mask_ratio: float  # p
    segments: int | str  # K, or "auto" = round(1/p)
    replacement: dict[str, float]  # {"mask", "random", "keep"} shares, summing to 1
    steps: int  # optimizer steps
    rows_per_step: int  # masked rows per step, equal across strategies
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    validation_blocks: int
    log_every: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


@dataclass(frozen=True)
class FinetuneSettings:
    """Settings of one fine-tuning run (the config's finetune keys plus the seed)."""

    seed: int
    max_train_examples: int | None
    max_eval_examples: int | None
    max_length: int
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
