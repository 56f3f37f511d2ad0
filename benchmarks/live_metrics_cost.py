"""What DVCLive costs a pre-training run (the implementation setting live_metrics), in one process.

The same run (config model, config rows per step, `random`, one seed) is trained with
live_metrics off and on, alternately, --repeats times each. A run's loop is timed from its
first to its last step (metrics.json wall_seconds, validation included, start-up not), and
DVCLive's share of step time is (loop on - loop off) / loop off, over the medians.
Separately, DVCLive's own calls are timed on a scratch folder: one curve point (3 metrics)
and one flush (metrics.json rewritten, the DVC extension signalled), as a share of the mean
training step; a run logs a point per curve step and flushes at its progress lines. The
one-time start-up (DVC imported, its repository opened) is printed apart: it is paid once
per job, before the first step.

    python benchmarks/live_metrics_cost.py                  # tiny config: 60 steps, 3 repeats
    python benchmarks/live_metrics_cost.py --steps 200 --repeats 5
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

from fem.live_metrics import LiveCurves, write_curves  # noqa: E402
from fem.masking import resolve_segments  # noqa: E402
from fem.pretraining import pretrain  # noqa: E402
from fem.settings import PretrainImplementation, PretrainSettings  # noqa: E402


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


def time_calls(folder: Path, points: int) -> tuple[float, float, float]:
    """Seconds of opening DVCLive (first time in this process), of one curve point, of one flush."""
    write_curves(folder, {})
    tick = time.perf_counter()
    live = LiveCurves(folder, enabled=True)
    opened = time.perf_counter() - tick
    tick = time.perf_counter()
    for step in range(1, points + 1):
        live.log(step, {"train/loss": 1.0, "train/lr": 1e-3, "train/grad_norm": 2.0})
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
    off, on = statistics.median(loops[False]), statistics.median(loops[True])
    step = statistics.mean(step_seconds)
    flushes = 1 / settings.log_every
    print(f"{args.steps} steps of {settings.rows_per_step} rows, model hidden {settings.hidden_size} x "
          f"{settings.num_hidden_layers} layers; mean step {step * 1000:.1f} ms")  # fmt: skip
    print(f"loop, median of {args.repeats}: off {off:.2f} s, on {on:.2f} s; ratio on/off {on / off:.3f} "
          f"({(on - off) / off:+.1%} of step time)")  # fmt: skip
    print(f"DVCLive calls: a curve point {point * 1000:.2f} ms, a flush {flush * 1000:.2f} ms (one per "
          f"{settings.log_every} steps): {(point + flush * flushes) / step:.2%} of a step")  # fmt: skip
    print(f"start-up, once per job (DVC imported, repository opened): {opened:.2f} s")


if __name__ == "__main__":
    main()
