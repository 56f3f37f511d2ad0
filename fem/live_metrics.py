"""A run's curves as files DVC reads, in DVCLive's layout: live while it trains, final from its log.

  <dir>/plots/metrics/<group>/<name>.tsv   rows "step<TAB><name>": the curve of one metric
  <dir>/metrics.json                        the last value of each metric, and the last step

While a run trains, DVCLive (https://dvc.org/doc/dvclive; the implementation setting
`live_metrics`, on by default) appends a point to these files every `stride` steps, so
`dvc plots show`, the DVC extension for VS Code and DVC Studio follow the run as it goes.
When the run ends, `write_curves` writes them again from the run's own log: the finished
files are the same whether DVCLive ran or not (a speed setting changes no result), and a
resumed run has no step twice (DVCLive appends; a resumed run goes back to its last saved
state, before steps it had already logged, so the files are first rewritten from the log
that came back with that state).

A point of a training curve is the mean over the `stride` steps up to it (loss, gradient
norm) or the value at it (learning rate); the validation curve has a point per validation.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

CURVE_POINTS = 500  # at most this many points per training curve: every point of every run is drawn
MEAN_KEYS = ("loss", "grad_norm")  # averaged over a point's steps; others are taken at the point


def curve_stride(total_steps: int, points: int = CURVE_POINTS) -> int:
    """Steps between two points of a training curve: 1 up to `points` steps, then more."""
    return max(1, math.ceil(total_steps / points))


def is_curve_point(step: int, stride: int, total_steps: int) -> bool:
    """Whether training curves have a point at `step` (1-based, steps done)."""
    return step % stride == 0 or step == total_steps


def curve_point(values: Sequence[float], done: int, stride: int, key: str) -> float:
    """The point of the curve of `key` after `done` steps: `values` holds one value per step (steps 1..)."""
    if key in MEAN_KEYS:
        window = values[max(0, done - stride) : done]
        return float(sum(window) / len(window))
    return float(values[done - 1])


def curves_from_log(
    steps: Sequence[int], per_step: dict[str, Sequence[float]], stride: int, total_steps: int,
    evaluations: dict[str, Sequence[float]] | None = None, evaluation_steps: Sequence[int] = (),
) -> dict[str, list[tuple[int, float]]]:  # fmt: skip
    """{"train/<key>": [(step, value)], "validation/<key>": [...]}: the training curves of the
    per-step values `per_step` (steps `steps`, 1-based) at every curve point, and the
    validation curves `evaluations` at `evaluation_steps` as they are."""
    curves = {}
    points = [done for done in steps if is_curve_point(done, stride, total_steps)]  # the same for every key
    for key, values in per_step.items():
        curves[f"train/{key}"] = [(done, curve_point(values, done, stride, key)) for done in points]
    for key, values in (evaluations or {}).items():
        curves[f"validation/{key}"] = [(int(s), float(v)) for s, v in zip(evaluation_steps, values, strict=True)]
    return curves


def write_curves(directory: str | Path, curves: dict[str, list[tuple[int, float]]]) -> None:
    """Write `curves` ({"group/name": [(step, value)]}) in DVCLive's layout, replacing what the
    folder held: one TSV per curve and metrics.json with the last values and the last step."""
    directory = Path(directory)
    shutil.rmtree(directory / "plots", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    for name, points in sorted(curves.items()):
        path = directory / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        metric = name.split("/")[-1]
        with open(path, "w", encoding="utf-8", newline="") as handle:  # as dvclive.plots.metric.Metric.dump
            writer = csv.writer(handle, delimiter="\t", lineterminator=os.linesep)
            writer.writerow(["step", metric])
            writer.writerows((step, value) for step, value in points)
        if points:
            *groups, _ = name.split("/")
            node = summary
            for group in groups:
                node = node.setdefault(group, {})
            node[metric] = points[-1][1]
    last = [points[-1][0] for points in curves.values() if points]
    summary["step"] = max(last, default=0)
    (directory / "metrics.json").write_text(json.dumps(summary, indent=4) + "\n")


class LiveCurves:
    """DVCLive appending curve points while a run trains (`enabled`), or nothing.

    Opened on a folder `write_curves` has just written from the run's log so far, so that a
    resumed run continues its files (DVCLive's resume) instead of starting them again. A
    point is appended at once; metrics.json and the signal to the DVC extension, which cost
    milliseconds of file writes, wait for `flush` (the run calls it at its progress lines)."""

    def __init__(self, directory: str | Path, enabled: bool) -> None:
        self.live = None
        if enabled:
            from dvclive import Live  # imports DVC: only when asked for

            # dvcyaml=None: never touch the generated dvc.yaml; save_dvc_exp=False: the run is a
            # pipeline stage, not an experiment of its own
            self.live = Live(dir=str(directory), resume=True, dvcyaml=None, save_dvc_exp=False, report=None)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one point at `step` to each curve of `values` ({"group/name": value})."""
        if self.live is None:
            return
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)

    def flush(self) -> None:
        """Rewrite metrics.json and tell the DVC extension that a step is done."""
        if self.live is not None:
            step = self.live.step
            self.live.next_step()
            self.live.step = step  # next_step counts on; the run sets each point's step itself

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
