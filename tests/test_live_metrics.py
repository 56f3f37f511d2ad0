"""A run's curves/ folder (fem/live_metrics.py): DVCLive's layout, live while the run trains,
the same files at the end with DVCLive on or off, and no step twice after a resume; for
pre-training and for fine-tuning runs."""

import csv
import filecmp
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import cli_args, pretrain_settings

from fem.checkpointing import FAULT_ENV
from fem.finetuning.glue import train_glue
from fem.finetuning.sweep import finetune
from fem.live_metrics import LiveCurves, curve_point, curve_stride, curves_from_log, write_curves
from fem.optimization import linear_schedule
from fem.pretraining import pretrain
from fem.registry import get_task
from fem.settings import FinetuneSettings, PretrainImplementation

ROOT = Path(__file__).resolve().parent.parent
RUN = pretrain_settings("fe", steps=6, validate_every=2, log_every=3)
TIMING = {"wall_seconds", "resumed_from_step", "tokens_per_second", "model_flops_utilisation", "masking_share"}


def tsv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def same_tree(a: Path, b: Path) -> bool:
    """Every file of the two folders, byte for byte."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / name, b / name, shallow=False) for name in names)


def test_a_curve_point_is_the_mean_of_its_steps_and_the_last_step_is_always_one():
    losses = [4.0, 2.0, 3.0, 1.0, 5.0]
    assert curve_stride(5, points=2) == 3 and curve_stride(500) == 1 and curve_stride(501) == 2
    assert curve_point(losses, 3, 3, "loss") == pytest.approx(3.0)  # mean of steps 1-3
    assert curve_point(losses, 5, 3, "loss") == pytest.approx(3.0)  # mean of steps 3-5 (the window is 3)
    assert curve_point([0.1, 0.2, 0.3], 2, 2, "lr") == 0.2  # the learning rate at the point, not a mean
    curves = curves_from_log([1, 2, 3, 4, 5], {"loss": losses}, 3, 5, {"loss": [9.0, 7.0]}, [0, 5])
    assert curves == {"train/loss": [(3, 3.0), (5, 3.0)], "validation/loss": [(0, 9.0), (5, 7.0)]}


def test_dvclive_continues_a_rewritten_folder_without_repeating_a_step(tmp_path):
    """A resumed run: the folder is rewritten from the log of the saved state (steps 1-2), and
    DVCLive then appends steps 3-4 after them, in the same format."""
    folder = tmp_path / "curves"
    write_curves(folder, {"train/loss": [(1, 5.0), (2, 4.5), (3, 99.0)]})  # step 3 was logged, then the job died
    write_curves(folder, {"train/loss": [(1, 5.0), (2, 4.5)]})  # the resumed run's log ends at its state
    assert json.loads((folder / "metrics.json").read_text()) == {"train": {"loss": 4.5}, "step": 2}
    live = LiveCurves(folder, enabled=True)
    for step, loss in ((3, 4.25), (4, 4.0)):
        live.log(step, {"train/loss": loss})
    live.flush()
    live.close()
    rows = tsv_rows(folder / "plots" / "metrics" / "train" / "loss.tsv")
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [(1, 5.0), (2, 4.5), (3, 4.25), (4, 4.0)]
    assert json.loads((folder / "metrics.json").read_text())["train"] == {"loss": 4.0}
    assert not (tmp_path / "dvc.yaml").exists()  # DVCLive never writes a dvc.yaml of its own here


def test_a_run_ends_with_the_same_curves_with_dvclive_on_and_off(packed, tmp_path):
    runs = {}
    for live in (True, False):
        metrics = pretrain(packed, tmp_path / str(live), RUN, PretrainImplementation(live_metrics=live))
        runs[live] = {k: v for k, v in metrics.items() if k not in TIMING | {"implementation"}}
    assert runs[True] == runs[False]
    assert same_tree(tmp_path / "True" / "curves", tmp_path / "False" / "curves")
    log = json.loads((tmp_path / "True" / "train_log.json").read_text())
    curves = tmp_path / "True" / "curves" / "plots" / "metrics"
    assert [float(r["loss"]) for r in tsv_rows(curves / "train" / "loss.tsv")] == log["loss"]  # 6 steps: stride 1
    assert [int(r["step"]) for r in tsv_rows(curves / "validation" / "loss.tsv")] == [0, 2, 4, 6]
    assert [float(r["loss"]) for r in tsv_rows(curves / "validation" / "loss.tsv")] == log["validation"]["loss"]


@pytest.mark.parametrize("live", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_while_a_run_trains_its_curves_grow_only_with_dvclive_on(packed, tmp_path, live):
    """Killed after its last step but before the final rewrite: what the folder holds is what
    DVCLive wrote while the run trained (off: only the points known at the start)."""
    out = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), FAULT_ENV: "final-state"}
    killed = subprocess.run(cli_args(packed, out, RUN, live_metrics=live), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode < 0, killed.stdout[-2000:] + killed.stderr[-2000:]
    metrics = out / "curves" / "plots" / "metrics"
    validation = [int(r["step"]) for r in tsv_rows(metrics / "validation" / "loss.tsv")]
    if live:
        assert [int(r["step"]) for r in tsv_rows(metrics / "train" / "loss.tsv")] == [1, 2, 3, 4, 5, 6]
        assert validation == [0, 2, 4, 6]
        assert json.loads((out / "curves" / "metrics.json").read_text())["step"] == 6  # flushed at the last step
    else:
        assert tsv_rows(metrics / "train" / "loss.tsv") == [] and validation == [0]  # headers only


# --- fine-tuning runs (fem/finetuning/harness.py): the same folder, training loss and learning rate ---


def finetuning_data(tmp_path: Path, mirror: Path) -> Path:
    import datasets

    loaded = datasets.load_dataset(str(mirror / "nyu-mll" / "glue"), "sst2")
    data = datasets.DatasetDict({"train": loaded["train"].select(range(40)),
                                 "validation": loaded["validation"].select(range(16))})  # fmt: skip
    data.save_to_disk(str(tmp_path / "sst2"))
    return tmp_path / "sst2"


FINETUNE = FinetuneSettings(seed=1, max_train_examples=32, max_eval_examples=16, max_length=32, epochs=2,
                            batch_size=8, learning_rate=1e-4, warmup_ratio=0.25, weight_decay=0.01)  # fmt: skip


def test_a_finetuning_run_ends_with_the_same_curves_with_dvclive_on_and_off(tmp_path, mirror, checkpoint):
    task_dir = finetuning_data(tmp_path, mirror)
    runs = {}
    for live in (True, False):
        metrics = finetune(get_task("sst2"), task_dir, checkpoint, tmp_path / str(live), FINETUNE, live_metrics=live)
        runs[live] = {k: v for k, v in metrics.items() if k != "wall_seconds"}
    assert runs[True] == runs[False]
    assert same_tree(tmp_path / "True" / "curves", tmp_path / "False" / "curves")
    curves = tmp_path / "True" / "curves" / "plots" / "metrics"
    losses = [float(r["loss"]) for r in tsv_rows(curves / "train" / "loss.tsv")]
    assert [int(r["step"]) for r in tsv_rows(curves / "train" / "loss.tsv")] == list(range(1, 9))  # 2 epochs of 4
    assert sum(losses[4:]) / 4 == pytest.approx(runs[True]["final_train_loss"])  # the last epoch's mean
    rates = [float(r["lr"]) for r in tsv_rows(curves / "train" / "lr.tsv")]
    assert rates == pytest.approx([1e-4 * linear_schedule(s, 2, 8) for s in range(8)])  # the rate each step ran with
    accuracy = tsv_rows(curves / "validation" / "accuracy.tsv")
    assert [(int(r["step"]), float(r["accuracy"])) for r in accuracy] == [(8, runs[True]["metrics"]["accuracy"])]


@pytest.mark.parametrize("live", [True, False])
def test_while_a_finetuning_run_trains_dvclive_appends_its_training_curves(tmp_path, mirror, checkpoint, live):
    """train_glue writes no file: what the folder holds after it returns is what DVCLive wrote
    while it trained, the same points the run's curves end with (off: nothing)."""
    task_dir = finetuning_data(tmp_path, mirror)
    folder = tmp_path / "curves"
    live_curves = LiveCurves(folder, enabled=live)
    outputs = train_glue(get_task("sst2"), task_dir, checkpoint, FINETUNE, live=live_curves)
    if not live:
        assert not folder.exists()
        return
    for name in ("train/loss", "train/lr"):
        rows = tsv_rows(folder / "plots" / "metrics" / f"{name}.tsv")
        key = name.split("/")[1]
        assert [(int(r["step"]), float(r[key])) for r in rows] == outputs.curves[name]
    assert json.loads((folder / "metrics.json").read_text())["step"] == 8  # flushed at the end of the last epoch
