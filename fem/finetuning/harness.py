"""What every fine-tuning task shares: its data with the training subsample, the model set up
for training, the loop, the result of a run and its files.

A plain loop: AdamW, linear warm-up and decay (fem.optimization.finetuning_optimizer), batches
padded to their longest example by the task module. The training subsample (tiny scale) is
drawn with a fixed seed so that every strategy and seed sees the same examples; the
fine-tuning seed changes the head's initialisation, dropout and the order of examples.
Under torchrun every rank trains its share of each batch (fem.distributed) and evaluates the
same weights; only rank 0 writes files (the callers check `world.is_main`).

A task module (glue.py, squad.py) calls, in order: load_task_splits, start_training,
train_epochs, run_scores and run_outputs, and returns its RunOutputs; write_run writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fem.distributed import World, batch_share, data_parallel, seed_rank_stream
from fem.live_metrics import LiveCurves, curve_point, curve_stride, curves_from_log, is_curve_point, write_curves
from fem.metrics import task_score
from fem.optimization import finetuning_optimizer, shared_step
from fem.registry import Task
from fem.settings import FinetuneSettings, SquadSettings

SUBSAMPLE_SEED = 0  # the training subsample is the same for every strategy and seed
CURVES = "curves"  # a run's folder of curves for `dvc plots`, beside its metrics.json


@dataclass
class RunOutputs:
    """One fine-tuning run, not yet written: `result` is the content of its metrics.json,
    `files` its other output files ({file name: text}, e.g. predictions.csv), `curves` its
    curves for curves/ (run_curves)."""

    result: dict
    files: dict[str, str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def write_run(out_dir: str | Path, outputs: RunOutputs, metrics: dict | None = None) -> None:
    """Write a run's files, its curves/ folder (DVCLive's layout, fem/live_metrics.py) and its
    metrics.json (`metrics`, default its own result) into `out_dir`; each file once. Text is
    written as given (newline=""), so the CSV writer's line ends are kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.files.items():
        (out_dir / name).write_text(text, newline="")
    write_curves(out_dir / CURVES, outputs.curves)
    (out_dir / "metrics.json").write_text(json.dumps(outputs.result if metrics is None else metrics, indent=2) + "\n")


def load_task_splits(task: Task, task_dir: str | Path, settings: FinetuneSettings | SquadSettings, threads: int):
    """The task's data saved at `task_dir` (`fem download task`): (all splits as loaded, the
    training split subsampled to settings.max_train_examples with SUBSAMPLE_SEED,
    {dev split: its first settings.max_eval_examples examples} for each of task.eval_splits).
    Also sets torch's CPU threads to `threads`. ValueError names any missing split."""
    import datasets

    torch.set_num_threads(threads)
    data = datasets.load_from_disk(str(task_dir))
    missing = [split for split in ("train", *task.eval_splits) if split not in data]
    if missing:
        raise ValueError(f"{task_dir}: no split(s) {missing} for task {task.name}; it has {list(data)}")
    train = data["train"]
    if settings.max_train_examples is not None and len(train) > settings.max_train_examples:
        keep = np.random.default_rng(SUBSAMPLE_SEED).permutation(len(train))[: settings.max_train_examples]
        train = train.select(np.sort(keep))
    devs = {}
    for split in task.eval_splits:
        dev = data[split]
        if settings.max_eval_examples is not None and len(dev) > settings.max_eval_examples:
            dev = dev.select(range(settings.max_eval_examples))
        devs[split] = dev
    return data, train, devs


@dataclass
class Training:
    """A model set up for fine-tuning on `examples` training examples (or SQuAD features)."""

    model: torch.nn.Module
    trainer: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    examples: int
    steps_per_epoch: int
    total_steps: int
    order_rng: np.random.Generator  # the order of examples in each epoch
    settings: FinetuneSettings | SquadSettings
    world: World
    started: float = 0.0  # time.perf_counter() when training began (train_epochs sets it)
    learning_rates: list[float] = field(default_factory=list)  # the rate of each step (train_epochs)


def start_training(
    load_model: Callable[[], torch.nn.Module], examples: int, settings: FinetuneSettings | SquadSettings, world: World
) -> Training:
    """Seed torch with settings.seed, load the model (`load_model()`: its fresh head draws from
    that stream, the same on every rank), move it to this rank's device, give ranks > 0
    their own dropout stream, and set up the optimizer for settings.epochs passes over
    `examples` in batches of settings.batch_size."""
    torch.manual_seed(settings.seed)
    model = load_model()
    device = world.device()
    model.to(device).train()
    seed_rank_stream(settings.seed, world)
    trainer = data_parallel(model, world)
    steps_per_epoch = -(-examples // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    optimizer, scheduler = finetuning_optimizer(
        model, settings.learning_rate, settings.weight_decay, settings.warmup_ratio, total_steps
    )
    order_rng = np.random.default_rng(settings.seed)
    return Training(model, trainer, device, optimizer, scheduler, examples, steps_per_epoch, total_steps, order_rng,
                    settings, world)  # fmt: skip


def train_epochs(
    training: Training,
    batch_inputs: Callable[[np.ndarray], dict[str, torch.Tensor]],
    log_every: int | None = None,
    live: LiveCurves | None = None,
) -> list[float]:
    """settings.epochs passes over the training examples in a fresh random order each;
    `batch_inputs(rows)` gives the model's keyword arguments (tensors on training.device,
    the loss's targets included) for this rank's share of a batch (example indices, int64).
    Prints the mean loss of each epoch, and every `log_every` steps (rank 0) the progress;
    `live` (DVCLive, rank 0) gets the training curves' points as they come (run_curves).
    Records each step's learning rate in training.learning_rates. Returns this rank's loss
    of every step."""
    settings, world = training.settings, training.world
    training.started = time.perf_counter()
    stride = curve_stride(training.total_steps)
    losses: list[float] = []
    for epoch in range(settings.epochs):
        order = training.order_rng.permutation(training.examples)
        for step in range(training.steps_per_epoch):
            rows = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            rows, share = batch_share(rows, world)  # under torchrun: this rank's slice
            loss = training.trainer(**batch_inputs(rows)).loss
            training.learning_rates.append(float(training.scheduler.get_last_lr()[0]))  # this step's rate
            losses.append(shared_step(training.model, loss, share, training.optimizer, training.scheduler))
            done = epoch * training.steps_per_epoch + step + 1
            if live is not None and is_curve_point(done, stride, training.total_steps):
                live.log(done, {"train/loss": curve_point(losses, done, stride, "loss"),
                                "train/lr": training.learning_rates[-1]})  # fmt: skip
            if log_every and done % log_every == 0 and world.is_main:
                elapsed = time.perf_counter() - training.started
                print(
                    f"step {done}/{training.total_steps} loss {np.mean(losses[-log_every:]):.4f} "
                    f"elapsed {elapsed:.0f}s eta {elapsed / done * (training.total_steps - done):.0f}s",
                    flush=True,
                )
        print(
            f"epoch {epoch + 1}/{settings.epochs} mean loss {np.mean(losses[-training.steps_per_epoch :]):.4f}",
            flush=True,
        )
        if live is not None:
            live.flush()  # metrics.json and the DVC extension follow once per epoch
    return losses


def run_curves(training: Training, losses: list[float], metrics: dict[str, float]) -> dict[str, list]:
    """The curves of a finished run for its curves/ folder ({"group/name": [(step, value)]}):
    training loss (mean over the steps of a point) and learning rate at the curve points of its
    training.total_steps steps, and each dev metric of `metrics` as one validation point at the
    last step. The same points DVCLive appended while it trained (train_epochs), so the files
    end the same with it on or off."""
    steps = list(range(1, len(losses) + 1))
    per_step = {"loss": losses, "lr": training.learning_rates}
    validation = {name: [value] for name, value in metrics.items()}
    return curves_from_log(steps, per_step, curve_stride(training.total_steps), training.total_steps, validation,
                           [len(losses)])  # fmt: skip


def run_scores(
    metrics: dict[str, float], trivial_metrics: dict[str, float], scored: tuple[str, ...], trivial_predictor: str
) -> dict:
    """The scores of a run as metrics.json holds them: its metrics, the names of those that
    make up its score (their mean), and the same for the trivial predictor (described by
    `trivial_predictor`) on the same dev examples."""
    return {
        "metrics": metrics,
        "metric_names": list(scored),
        "score": task_score(metrics, scored),
        "trivial_metrics": trivial_metrics,
        "trivial_score": task_score(trivial_metrics, scored),
        "trivial_predictor": trivial_predictor,
    }


def run_outputs(task: Task, run_labels: dict | None, scores: dict, details: dict, training: Training,
                losses: list[float], files: dict[str, str]) -> RunOutputs:  # fmt: skip
    """A finished run, not yet written: its metrics.json (run_result), its other `files`, and its
    curves (run_curves) with the dev metrics that make up its score."""
    scored = {name: scores["metrics"][name] for name in scores["metric_names"]}
    return RunOutputs(run_result(task, run_labels, scores, details, training, losses), files,
                      run_curves(training, losses, scored))  # fmt: skip


def run_result(task: Task, run_labels: dict | None, scores: dict, details: dict, training: Training,
               losses: list[float]) -> dict:  # fmt: skip
    """metrics.json of a run: the task, `run_labels` (strategy, seeds, ...: tables group runs by
    them, never by path), `scores` (run_scores), the task's `details` (example counts), then
    the steps, the last epoch's mean training loss (rank 0's examples under torchrun; None
    without a step), the wall time of training and evaluation in seconds, the number of
    processes and the settings. Prints the dev metrics."""
    wall = time.perf_counter() - training.started
    print(f"{task.name} dev: " + ", ".join(f"{k} {v:.4f}" for k, v in scores["metrics"].items()), flush=True)
    return {
        "task": task.name,
        "run": run_labels or {},
        **scores,
        **details,
        "steps": training.total_steps,
        "final_train_loss": float(np.mean(losses[-training.steps_per_epoch :])) if losses else None,
        "wall_seconds": wall,
        "processes": training.world.size,
        "settings": asdict(training.settings),
    }
