"""A job killed at any instant loses nothing, and no file a user receives runs code.

Real `fem pretrain` processes are SIGKILLed at every step of the finishing sequence
(FEM_FAULT_AT, fem/checkpointing.py: fault_point), then the same command runs again; a
planted pickle in resume/state.pt must not run.
"""

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CreatesAFile, cli_args, copy_workflow, pretrain_settings, workflow_env
from safetensors.torch import load_file

from fem.checkpointing import FAULT_ENV, load_state, require_checkpoint, save_state
from fem.errors import DataSourceError
from fem.pretraining import OUTPUTS, pretrain
from fem.settings import FinetuneSettings, PretrainImplementation, VarianceSettings

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# 6 steps, checkpoints at 0 and 3, a resumable state every 2 steps
RUN = pretrain_settings("fe", steps=6, save_steps=[0, 3], validate_every=2)
FINISHING = ["final-state", "model", "checkpoints", "curves", "train-log", "metrics", "provenance"]
TIMING = {"wall_seconds", "resumed_from_step", "tokens_per_second", "model_flops_utilisation", "masking_share"}


def fem_pretrain(packed: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = ENV | {FAULT_ENV: fault} if fault else {k: v for k, v in ENV.items() if k != FAULT_ENV}
    command = cli_args(packed, out, RUN, resume_every=2)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(packed, tmp_path_factory) -> Path:
    """An uninterrupted run of RUN (in-process: the same computation as the command)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain(packed, out, RUN, PretrainImplementation(resume_every=2))
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_run(out: Path, reference: Path) -> None:
    """Every declared output of `out` is complete and equal to the uninterrupted run's
    (bitwise weights; equal logs; metrics equal except timing); resume/ is gone."""
    assert all((out / name).exists() for name in OUTPUTS), sorted(p.name for p in out.iterdir())
    a, b = weights(out / "model"), weights(reference / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == sorted(p.name for p in (reference / "checkpoints").iterdir()) == ["step-0", "step-3"]
    for step in steps:
        a, b = weights(out / "checkpoints" / step), weights(reference / "checkpoints" / step)
        assert all(torch.equal(a[k], b[k]) for k in a)
    curves = sorted(p.relative_to(out) for p in (out / "curves").rglob("*") if p.is_file())
    assert curves == sorted(p.relative_to(reference) for p in (reference / "curves").rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (reference / f).read_bytes() for f in curves)  # no step twice
    log, log_ref = (json.loads((d / "train_log.json").read_text()) for d in (out, reference))
    assert log["loss"] == log_ref["loss"] and log["validation"] == log_ref["validation"]
    metrics, metrics_ref = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert {k: v for k, v in metrics.items() if k not in TIMING} == {
        k: v for k, v in metrics_ref.items() if k not in TIMING
    }
    provenance = json.loads((out / "provenance.json").read_text())
    recorded = {Path(path).relative_to(out).parts[0] for path in provenance["outputs"]}
    assert recorded == set(OUTPUTS)  # the declared outputs, and never resume/
    assert not (out / "resume").exists()


def remove_declared_outputs(out: Path) -> None:
    """What Snakemake does before rerunning an incomplete job: delete its outputs."""
    for name in (*OUTPUTS, "provenance.json"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


# The checkpoints point is where intermediate checkpoints were once lost; the rest are slow.
CASES = [
    pytest.param(point, mode, marks=() if (point, mode) == ("checkpoints", "as_snakemake") else pytest.mark.slow)
    for point in FINISHING
    for mode in ("as_snakemake", "outputs_left")
]


@pytest.mark.parametrize(("point", "mode"), CASES)
def test_a_job_killed_while_finishing_reruns_to_the_uninterrupted_outputs(packed, reference, tmp_path, point, mode):
    out = tmp_path / "run"
    killed = fem_pretrain(packed, out, fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (out / "resume" / "state.pt").is_file()  # the finished training is still resumable
    if mode == "as_snakemake":
        remove_declared_outputs(out)
    rerun = fem_pretrain(packed, out)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "resumed from step 6" in rerun.stdout  # only the finishing sequence ran again
    assert_same_run(out, reference)


def test_an_uninterrupted_command_matches_the_library_run(packed, reference, tmp_path):
    """The reference of the fault tests is the command's own result."""
    done = fem_pretrain(packed, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(tmp_path / "run", reference)


def test_a_planted_pickle_in_the_resume_state_never_runs(packed, tmp_path):
    out, witness = tmp_path / "run", tmp_path / "code-ran"
    (out / "resume").mkdir(parents=True)
    state = out / "resume" / "state.pt"
    state.write_bytes(pickle.dumps({"fingerprint": CreatesAFile(witness), "step": 3}))
    pickle.loads(state.read_bytes())  # the payload is live: unpickled the usual way it runs
    assert witness.exists()
    witness.unlink()

    done = fem_pretrain(packed, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not witness.exists()
    refusal = next(line for line in done.stdout.splitlines() if line.startswith("ignoring"))
    assert str(state) in refusal and "not a fem training state" in refusal and "starting over" in refusal
    assert "Traceback" not in done.stdout + done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 0


def test_a_real_state_still_resumes_and_damaged_states_are_refused(packed, tmp_path, capsys):
    """The safe loader reads what pre-training saves (a state of this run resumes); a
    truncated file, a state with a key missing and a non-mapping are refused by name."""
    out = tmp_path / "run"
    fem_pretrain(packed, out, fault="final-state")
    path = out / "resume" / "state.pt"
    state = torch.load(path, weights_only=True)
    assert load_state(path, state["fingerprint"])["step"] == 6

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    incomplete = tmp_path / "incomplete.pt"
    save_state(incomplete, {k: v for k, v in state.items() if k != "optimizer"})
    listed = tmp_path / "listed.pt"
    save_state(listed, [1, 2, 3])
    for damaged, reason in [(truncated, "not a fem training state"), (incomplete, "missing optimizer"),
                            (listed, "expected a mapping")]:  # fmt: skip
        assert load_state(damaged, state["fingerprint"]) is None
        assert f"ignoring {damaged}: " in (said := capsys.readouterr().out) and reason in said


def test_fem_loads_nothing_with_pickle():
    """No load in the package may unpickle (torch.load weights_only=False, numpy allow_pickle,
    pickle itself): every file fem reads may come from someone else."""
    unsafe = ("weights_only=False", "allow_pickle=True", "pickle.load", "import pickle", "import dill")
    found = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in sorted((ROOT / "fem").rglob("*.py"))
        for needle in unsafe
        if needle in path.read_text().replace(" ", "")
    ]
    assert found == []


def test_a_missing_checkpoint_names_its_run_step_and_remedy(tmp_path, checkpoint):
    run = tmp_path / "results" / "scratch" / "pretrain" / "fe-s1"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(DataSourceError) as err:
        require_checkpoint(run / "checkpoints" / "step-300")
    message = str(err.value)
    assert str(run) in message and "step 300" in message and f"snakemake --forcerun {run}/model" in message
    assert require_checkpoint(checkpoint) == checkpoint


@pytest.mark.parametrize("command", ["finetune", "variance"])
def test_the_table_jobs_stop_on_a_missing_checkpoint_with_that_message(tmp_path, command):
    run = tmp_path / "fe-s1"
    (run / "checkpoints").mkdir(parents=True)
    missing = run / "checkpoints" / "step-300"
    args = {
        "finetune": ["finetune", "--task", "sst2", "--task-dir", str(tmp_path / "task"), "--learning-rates", "[0.001]",
                     *settings_flags("finetune")],
        "variance": ["variance", "--data", str(tmp_path / "data"), *settings_flags("variance")],
    }[command]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "fem", *args, "--checkpoint", str(missing), "--out", str(tmp_path / "out")],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert str(run) in done.stderr and "step 300" in done.stderr and "--forcerun" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def settings_flags(command: str) -> list[str]:
    """The required settings flags of `fem finetune` / `fem variance`, all "1": the command
    must stop at the missing checkpoint before it uses any of them."""
    fields = dataclasses.fields({"finetune": FinetuneSettings, "variance": VarianceSettings}[command])
    return [item for f in fields if f.name != "learning_rate" for item in ("--" + f.name.replace("_", "-"), "1")]


@pytest.mark.slow
def test_under_snakemake_a_kill_while_finishing_keeps_the_checkpoints_a_table_needs(tmp_path, mirror):
    """The probe's case through the real workflow: the pre-training job dies after its outputs
    are written but before it is recorded; the same snakemake command again completes it,
    and the intermediate checkpoint of Table 3 is there to be fine-tuned."""
    work = copy_workflow(tmp_path)
    target = "results/scratch/efficiency/sst2/fe-s1-step-3-f1/metrics.json"
    command = [sys.executable, "-m", "snakemake", target, "--configfile", "micro.yaml"]
    env = workflow_env(mirror) | {"OMP_NUM_THREADS": "1"}
    killed = subprocess.run(command, cwd=work, env=env | {FAULT_ENV: "provenance"}, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert killed.returncode != 0
    run = work / "results" / "scratch" / "pretrain" / "fe-s1"
    assert (run / "resume" / "state.pt").is_file() and not (work / target).exists()
    again = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0", "step-3"]
    assert json.loads((work / target).read_text())["run"]["step"] == 3
    assert not (run / "resume").exists()
