"""train_log.json of a pre-training run: its keys, the validation curve, and the summaries of
both that metrics.json reports.

Per step (lists of equal length, all processes counted): step, loss (mean over the step's
masked tokens), lr, sequences (distinct), rows, predictions (masked tokens), maskable
(positions of the step's rows that could be masked: all but special tokens), grad_norm (the
total gradient norm before clipping), seconds, length (tokens per row: L, or T of an
augmented objective's rows, fem/augmented.py). The validation curve "validation": step, loss
and accuracy on the fixed validation masks (fem/validation.py), at step 0 and after the
validated steps. Everything metrics.json derives from the log is computed from the log
alone, so a resumed run (whose log comes back with its state) reports the same.
"""

from __future__ import annotations

import math

import numpy as np

from fem.live_metrics import LiveCurves, curve_point, curve_stride, curves_from_log, is_curve_point, write_curves
from fem.throughput import training_flops
from fem.validation import unigram_baseline, validate, validation_targets

CURVE_KEYS = ("loss", "lr", "grad_norm")  # the per-step keys drawn as training curves (fem/live_metrics.py)
STEP_KEYS = ("step", "loss", "lr", "sequences", "rows", "predictions", "maskable", "grad_norm", "seconds", "length")


def new_log() -> dict:
    """An empty train_log.json: one list per step key, and the validation curve."""
    return {key: [] for key in STEP_KEYS} | {"validation": {"step": [], "loss": [], "accuracy": []}}


def append_step(log: dict, **values: float) -> None:
    """Append one step's values to `log`: exactly the keys STEP_KEYS."""
    if set(values) != set(STEP_KEYS):
        raise ValueError(f"a train-log step needs the keys {STEP_KEYS}, got {tuple(values)}")
    for key, value in values.items():
        log[key].append(value)


def record_validation(
    log: dict, step: int, model, blocks: np.ndarray, mask_ratio: float, meta: dict, logits_fn=None
) -> dict:
    """Validate `model` after `step` steps on the fixed masks of `blocks` (fem.validation.validate,
    `logits_fn` as there), append the result to log["validation"] and return it as a
    checkpoint's checkpoint_metrics.json."""
    result = validate(model, blocks, mask_ratio, meta["unmaskable_token_ids"], meta, logits_fn)
    for key, value in (("step", step), ("loss", result.loss), ("accuracy", result.accuracy)):
        log["validation"][key].append(value)
    print(f"step {step}: validation MLM loss {result.loss:.4f}, masked-token accuracy {result.accuracy:.4f}",
          flush=True)  # fmt: skip
    return {"step": step, "validation_mlm_loss": result.loss, "validation_masked_accuracy": result.accuracy}


def step_summary(log: dict, max_grad_norm: float, model_config, control_flops: float, auxiliary=None) -> dict:
    """What the run's steps were, from its train log (so a resumed run gives the same): mean
    predictions (masked tokens; pmlm counts its autoencoding and autoregressive ones), tokens
    and model FLOPs per step, the FLOPs' ratio to `control_flops` (a step of rows_per_step
    random-masked MLM rows, fem.compute_matching), the predicted share of the maskable
    positions, and the pre-clip gradient norms: the share of steps clipped (norm above
    `max_grad_norm`) and their median, 90th percentile and maximum. auxiliary: as in
    fem.throughput.training_flops."""
    norms, predictions = np.asarray(log["grad_norm"]), np.asarray(log["predictions"])  # one per step
    rows, length = np.asarray(log["rows"]), np.asarray(log["length"])
    flops = [
        training_flops(model_config, r, t, m, auxiliary) for r, t, m in zip(rows, length, predictions, strict=True)
    ]
    return {
        "predictions_per_step": float(predictions.mean()),
        "tokens_per_step": float(np.mean(rows * length)),
        "row_length": float(length.mean()),
        "flops_per_step": float(np.mean(flops)),
        "flops_ratio_to_mlm": float(np.mean(flops) / control_flops),
        "masking_ratio_per_row": float(np.mean(predictions / np.asarray(log["maskable"]))),  # random ~ p, fe ~ 1/K
        "clipped_share": float(np.mean(norms > max_grad_norm)),
        "grad_norm": {
            "median": float(np.median(norms)),
            "p90": float(np.percentile(norms, 90)),
            "max": float(norms.max()),
        },
    }


def validation_metrics(log: dict, train_blocks: np.ndarray, blocks: np.ndarray, mask_ratio: float, meta: dict) -> dict:
    """metrics.json's intrinsic measures: the validation MLM loss (nats per masked token) and
    masked-token accuracy at the end of the run and at step 0, from the log's validation
    curve, and their trivial baselines: a unigram model of `train_blocks` on the same
    targets of the fixed masks of `blocks` (fem.validation.unigram_baseline)."""
    curve = log["validation"]
    special = meta["unmaskable_token_ids"]
    unigram = unigram_baseline(train_blocks, validation_targets(blocks, mask_ratio, special, meta),
                               meta["vocab_size"], special)  # fmt: skip
    return {
        "validation_mlm_loss": curve["loss"][-1],
        "validation_mlm_loss_init": curve["loss"][0],
        "validation_masked_accuracy": curve["accuracy"][-1],
        "validation_masked_accuracy_init": curve["accuracy"][0],
        "unigram_validation_loss": unigram.loss,
        "unigram_validation_accuracy": unigram.accuracy,
        "validation_blocks": len(blocks),
        "validation_perplexity": math.exp(curve["loss"][-1]),
    }


def log_curves(log: dict, total_steps: int) -> dict[str, list[tuple[int, float]]]:
    """The curves of `log` for curves/ (fem/live_metrics.py): training loss, learning rate and
    gradient norm at the curve points of a `total_steps`-step run, and the validation curve."""
    validation = log["validation"]
    return curves_from_log(
        log["step"], {key: log[key] for key in CURVE_KEYS}, curve_stride(total_steps), total_steps,
        {key: validation[key] for key in ("loss", "accuracy")}, validation["step"],
    )  # fmt: skip


def curve_points_at(log: dict, done: int, total_steps: int) -> dict[str, float]:
    """The points log_curves has at step `done` ({"train/loss": ..., "validation/loss": ...}; {} if none)."""
    stride, values = curve_stride(total_steps), {}
    if is_curve_point(done, stride, total_steps):
        values = {f"train/{key}": curve_point(log[key], done, stride, key) for key in CURVE_KEYS}
    validation = log["validation"]
    if validation["step"] and validation["step"][-1] == done:
        values |= {f"validation/{key}": float(validation[key][-1]) for key in ("loss", "accuracy")}
    return values


def start_live_curves(folder, log: dict, total_steps: int, enabled: bool, is_main: bool) -> LiveCurves:
    """On the main process: `folder` (a run's curves/) written from `log` so far (a resumed run's),
    then DVCLive appending to it when `enabled` (the implementation setting live_metrics)."""
    if not is_main:
        return LiveCurves(folder, enabled=False)
    write_curves(folder, log_curves(log, total_steps))
    return LiveCurves(folder, enabled=enabled)


def log_live_points(live: LiveCurves, log: dict, done: int, total_steps: int, log_every: int) -> None:
    """DVCLive: the points `log_curves` will have at step `done`; shown (flushed) at the progress
    lines (every `log_every` steps) and the validations."""
    values = curve_points_at(log, done, total_steps)
    if values:
        live.log(done, values)
    if done % log_every == 0 or "validation/loss" in values:
        live.flush()
