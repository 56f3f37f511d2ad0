"""The pre-training loop: a plain loop you can read top to bottom.

Data order and masks are pure functions of (seed, epoch, sequence index): step s takes
sequences s*S .. s*S+S-1 of an endless stream in which epoch e is a seeded permutation of
all training blocks. Model initialisation and dropout use torch's global seed.

Under `torchrun --nproc_per_node N` (fem/distributed.py) each process masks and trains on
its contiguous share of the step's sequences and DistributedDataParallel sums the
gradients: the step's global batch and gradient are those of one process. Rank 0 validates
and writes every file; the other ranks draw their own dropout stream.

Output folder (out_dir):
  model/                final model, loadable with AutoModelForMaskedLM.from_pretrained
  checkpoints/step-N/   intermediate models at the configured save_steps; step-0 is the initialisation
                        (each model folder has checkpoint_metrics.json: run, step, validation loss)
  train_log.json        per step (fem/train_log.py STEP_KEYS, all ranks) and the validation curve
  curves/               training and validation curves for `dvc plots` (fem/live_metrics.py): live
                        while the run trains (DVCLive), rewritten from train_log.json at the end
  metrics.json          validation MLM loss and masked-token accuracy (fixed masks) with their
                        unigram baselines, clipping, step size, throughput, settings
  resume/               while running: the resumable state and finished intermediate
                        checkpoints (removed when the run completes)

The end of a run is crash-safe: once the last step is trained its state is saved, the
outputs are written (checkpoints hard-linked out of resume/, never moved), and resume/ is
removed last. Killed at any instant, the same command again ends with every output
complete and identical (tests/test_crash_safety.py kills it at each step).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fem import objective_losses as objectives  # what each objective trains beyond the encoder
from fem.checkpointing import (
    fault_point,
    fingerprint,
    load_state,
    publish_folder,
    remove_state_folder,
    rng_state,
    save_model_folder,
    save_state,
    set_rng_state,
    write_json_atomic,
)
from fem.collation import MaskingSpec, mask_ratio_at, mask_rows, masking_spec, sequence_schedule
from fem.compute_matching import step_size
from fem.distributed import World, data_parallel, rank_share, seed_rank_stream, sum_over_ranks
from fem.errors import ConfigError
from fem.live_metrics import write_curves
from fem.modeling import build_model, mlm_parts
from fem.optimization import build_optimizer
from fem.registry import combination_problem
from fem.settings import PretrainImplementation, PretrainSettings
from fem.throughput import mfu, peak_flops, training_flops
from fem.tokenization import load_pretraining_blocks
from fem.train_log import (
    append_step,
    log_curves,
    log_live_points,
    new_log,
    record_validation,
    start_live_curves,
    step_summary,
    validation_metrics,
)
from fem.train_step import train_step

RESUME_DIR = "resume"
OUTPUTS = ("model", "checkpoints", "curves", "train_log.json", "metrics.json")  # what a finished run leaves in out_dir


def pretrain(
    data_dir: str | Path,
    out_dir: str | Path,
    settings: PretrainSettings,
    implementation: PretrainImplementation | None = None,
    world: World | None = None,
    before_cleanup: Callable[[], None] | None = None,
) -> dict:
    """Pre-train a BERT from scratch (or continue `settings.init_from`) on the packed blocks
    in `data_dir` (see the module docstring for what lands in `out_dir`); resumes from out_dir/resume when a state of
    the same run is there. `implementation` defaults to PretrainImplementation(). Under
    torchrun (`world` from fem.distributed.init_world, given by the CLI; default: one
    process), trains data-parallel (module docstring). `before_cleanup` runs on rank 0 once
    every output is written, before resume/ is removed (the CLI writes provenance.json
    there, so a kill before it is recorded loses no training). Returns the metrics on rank
    0, {} on the other ranks.

    The phases, in order: set_up (data, model, optimizer), start_or_resume, then per step
    train_on_step -> report_progress -> validate_and_save -> log_live_points -> save_resume_state,
    then finish."""
    run = set_up(data_dir, out_dir, settings, implementation or PretrainImplementation(), world or World())
    start_or_resume(run)
    live = start_live_curves(run.out_dir / "curves", run.log, settings.steps, run.implementation.live_metrics,
                             run.world.is_main)  # fmt: skip
    clock = Clock()
    for step in range(run.first_step, settings.steps):
        done = step + 1
        train_on_step(run, step, clock)
        if (done % settings.log_every == 0 or done == settings.steps) and run.world.is_main:
            report_progress(run, done, clock)
        validate_and_save(run, done)
        log_live_points(live, run.log, done, settings.steps, settings.log_every)
        resume_now = run.implementation.resume_every and done % run.implementation.resume_every == 0
        if (resume_now or done in settings.save_steps) and done < settings.steps:
            save_resume_state(run, done, clock)
    clock.loop_seconds = time.perf_counter() - clock.start
    live.close()
    if not run.world.is_main:  # rank 0 writes the results (the CLI's close_world waits for it)
        return {}
    return finish(run, clock, before_cleanup)


@dataclass
class Run:
    """What the phases of one pre-training run share. Shapes: train [blocks, block_size] and
    validation [validation_blocks, block_size] token ids (memory-mapped)."""

    settings: PretrainSettings
    implementation: PretrainImplementation
    world: World
    data_dir: Path
    out_dir: Path
    meta: dict  # the tokenized data's meta.json
    train: np.ndarray
    validation: np.ndarray
    word_starts: np.ndarray | None  # bool, like train; whole_word masking only
    spec: MaskingSpec
    per_step: int  # sequences per optimizer step, all ranks
    step_rows: int  # rows per optimizer step (sequences x copies), all ranks
    control_flops: float  # model FLOPs of the control step: rows_per_step rows of random-masked MLM
    my_share: slice  # this rank's sequences of every step
    model: torch.nn.Module
    loss_module: torch.nn.Module  # MaskedLMLoss, in DDP when data-parallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    peak: float | None  # the device's peak FLOP/s, for MFU
    run_id: str  # fingerprint of settings and data: a resume state of another run is ignored
    auxiliary: Callable[[int, int], float] | None  # FLOPs of the objective's other parts (fem.objective_losses)
    first_step: int = 0
    elapsed: float = 0.0  # seconds trained before this process (a resumed run)
    log: dict = field(default_factory=dict)  # fem/train_log.py
    epoch_cache: dict = field(default_factory=dict)  # sequence_schedule's permutations

    @property
    def work(self) -> Path:
        return self.out_dir / RESUME_DIR


@dataclass
class Clock:
    """Seconds and FLOPs counted by this process since its loop started."""

    start: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)  # time of the last progress line
    masking_seconds: float = 0.0  # in mask generation
    train_seconds: float = 0.0  # in whole training steps (masking included)
    step_flops: float = 0.0  # model FLOPs since the last progress line
    total_flops: float = 0.0  # model FLOPs of this process's run
    loop_seconds: float = 0.0  # the whole loop, once it ended


def set_up(
    data_dir: str | Path, out_dir: str | Path, settings: PretrainSettings, implementation: PretrainImplementation,
    world: World,
) -> Run:  # fmt: skip
    """Load and check the data, build the seeded model, its loss module and optimizer."""
    torch.set_num_threads(implementation.threads)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    whole_word, entities = settings.strategy == "whole_word", settings.entities  # salient_span: entity ids
    meta, train, validation, word_starts = load_pretraining_blocks(
        data_dir, settings.validation_blocks, whole_word, entities
    )
    problem = combination_problem(settings.objective, settings.strategy, settings.mask_ratio_schedule is not None)
    if problem:
        raise ConfigError(f"objective, strategy, mask_ratio_schedule: {problem}")
    spec = masking_spec(settings, meta)
    model = build_model(settings, meta, train.shape[1])
    auxiliary = objectives.auxiliary_forward_flops(settings, model.config, train.shape[1])  # MASS's decoder
    size = step_size(spec, settings.rows_per_step, settings.match, model.config, train, word_starts, auxiliary)
    per_step, step_rows = size.sequences, size.rows
    if per_step < world.size:
        raise ValueError(f"{per_step} sequences per step cannot be shared by {world.size} processes: "
                         f"raise rows_per_step ({settings.rows_per_step}) or start fewer processes")  # fmt: skip
    model.set_attn_implementation(implementation.attention)
    device = world.device()
    core = objectives.build_loss_module(model, settings, meta["mask_token_id"], train.shape[1])  # mass: + decoder
    core.to(device).train()
    seed_rank_stream(settings.seed, world)
    if implementation.compile:
        mlm_parts(model)[0].compile()  # the encoder, in place: parameter names and checkpoints are unchanged
    loss_module = data_parallel(core, world)  # DDP starts every rank from rank 0's weights
    optimizer, scheduler = build_optimizer(core, settings, implementation.fused_adamw)  # model first: mlm as before
    print(
        f"pretrain {settings.objective} {settings.strategy} seed {settings.seed}"
        f"{f' from {settings.init_from}' if settings.init_from else ''}: "
        f"{len(train)} train blocks of {train.shape[1]}, "
        f"K={spec.segments}, per step {per_step} sequences / {step_rows} rows (matched: {settings.match}; "
        f"{size.flops_ratio:.3f}x the model FLOPs of {settings.rows_per_step} MLM rows) "
        f"({implementation.accumulation_steps} micro-batch(es)), {objectives.parameter_count(model, core)}, "
        f"device {device}"
        f"{f', {world.size} processes' if world.distributed else ''}",
        flush=True,
    )  # every rank prints this line: a quick check that all of them started
    return Run(
        settings, implementation, world, data_dir, out_dir, meta, train, validation, word_starts, spec, per_step,
        step_rows, size.control_flops, rank_share(per_step, world), model, loss_module, optimizer, scheduler,
        device, peak_flops(device, implementation.peak_tflops), fingerprint(asdict(settings), meta), auxiliary,
    )  # fmt: skip


def start_or_resume(run: Run) -> None:
    """Continue from resume/state.pt when it holds a state of this very run; else start at
    step 0: validate the initialisation and save it as checkpoint step-0 when asked."""
    settings, world = run.settings, run.world
    state = load_state(run.work / "state.pt", run.run_id)
    if state is None:
        if world.is_main:  # only the writer clears the folder (another rank could remove step-0 below)
            shutil.rmtree(run.work, ignore_errors=True)
        run.first_step, run.elapsed, run.log = 0, 0.0, new_log()
        initial = validate(run, 0) if world.is_main else None
        if 0 in settings.save_steps and world.is_main:  # the initialisation, e.g. for the gradient-variance analysis
            save_checkpoint(run, 0, initial)
        return
    run.model.load_state_dict(state["model"])
    if state.get("auxiliary"):  # MASS's decoder (the encoder's shared embeddings come with the model)
        objectives.unwrapped(run.loss_module).load_state_dict(state["auxiliary"], strict=False)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    run.first_step, run.elapsed, run.log = state["step"], state["elapsed"], state["log"]
    seed_rank_stream(settings.seed, world, run.first_step)
    print(f"resumed from step {run.first_step} ({run.work / 'state.pt'})", flush=True)


def train_on_step(run: Run, step: int, clock: Clock) -> None:
    """Mask this rank's share of step `step`'s sequences and take one optimizer step; log it."""
    settings, world = run.settings, run.world
    tick = time.perf_counter()
    epochs, indices = sequence_schedule(step, run.per_step, len(run.train), settings.seed, run.epoch_cache)
    blocks = run.train[indices]  # every rank reads the whole step's blocks, to count its maskable positions
    maskable = run.spec.copies * int(np.count_nonzero(~np.isin(blocks, run.spec.special_ids)))
    epochs, indices, blocks = epochs[run.my_share], indices[run.my_share], blocks[run.my_share]
    word_starts = None if run.word_starts is None else run.word_starts[indices]
    spec = run.spec
    if settings.mask_ratio_schedule:  # p of this step (masks stay a function of seed, epoch, index and p)
        spec = replace(spec, mask_ratio=mask_ratio_at(step, settings.steps, settings.mask_ratio_schedule))
    rows = mask_rows(blocks, epochs, indices, spec, word_starts)
    clock.masking_seconds += time.perf_counter() - tick
    if run.implementation.pin_memory and run.device.type == "cuda":
        rows = rows.pin_memory()  # so the copy below runs asynchronously
    rows = rows.to(run.device, non_blocking=True)
    lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
    step_predictions = int(sum_over_ranks(len(rows.targets), world, run.device))
    loss, grad_norm = train_step(
        run.loss_module, rows, run.optimizer, run.scheduler, settings.max_grad_norm,
        run.implementation.accumulation_steps, bf16=run.implementation.bf16, world=world,
        total_predictions=step_predictions,
    )  # fmt: skip
    step_seconds = time.perf_counter() - tick  # .item() in train_step waited for the device
    clock.train_seconds += step_seconds
    length = rows.input_ids.shape[1]  # L, or an augmented row's T (this rank's; counted for all ranks)
    flops = training_flops(run.model.config, run.step_rows, length, step_predictions, run.auxiliary)
    clock.step_flops, clock.total_flops = clock.step_flops + flops, clock.total_flops + flops
    append_step(run.log, step=step + 1, loss=loss, lr=lr, sequences=run.per_step, rows=run.step_rows,
                predictions=step_predictions, maskable=maskable, grad_norm=grad_norm, seconds=step_seconds,
               length=length)  # fmt: skip


def report_progress(run: Run, done: int, clock: Clock) -> None:
    """One progress line: mean loss since the last line, learning rate, step size, tokens/s, MFU, ETA."""
    settings, log = run.settings, run.log
    now = time.perf_counter()
    recent = min(settings.log_every, done - run.first_step)
    eta = (now - clock.start) / (done - run.first_step) * (settings.steps - done)
    utilisation = mfu(clock.step_flops, now - clock.last, run.world.size, run.peak)
    print(
        f"step {done}/{settings.steps} loss {np.mean(log['loss'][-recent:]):.4f} lr {log['lr'][-1]:.2e} "
        f"seq/rows/preds {run.per_step}/{run.step_rows}/{log['predictions'][-1]} "
        f"tokens/s {run.step_rows * sum(log['length'][-recent:]) / (now - clock.last):,.0f}"
        f"{f' MFU {utilisation:.1%}' if utilisation is not None else ''} eta {eta:.0f}s",
        flush=True,
    )
    clock.last, clock.step_flops = now, 0.0


def validate_and_save(run: Run, done: int) -> None:
    """On rank 0: the validation loss on the fixed masks every validate_every steps, at the
    save steps and at the end; an intermediate checkpoint at the save steps."""
    settings = run.settings
    validate_now = settings.validate_every and done % settings.validate_every == 0
    if not ((validate_now or done in settings.save_steps or done == settings.steps) and run.world.is_main):
        return
    metrics = validate(run, done)
    if done in settings.save_steps and done < settings.steps:
        save_checkpoint(run, done, metrics)


def validate(run: Run, step: int) -> dict:
    """Validation MLM loss and accuracy at `step`, recorded in the log (fem/validation.py)."""
    core = objectives.unwrapped(run.loss_module)  # mass scores with its decoder (fem/mass.py)
    return record_validation(run.log, step, core, run.validation, run.settings.mask_ratio, run.meta,
                             core.validation_logits)  # fmt: skip


def save_checkpoint(run: Run, step: int, metrics: dict) -> None:
    """resume/checkpoints/step-N: the model at `step` and its checkpoint_metrics.json."""
    save_model_folder(
        run.model, run.work / "checkpoints" / f"step-{step}", run.data_dir / "tokenizer",
        {"checkpoint_metrics.json": checkpoint_record(run, step, metrics, final=False)},
    )  # fmt: skip


def checkpoint_record(run: Run, step: int, metrics: dict, final: bool) -> dict:
    """A saved model's checkpoint_metrics.json: which run and step it is (strategy, seed, K,
    step, final: the run's last step) and its validation loss and accuracy (`metrics`), so an
    analysis of the folder reads its identity from the folder, not from its path."""
    identity = {"strategy": run.settings.strategy, "seed": run.settings.seed, "segments": run.spec.segments}
    return identity | metrics | {"step": step, "final": final}


def save_resume_state(run: Run, step: int, clock: Clock) -> None:
    """On rank 0: resume/state.pt, everything a killed run needs to go on after `step`."""
    if not run.world.is_main:
        return
    save_state(run.work / "state.pt", {
        "fingerprint": run.run_id, "step": step, "elapsed": run.elapsed + time.perf_counter() - clock.start,
        "model": run.model.state_dict(), "auxiliary": objectives.auxiliary_state(run),  # mass: the decoder
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "rng": rng_state(),
        "log": run.log,
    })  # fmt: skip
    print(f"step {step}: saved resumable state", flush=True)


def finish(run: Run, clock: Clock, before_cleanup: Callable[[], None] | None) -> dict:
    """On rank 0, the crash-safe finishing sequence: keep the finished training resumable,
    write model, checkpoints, train_log.json and metrics.json, run `before_cleanup`, then
    remove resume/. Each step can be redone from resume/, which is removed last."""
    settings = run.settings
    if run.first_step < settings.steps:
        # Training is finished: keep it resumable until every output is written, so a job
        # killed while writing them reruns only this finishing sequence.
        save_resume_state(run, settings.steps, clock)
    fault_point("final-state")
    wall = run.elapsed + clock.loop_seconds
    curve = run.log["validation"]
    print(f"validation MLM loss {curve['loss'][0]:.4f} -> {curve['loss'][-1]:.4f}, masked-token accuracy "
          f"{curve['accuracy'][0]:.4f} -> {curve['accuracy'][-1]:.4f} ({wall:.1f}s)", flush=True)  # fmt: skip

    run.out_dir.mkdir(parents=True, exist_ok=True)
    final_metrics = {"validation_mlm_loss": curve["loss"][-1], "validation_masked_accuracy": curve["accuracy"][-1]}
    final_record = checkpoint_record(run, settings.steps, final_metrics, final=True)  # validated at the last step
    save_model_folder(
        run.model, run.out_dir / "model", run.data_dir / "tokenizer", {"checkpoint_metrics.json": final_record}
    )
    fault_point("model")
    publish_folder(run.work / "checkpoints", run.out_dir / "checkpoints")  # links: resume/ keeps its copy
    fault_point("checkpoints")
    write_curves(run.out_dir / "curves", log_curves(run.log, run.settings.steps))  # as with DVCLive or without
    fault_point("curves")
    write_json_atomic(run.out_dir / "train_log.json", run.log)
    fault_point("train-log")
    metrics = run_metrics(run, clock, wall)
    write_json_atomic(run.out_dir / "metrics.json", metrics, indent=2)
    fault_point("metrics")
    if before_cleanup is not None:
        before_cleanup()  # the CLI writes provenance.json
    fault_point("provenance")
    remove_state_folder(run.work)  # the run is complete; nothing left to resume
    return metrics


def run_metrics(run: Run, clock: Clock, wall: float) -> dict:
    """metrics.json of a finished run: its identity, validation results, step size, throughput, settings."""
    settings, log = run.settings, run.log
    trained_here = run.step_rows * sum(log["length"][run.first_step :])
    train_seconds = clock.train_seconds
    return {
        "objective": settings.objective,
        "strategy": settings.strategy,
        "seed": settings.seed,
        "mask_ratio_schedule": settings.mask_ratio_schedule,
        "segments": run.spec.segments,
        "copies_per_sequence": run.spec.copies,
        # validation loss and masked-token accuracy (final and at step 0), their unigram baselines
        **validation_metrics(log, run.train, run.validation, settings.mask_ratio, run.meta),
        "final_train_loss": float(np.mean(log["loss"][-settings.log_every :])),
        "train_tokens": run.step_rows * sum(log["length"]),  # augmented rows count their T tokens
        "match": settings.match,
        "rows_per_step": run.step_rows,
        "sequences_per_step": run.per_step,
        # predictions_per_step, flops_per_step, masking_ratio_per_row, clipped_share, grad_norm; under
        # match "rows" predictions differ slightly by design (random: round(p*n) per row; fe: n/K per row)
        **step_summary(log, settings.max_grad_norm, run.model.config, run.control_flops, run.auxiliary),
        "corpus": run.meta.get("corpus", {}),  # the corpus preparation's counts (documents, duplicates removed)
        "wall_seconds": wall,
        "resumed_from_step": run.first_step,
        # throughput of the training steps (masking included; validation and saving not)
        "tokens_per_second": trained_here / train_seconds if train_seconds > 0 else None,
        "model_flops_utilisation": mfu(clock.total_flops, train_seconds, run.world.size, run.peak),
        "peak_flops_per_device": run.peak,
        "processes": run.world.size,
        "masking_share": clock.masking_seconds / train_seconds if train_seconds > 0 else None,
        "attention": run.model.config._attn_implementation,
        "settings": asdict(settings),
        "implementation": asdict(run.implementation),
    }
