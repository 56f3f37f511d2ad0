"""Fine-tuning runs with their files: one run (finetune), or the learning-rate sweep that
`fem finetune` and `fem finetune-squad` run (sweep_learning_rates): fine-tune once per
learning rate and keep the run with the best dev score (the BERT recipe; note that the
reported dev score is then the maximum over the sweep). GLUE and classification tasks are
trained by glue.py, SQuAD by squad.py; each run's metrics.json is written once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fem.distributed import World
from fem.finetuning.glue import train_glue
from fem.finetuning.harness import CURVES, RunOutputs, write_run
from fem.finetuning.squad import train_squad
from fem.live_metrics import LiveCurves, write_curves
from fem.registry import Task
from fem.settings import FinetuneSettings, SquadSettings


def task_trainer(task: Task) -> Callable[..., RunOutputs]:
    """The task module's training function: train_squad for SQuAD, else train_glue."""
    return train_squad if task.is_qa else train_glue


def finetune(
    task: Task,
    task_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    settings: FinetuneSettings | SquadSettings,
    threads: int = 1,
    run_labels: dict | None = None,
    world: World | None = None,
    live_metrics: bool = True,
) -> dict:
    """One run at settings.learning_rate, no sweep: its files (glue.OUTPUTS or squad.OUTPUTS)
    written into `out_dir` by rank 0; returns its metrics.json. `live_metrics`: DVCLive
    appends to out_dir/curves while it trains (a speed setting: the files end the same)."""
    world = world or World()
    live = start_live(out_dir, live_metrics and world.is_main)
    outputs = task_trainer(task)(task, task_dir, checkpoint_dir, settings, threads, run_labels, world, live)
    live.close()
    if world.is_main:  # every rank evaluated the same weights; rank 0 writes
        write_run(out_dir, outputs)
    return outputs.result


def sweep_learning_rates(
    task: Task,
    task_dir: str | Path,
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    settings: FinetuneSettings | SquadSettings,
    learning_rates: list[float],
    threads: int = 1,
    run_labels: dict | None = None,
    world: World | None = None,
    live_metrics: bool = True,
) -> dict:
    """Fine-tune `checkpoint_dir` on `task` (data at `task_dir`) once per rate of
    `learning_rates` (`settings` with its learning_rate replaced; SQuAD tasks with
    SquadSettings, the others with FinetuneSettings) and keep the best dev score (the first
    of equal scores).

    Writes the kept run's files into `out_dir` (glue.OUTPUTS or squad.OUTPUTS), its
    metrics.json once, with "learning_rate" (the chosen one) and "learning_rate_sweep"
    ({rate: dev score}) added; returns that metrics.json. With several rates every run's own
    files go to out_dir/sweep/lr-<rate>/ too (kept for audit; an earlier sweep's are removed).
    Under torchrun every rank trains and evaluates; only rank 0 writes. `live_metrics`: DVCLive
    appends the running rate's curves to out_dir/curves while it trains, each rate starting
    them again; at the end the folder holds the kept run's (a speed setting: the same files)."""
    out_dir = Path(out_dir)
    world = world or World()
    train = task_trainer(task)
    several = len(learning_rates) > 1
    if several and world.is_main:
        shutil.rmtree(out_dir / "sweep", ignore_errors=True)  # runs of an earlier sweep are not this one's
    runs: dict[float, RunOutputs] = {}
    for learning_rate in learning_rates:
        run_settings = replace(settings, learning_rate=learning_rate)
        live = start_live(out_dir, live_metrics and world.is_main)
        runs[learning_rate] = train(task, task_dir, checkpoint_dir, run_settings, threads, run_labels, world, live)
        live.close()
        if several and world.is_main:
            write_run(out_dir / "sweep" / f"lr-{learning_rate:g}", runs[learning_rate])
    best = max(learning_rates, key=lambda lr: runs[lr].result["score"])  # the first of equal scores
    if several:
        print(f"learning rate {best:g} chosen on dev: " + ", ".join(
            f"{lr:g} -> {run.result['score']:.4f}" for lr, run in runs.items()), flush=True)  # fmt: skip
    result = runs[best].result | {
        "learning_rate": best,
        "learning_rate_sweep": {f"{lr:g}": run.result["score"] for lr, run in runs.items()},
    }
    if world.is_main:
        write_run(out_dir, runs[best], result)
    return result


def start_live(out_dir: str | Path, enabled: bool) -> LiveCurves:
    """DVCLive on an emptied out_dir/curves when `enabled` (rank 0, implementation.live_metrics);
    else nothing. A run that had written curves before (a killed job, the last rate of a sweep)
    leaves no points behind: DVCLive appends."""
    folder = Path(out_dir) / CURVES
    if enabled:
        write_curves(folder, {})
    return LiveCurves(folder, enabled)
