"""What DVCLive costs a pre-training run and a fine-tuning run (implementation.live_metrics), in one process.

The same run (config model, config rows per step, `random`, one seed) is trained with
live_metrics off and on, alternately, --repeats times each. A run's loop is timed from its
first to its last step (metrics.json wall_seconds, validation included, start-up not), and
DVCLive's share of step time is (loop on - loop off) / loop off, over the medians.
Separately, DVCLive's own calls are timed on a scratch folder: one curve point (3 metrics)
and one flush (metrics.json rewritten, the DVC extension signalled), as a share of the mean
training step; a run logs a point per curve step and flushes at its progress lines. The
one-time start-up (DVC imported, its repository opened) is printed apart: it is paid once
per job, before the first step.

With --finetune-task-dir (a folder written by `fem download task sst2`), the last pre-trained
model is then fine-tuned on that task with the config's finetune settings, DVCLive off and on
alternately: a fine-tuning run logs a point (training loss, learning rate) at every step up to
500 steps and flushes once per epoch. Its step time is the run's wall time over its steps
(the dev-set evaluation included, so the share printed is a little low).

    python benchmarks/live_metrics_cost.py                  # tiny config: 60 steps, 3 repeats
    python benchmarks/live_metrics_cost.py --steps 200 --repeats 5
    python benchmarks/live_metrics_cost.py --finetune-task-dir data/raw/tasks/sst2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402
from pretrain_throughput import packed_data  # noqa: E402

from fem.finetuning.sweep import finetune  # noqa: E402
from fem.live_metrics import LiveCurves, curve_stride, write_curves  # noqa: E402
from fem.masking import resolve_segments  # noqa: E402
from fem.pretraining import pretrain  # noqa: E402
from fem.registry import get_task  # noqa: E402
from fem.settings import FinetuneSettings, PretrainImplementation, PretrainSettings  # noqa: E402


def settings_from_config(config: dict, steps: int) -> PretrainSettings:
    pre = config["pretrain"]
    segments = resolve_segments(pre["mask_ratio"], pre["segments"])
    return PretrainSettings(
        strategy="random", seed=1, mask_ratio=pre["mask_ratio"], segments=segments,
        replacement=pre["replacement"], span=pre["span"], steps=steps, rows_per_step=pre["rows_per_step"],
        learning_rate=pre["learning_rate"], schedule="linear", warmup_steps=min(pre["warmup_steps"], steps // 10),
        weight_decay=pre["weight_decay"], max_grad_norm=pre["max_grad_norm"], validation_blocks=8,
        validate_every=0, save_steps=[], log_every=pre["log_every"], **config["model"],
    )  # fmt: skip


def finetune_settings_from_config(config: dict) -> FinetuneSettings:
    tune = config["finetune"]
    keys = ("max_train_examples", "max_eval_examples", "max_length", "epochs", "batch_size", "warmup_ratio",
            "weight_decay")  # fmt: skip
    return FinetuneSettings(seed=1, learning_rate=tune["learning_rates"][0], **{key: tune[key] for key in keys})


PRETRAIN_POINT = {"train/loss": 1.0, "train/lr": 1e-3, "train/grad_norm": 2.0}
FINETUNE_POINT = {"train/loss": 1.0, "train/lr": 1e-3}


def time_calls(folder: Path, points: int, point_values: dict = PRETRAIN_POINT) -> tuple[float, float, float]:
    """Seconds of opening DVCLive (first time in this process), of one curve point (`point_values`),
    of one flush."""
    write_curves(folder, {})
    tick = time.perf_counter()
    live = LiveCurves(folder, enabled=True)
    opened = time.perf_counter() - tick
    tick = time.perf_counter()
    for step in range(1, points + 1):
        live.log(step, point_values)
    point = (time.perf_counter() - tick) / points
    tick = time.perf_counter()
    for _ in range(20):
        live.flush()
    flush = (time.perf_counter() - tick) / 20
    live.close()
    return opened, point, flush


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--data", help="folder written by `fem tokenize` (default: data/tokenized/bbc or build one)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--finetune-task-dir", help="also fine-tune on this task (`fem download task sst2`)")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    settings = settings_from_config(config, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = packed_data(args.data, work)
        opened, point, flush = time_calls(work / "calls", 200)  # DVC imported here, before the timed runs
        loops: dict[bool, list[float]] = {False: [], True: []}
        step_seconds = []
        for repeat in range(args.repeats):
            for live in (False, True):
                out = work / f"run-{live}-{repeat}"
                with open(out.with_suffix(".log"), "w") as log, contextlib.redirect_stdout(log):
                    metrics = pretrain(data, out, settings, PretrainImplementation(resume_every=0, live_metrics=live))
                loops[live].append(metrics["wall_seconds"])
                step_seconds.append(metrics["wall_seconds"] / args.steps)
                print(f"run {repeat + 1}/{args.repeats} live_metrics={live}: loop {metrics['wall_seconds']:.2f} s",
                      flush=True)  # fmt: skip
        if args.finetune_task_dir:
            model = work / f"run-True-{args.repeats - 1}" / "model"
            tuned = time_finetuning(config, Path(args.finetune_task_dir), model, work, args.repeats)
    off, on = statistics.median(loops[False]), statistics.median(loops[True])
    step = statistics.mean(step_seconds)
    flushes = 1 / settings.log_every
    print(f"pre-training: {args.steps} steps of {settings.rows_per_step} rows, model hidden {settings.hidden_size} x "
          f"{settings.num_hidden_layers} layers; mean step {step * 1000:.1f} ms")  # fmt: skip
    print(f"loop, median of {args.repeats}: off {off:.2f} s, on {on:.2f} s; ratio on/off {on / off:.3f} "
          f"({(on - off) / off:+.1%} of step time)")  # fmt: skip
    print(f"DVCLive calls: a curve point {point * 1000:.2f} ms, a flush {flush * 1000:.2f} ms (one per "
          f"{settings.log_every} steps): {(point + flush * flushes) / step:.2%} of a step")  # fmt: skip
    print(f"start-up, once per job (DVC imported, repository opened): {opened:.2f} s")
    if args.finetune_task_dir:
        print(tuned)


def time_finetuning(config: dict, task_dir: Path, model: Path, work: Path, repeats: int) -> str:
    """Fine-tune `model` on the task at `task_dir` with DVCLive off and on, alternately; the
    summary lines of what it cost."""
    settings = finetune_settings_from_config(config)
    task = get_task(task_dir.name)
    _, point, flush = time_calls(work / "finetune-calls", 200, FINETUNE_POINT)
    loops: dict[bool, list[float]] = {False: [], True: []}
    steps = 0
    for repeat in range(repeats):
        for live in (False, True):
            out = work / f"finetune-{live}-{repeat}"
            with open(out.with_suffix(".log"), "w") as log, contextlib.redirect_stdout(log):
                metrics = finetune(task, task_dir, model, out, settings, live_metrics=live)
            loops[live].append(metrics["wall_seconds"])
            steps = metrics["steps"]
            print(f"fine-tuning {repeat + 1}/{repeats} live_metrics={live}: {metrics['wall_seconds']:.2f} s",
                  flush=True)  # fmt: skip
    off, on = statistics.median(loops[False]), statistics.median(loops[True])
    step = off / steps
    per_step = 1 / curve_stride(steps) * point + settings.epochs / steps * flush
    return (
        f"fine-tuning {task.name}: {steps} steps of {settings.batch_size} examples; mean step {step * 1000:.1f} ms "
        f"(evaluation included)\nrun, median of {repeats}: off {off:.2f} s, on {on:.2f} s; ratio on/off "
        f"{on / off:.3f} ({(on - off) / off:+.1%})\nDVCLive calls: a point {point * 1000:.2f} ms every "
        f"{curve_stride(steps)} step(s), a flush {flush * 1000:.2f} ms per epoch: {per_step / step:.2%} of a step"
    )


if __name__ == "__main__":
    main()
