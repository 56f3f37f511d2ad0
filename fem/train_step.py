"""One optimizer step of masked-LM pre-training, on one process or data-parallel.

MaskedLMLoss wraps a BertForMaskedLM so DistributedDataParallel can wrap the loss; train_step
accumulates micro-batches, clips the gradient and steps the optimizer and its schedule.
"""

from __future__ import annotations

import contextlib

import torch

from fem.distributed import World, sum_over_ranks
from fem.modeling import masked_logits, sparse_mlm_loss


class MaskedLMLoss(torch.nn.Module):
    """The summed sparse MLM loss of `model` as a module, so DistributedDataParallel can
    wrap it (DDP's gradient hooks fire on its forward)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        masked: torch.Tensor,
        targets: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return sparse_mlm_loss(self.model, input_ids, masked, targets, "sum", position_ids, attention)

    def validation_logits(self, input_ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """The logits [M, V] this objective scores a plain masked row with (input_ids int64 [R, L],
        masked bool [R, L]): the encoder and its head (fem.modeling.masked_logits)."""
        return masked_logits(self.model, input_ids, masked)


def train_step(
    loss_module: torch.nn.Module,
    rows,
    optimizer,
    scheduler,
    max_grad_norm: float,
    accumulation_steps: int,
    bf16: bool = False,
    world: World | None = None,
    total_predictions: int | None = None,
) -> tuple[float, float]:
    """One optimizer step on this rank's `rows`, in `accumulation_steps` micro-batches;
    returns (the mean loss over the step's masked tokens of all ranks (`total_predictions`,
    summed over the ranks here when not given), the total gradient norm before clipping to
    `max_grad_norm`: the L2 norm over all parameters of the whole step's gradient).

    Each micro-batch adds sum-loss / (masked tokens of the whole step, all ranks) to the
    gradient, times the number of ranks because DDP averages over them: the step's gradient
    is that of the whole global batch. `loss_module` is a MaskedLMLoss, wrapped in
    DistributedDataParallel when world.size > 1 (gradients are then summed once, after the
    last micro-batch). bf16: forward pass under bfloat16 autocast (weights and optimizer
    stay float32)."""
    if not isinstance(loss_module, MaskedLMLoss | torch.nn.parallel.DistributedDataParallel):
        raise TypeError(f"train_step needs a MaskedLMLoss (or DDP of one), got {type(loss_module).__name__}")
    world = world or World()
    device = rows.input_ids.device
    if total_predictions is None:
        total_predictions = int(sum_over_ranks(len(rows.targets), world, device))
    optimizer.zero_grad(set_to_none=True)
    parts = [part for part in rows.split(accumulation_steps) if world.distributed or len(part.targets) > 0]
    step_loss = 0.0
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        sync = contextlib.nullcontext() if last or not world.distributed else loss_module.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_module(part.input_ids, part.masked, part.targets, part.position_ids, part.attention)
            loss = loss / total_predictions * world.size  # (x / n * 1 is x / n exactly: one process as before)
            loss.backward()
        step_loss += loss.item() / world.size
    # after DDP's all-reduce every rank holds the same gradient, so the same norm
    norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), max_grad_norm)  # the model's order: same sum
    optimizer.step()
    scheduler.step()
    return sum_over_ranks(step_loss, world, device), norm.item()
