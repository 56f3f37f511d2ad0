"""Data parallelism under torchrun: which process this is, and its share of a step.

`torchrun --nproc_per_node N -m fem.cli pretrain ...` starts N copies of the same command
with RANK, WORLD_SIZE and LOCAL_RANK set. Each copy trains a replica of the model on its
own contiguous slice of the step's sequences; DistributedDataParallel sums the gradients
(NCCL on GPUs, gloo on CPU). The masks stay a pure function of (seed, epoch, sequence
index), so the global batch of a step is the same whatever N is, and N processes give the
gradient of one process that accumulates the same step in micro-batches.

Without torchrun (WORLD_SIZE unset) everything here is a no-op for a world of one.
Only rank 0 writes files (`World.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes of one job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # index of this process on its node: its GPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, saves checkpoints and writes results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self) -> torch.device:
        """This rank's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def init_world() -> World:
    """The World of this process, from torchrun's environment variables; with WORLD_SIZE > 1
    also joins the process group (NCCL when CUDA is available, else gloo)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    world = World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))
    if world.distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            if world.local_rank >= torch.cuda.device_count():
                raise RuntimeError(
                    f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                    "start torchrun with --nproc_per_node <= the GPUs of the job"
                )
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world


def close_world(world: World) -> None:
    """Leave the process group (no-op for a world of one). No barrier: the other ranks may
    finish while rank 0 still writes results, which can outlast a collective's timeout;
    torchrun waits for every process anyway."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_share(count: int, world: World) -> slice:
    """This rank's contiguous share of `count` items: ranks get floor or ceil of count/N,
    lower ranks the larger shares (as numpy.array_split), so the shares tile 0..count-1."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


def data_parallel(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel when there are several ranks (gradients are
    averaged over ranks in backward), else `model` itself."""
    if not world.distributed:
        return model
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def batch_share(batch: np.ndarray, world: World) -> tuple[np.ndarray, float]:
    """This rank's examples of a fine-tuning `batch` (example indices), and the factor that
    turns the mean loss over them into its part of the batch mean under DDP's averaging:
    share/batch x ranks. An empty share (a last batch smaller than the world) returns the
    batch's first example with factor 0, so this rank still joins the gradient all-reduce."""
    mine = batch[rank_share(len(batch), world)]
    if len(mine) == 0:
        return batch[:1], 0.0
    return mine, len(mine) / len(batch) * world.size


def sum_over_ranks(value: float, world: World, device: torch.device) -> float:
    """`value` summed over every rank (float64 all-reduce); the value itself for one rank."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


def seed_rank_stream(seed: int, world: World, step: int = 0) -> None:
    """Give each rank > 0 its own torch random stream (dropout) after the shared model
    initialisation, or after resuming at `step`; rank 0 keeps the stream of a
    single-process run (or the one saved in the resumable state). Without this every rank
    would draw the same dropout masks for different sequences."""
    if world.rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, world.rank, step]).generate_state(1)[0]))
