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
  checkpoints/step-N/   intermediate models at the configured save_steps (+ checkpoint_metrics.json);
                        step-0 is the initialisation
  train_log.json        per step: loss, lr, sequences, rows, predictions, maskable (positions
                        of the step's rows that could be masked), grad_norm (pre-clip total
                        gradient norm), all ranks; seconds (wall time of the step, masking
                        included); validation curve: step, loss, accuracy (fem/validation.py)
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

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

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
from fem.collation import MaskingSpec, mask_rows
from fem.distributed import World, data_parallel, rank_share, seed_rank_stream, sum_over_ranks
from fem.masking import SpanShape, resolve_segments
from fem.modeling import build_bert, load_pretrained_mlm, mlm_parts, sparse_mlm_loss
from fem.optimization import lr_multiplier, param_groups
from fem.settings import PretrainImplementation, PretrainSettings
from fem.throughput import mfu, peak_flops, training_flops
from fem.tokenization import load_blocks, load_meta
from fem.train_log import append_step, new_log, record_validation, step_summary, validation_metrics

RESUME_DIR = "resume"
OUTPUTS = ("model", "checkpoints", "train_log.json", "metrics.json")  # what a finished run leaves in out_dir


def sequence_schedule(
    step: int, per_step: int, n_blocks: int, seed: int, cache: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, block indices) of the `per_step` sequences of optimizer step `step`.

    Sequence number c = step * per_step + j of the endless stream is block
    permutation_e[c % n_blocks] of epoch e = c // n_blocks, where permutation_e is seeded by
    (seed, e). `cache` keeps the permutations of the epochs in use between calls.
    """
    counter = step * per_step + np.arange(per_step)
    epochs, positions = counter // n_blocks, counter % n_blocks
    needed = {int(e) for e in np.unique(epochs)}
    for epoch in set(cache) - needed:
        del cache[epoch]
    for epoch in needed - set(cache):
        cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    indices = np.empty(per_step, dtype=np.int64)
    for epoch in needed:
        in_epoch = epochs == epoch
        indices[in_epoch] = cache[epoch][positions[in_epoch]]
    return epochs, indices


class MaskedLMLoss(torch.nn.Module):
    """The summed sparse MLM loss of `model` as a module, so DistributedDataParallel can
    wrap it (DDP's gradient hooks fire on its forward)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, masked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sparse_mlm_loss(self.model, input_ids, masked, targets, reduction="sum")


def train_step_with_norm(
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
                loss = loss_module(part.input_ids, part.masked, part.targets)
            loss = loss / total_predictions * world.size  # (x / n * 1 is x / n exactly: one process as before)
            loss.backward()
        step_loss += loss.item() / world.size
    # after DDP's all-reduce every rank holds the same gradient, so the same norm
    norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), max_grad_norm)  # the model's order: same sum
    optimizer.step()
    scheduler.step()
    return sum_over_ranks(step_loss, world, device), norm.item()


def train_step(*args, **kwargs) -> float:
    """train_step_with_norm (same arguments), returning only the mean loss."""
    return train_step_with_norm(*args, **kwargs)[0]


def masking_spec(settings: PretrainSettings, meta: dict) -> MaskingSpec:
    """How a run masks its training rows: the strategy and masking keys of `settings`, the
    tokenizer's special ids from `meta` (the tokenized data's meta.json)."""
    return MaskingSpec(
        strategy=settings.strategy,
        seed=settings.seed,
        mask_ratio=settings.mask_ratio,
        segments=resolve_segments(settings.mask_ratio, settings.segments),
        replacement=settings.replacement,
        mask_token_id=meta["mask_token_id"],
        vocab_size=meta["vocab_size"],
        special_ids=tuple(meta["unmaskable_token_ids"]),
        span=SpanShape(settings.span["geometric_p"], int(settings.span["max_length"])),
    )


def build_model(settings: PretrainSettings, meta: dict, block_size: int) -> torch.nn.Module:
    """The model a run starts from (on the CPU): seeded with settings.seed, a BERT of the
    settings' shape, or settings.init_from continued (its MLM head fresh when not shipped)."""
    torch.manual_seed(settings.seed)  # also seeds a fresh MLM head of a pretrained encoder
    if settings.init_from:
        return load_pretrained_mlm(settings.init_from, meta["vocab_size"])
    return build_bert(
        vocab_size=meta["vocab_size"],
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=max(512, block_size),
        pad_token_id=meta["pad_token_id"],
        dropout=settings.dropout,
    )


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
    0, {} on the other ranks."""
    implementation = implementation or PretrainImplementation()
    torch.set_num_threads(implementation.threads)
    world = world or World()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    work = out_dir / RESUME_DIR
    meta = load_meta(data_dir)  # checked: a damaged or truncated file is named, with how to rebuild it
    train = load_blocks(data_dir, "train", meta)
    wanted_by = "pretrain.validation_blocks (continual.pretrain.validation_blocks for continual runs)"
    validation = load_blocks(data_dir, "validation", meta, settings.validation_blocks, wanted_by)
    validation = validation[: settings.validation_blocks]
    word_starts = load_blocks(data_dir, "train_word_starts", meta) if settings.strategy == "whole_word" else None
    block_size = train.shape[1]
    special = tuple(meta["unmaskable_token_ids"])
    spec = masking_spec(settings, meta)
    per_step, step_rows = spec.step_size(settings.rows_per_step, settings.match)  # all ranks
    if per_step < world.size:
        raise ValueError(
            f"{per_step} sequences per step cannot be shared by {world.size} processes: "
            f"raise rows_per_step ({settings.rows_per_step}) or start fewer processes"
        )
    my_share = rank_share(per_step, world)  # this rank's sequences of every step

    model = build_model(settings, meta, block_size)
    model.set_attn_implementation(implementation.attention)
    device = world.device()
    model.to(device).train()
    seed_rank_stream(settings.seed, world)
    if implementation.compile:
        mlm_parts(model)[0].compile()  # the encoder, in place: parameter names and checkpoints are unchanged
    loss_module = MaskedLMLoss(model)
    loss_module = data_parallel(loss_module, world)  # DDP starts every rank from rank 0's weights
    optimizer, scheduler = build_optimizer(model, settings, implementation.fused_adamw)
    print(
        f"pretrain {settings.strategy} seed {settings.seed}"
        f"{f' from {settings.init_from}' if settings.init_from else ''}: "
        f"{len(train)} train blocks of {block_size}, "
        f"K={spec.segments}, per step {per_step} sequences / {step_rows} rows (matched: {settings.match}) "
        f"({implementation.accumulation_steps} micro-batch(es)), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, device {device}"
        f"{f', {world.size} processes' if world.distributed else ''}",
        flush=True,
    )  # every rank prints this line: a quick check that all of them started
    peak = peak_flops(device, implementation.peak_tflops)

    run_id = fingerprint(asdict(settings), meta)
    state = load_state(work / "state.pt", run_id)
    if state is None:
        if world.is_main:  # only the writer clears the folder (another rank could remove step-0 below)
            shutil.rmtree(work, ignore_errors=True)
        first_step, elapsed, log = 0, 0.0, new_log()
        initial = record_validation(log, 0, model, validation, settings.mask_ratio, meta) if world.is_main else None
        if 0 in settings.save_steps and world.is_main:  # the initialisation, e.g. for the gradient-variance analysis
            save_model_folder(
                model, work / "checkpoints" / "step-0", data_dir / "tokenizer", {"checkpoint_metrics.json": initial}
            )
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        first_step, elapsed, log = state["step"], state["elapsed"], state["log"]
        seed_rank_stream(settings.seed, world, first_step)
        print(f"resumed from step {first_step} ({work / 'state.pt'})", flush=True)

    def save_resume_state(step: int) -> None:
        if not world.is_main:
            return
        save_state(work / "state.pt", {
            "fingerprint": run_id, "step": step, "elapsed": elapsed + time.perf_counter() - start,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "log": log,
        })  # fmt: skip
        print(f"step {step}: saved resumable state", flush=True)

    epoch_cache: dict = {}
    masking_seconds = train_seconds = 0.0  # time in mask generation / in whole training steps
    step_flops = total_flops = 0.0  # model FLOPs since the last progress line / of this process's run
    start = last = time.perf_counter()
    for step in range(first_step, settings.steps):
        done = step + 1
        tick = time.perf_counter()
        epochs, indices = sequence_schedule(step, per_step, len(train), settings.seed, epoch_cache)
        blocks = train[indices]  # every rank reads the whole step's blocks, to count its maskable positions
        maskable = spec.copies * int(np.count_nonzero(~np.isin(blocks, special)))
        epochs, indices, blocks = epochs[my_share], indices[my_share], blocks[my_share]
        rows = mask_rows(blocks, epochs, indices, spec, None if word_starts is None else word_starts[indices])
        masking_seconds += time.perf_counter() - tick
        if implementation.pin_memory and device.type == "cuda":
            rows = rows.pin_memory()  # so the copy below runs asynchronously
        rows = rows.to(device, non_blocking=True)
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        step_predictions = int(sum_over_ranks(len(rows.targets), world, device))
        loss, grad_norm = train_step_with_norm(
            loss_module, rows, optimizer, scheduler, settings.max_grad_norm, implementation.accumulation_steps,
            bf16=implementation.bf16, world=world, total_predictions=step_predictions,
        )  # fmt: skip
        step_seconds = time.perf_counter() - tick  # .item() in train_step waited for the device
        train_seconds += step_seconds
        flops = training_flops(model.config, step_rows, block_size, step_predictions)
        step_flops, total_flops = step_flops + flops, total_flops + flops
        append_step(log, step=done, loss=loss, lr=lr, sequences=per_step, rows=step_rows, predictions=step_predictions,
                    maskable=maskable, grad_norm=grad_norm, seconds=step_seconds)  # fmt: skip

        if (done % settings.log_every == 0 or done == settings.steps) and world.is_main:
            now = time.perf_counter()
            recent = min(settings.log_every, done - first_step)
            eta = (now - start) / (done - first_step) * (settings.steps - done)
            utilisation = mfu(step_flops, now - last, world.size, peak)
            print(
                f"step {done}/{settings.steps} loss {np.mean(log['loss'][-recent:]):.4f} lr {lr:.2e} "
                f"seq/rows/preds {per_step}/{step_rows}/{step_predictions} "
                f"tokens/s {recent * step_rows * block_size / (now - last):,.0f}"
                f"{f' MFU {utilisation:.1%}' if utilisation is not None else ''} eta {eta:.0f}s",
                flush=True,
            )
            last, step_flops = now, 0.0
        validate_now = settings.validate_every and done % settings.validate_every == 0
        if (validate_now or done in settings.save_steps or done == settings.steps) and world.is_main:
            now_metrics = record_validation(log, done, model, validation, settings.mask_ratio, meta)
            if done in settings.save_steps and done < settings.steps:
                save_model_folder(
                    model, work / "checkpoints" / f"step-{done}", data_dir / "tokenizer",
                    {"checkpoint_metrics.json": now_metrics},
                )  # fmt: skip
        resume_now = implementation.resume_every and done % implementation.resume_every == 0
        if (resume_now or done in settings.save_steps) and done < settings.steps:
            save_resume_state(done)
    loop_seconds = time.perf_counter() - start
    if not world.is_main:  # rank 0 writes the results (the CLI's close_world waits for it)
        return {}
    if first_step < settings.steps:
        # Training is finished: keep it resumable until every output is written, so a job
        # killed while writing them reruns only this finishing sequence.
        save_resume_state(settings.steps)
    fault_point("final-state")
    wall = elapsed + loop_seconds
    curve = log["validation"]
    print(f"validation MLM loss {curve['loss'][0]:.4f} -> {curve['loss'][-1]:.4f}, masked-token accuracy "
          f"{curve['accuracy'][0]:.4f} -> {curve['accuracy'][-1]:.4f} ({wall:.1f}s)", flush=True)  # fmt: skip

    # The finishing sequence. Each step can be redone from resume/, which is removed last.
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_folder(model, out_dir / "model", data_dir / "tokenizer")
    fault_point("model")
    publish_folder(work / "checkpoints", out_dir / "checkpoints")  # links: resume/ keeps its copy
    fault_point("checkpoints")
    write_json_atomic(out_dir / "train_log.json", log)
    fault_point("train-log")
    tokens = settings.steps * step_rows * block_size
    trained_here = (settings.steps - first_step) * step_rows * block_size
    metrics = {
        "strategy": settings.strategy,
        "seed": settings.seed,
        "segments": spec.segments,
        "copies_per_sequence": spec.copies,
        # validation loss and masked-token accuracy (final and at step 0), their unigram baselines
        **validation_metrics(log, train, validation, settings.mask_ratio, meta),
        "final_train_loss": float(np.mean(log["loss"][-settings.log_every :])),
        "train_tokens": tokens,
        "match": settings.match,
        "rows_per_step": step_rows,
        "sequences_per_step": per_step,
        # predictions_per_step, flops_per_step, masking_ratio_per_row, clipped_share, grad_norm; under
        # match "rows" predictions differ slightly by design (random: round(p*n) per row; fe: n/K per row)
        **step_summary(log, settings.max_grad_norm, model.config, block_size),
        "corpus": meta.get("corpus", {}),  # the corpus preparation's counts (documents, duplicates removed)
        "wall_seconds": wall,
        "resumed_from_step": first_step,
        # throughput of the training steps (masking included; validation and saving not)
        "tokens_per_second": trained_here / train_seconds if train_seconds > 0 else None,
        "model_flops_utilisation": mfu(total_flops, train_seconds, world.size, peak),
        "peak_flops_per_device": peak,
        "processes": world.size,
        "masking_share": masking_seconds / train_seconds if train_seconds > 0 else None,
        "attention": model.config._attn_implementation,
        "settings": asdict(settings),
        "implementation": asdict(implementation),
    }
    write_json_atomic(out_dir / "metrics.json", metrics, indent=2)
    fault_point("metrics")
    if before_cleanup is not None:
        before_cleanup()  # the CLI writes provenance.json
    fault_point("provenance")
    remove_state_folder(work)  # the run is complete; nothing left to resume
    return metrics
