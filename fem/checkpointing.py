"""Resumable training state and atomically written model folders.

A killed job must lose nothing it finished. The training state (model, optimizer,
scheduler, RNG states, step, logs) is one file written to a temporary name and renamed
into place, so a reader sees the old state or the new one, never half of one. Model
folders are written the same way: to `<name>.tmp`, then renamed.

The state carries a fingerprint of the run's settings and data; a state with another
fingerprint is ignored (with a message), so changing the config never resumes a
different run.

Nothing is unpickled: a state is read with `torch.load(weights_only=True)`, which only
rebuilds tensors and plain containers, so a crafted file cannot run code. A file that is
not a fem state (another pickle, a truncated file, missing keys) is refused with one line
naming it, and the run starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

from fem.errors import DataError

FAULT_ENV = "FEM_FAULT_AT"  # fault-injection tests: the name of the point at which to die


def fault_point(name: str) -> None:
    """SIGKILL this process when the environment variable FEM_FAULT_AT equals `name`.

    The finishing sequence of a run calls this between its steps, so a test can kill a real
    job at each of them and check that the rerun repairs everything (no cleanup code runs,
    exactly as with an out-of-memory kill)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fingerprint(*parts: object) -> str:
    """sha256 of the JSON of `parts` (settings, data meta...): what makes a run the same run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def rng_state() -> dict:
    """The torch random number generator states (CPU and every CUDA device)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | Path, state: dict) -> None:
    """torch.save `state` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# What a fem training state holds (fem/pretraining.py writes it), and the type of each entry.
STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "fingerprint": str, "step": int, "elapsed": (int, float), "model": dict, "optimizer": dict,
    "scheduler": dict, "rng": dict, "log": dict,
}  # fmt: skip


def load_state(path: str | Path, expected_fingerprint: str) -> dict | None:
    """The state saved at `path`, or None (with one line saying why) when there is none, it
    is not a fem state, or it belongs to another run."""
    path = Path(path)
    if not path.is_file():
        return None
    state, problem = _read_state(path)
    if problem is None and state.get("fingerprint") != expected_fingerprint:
        problem = "it was saved by a run with other settings or data"
    if problem is None:
        problem = _state_problem(state)
    if problem is not None:
        print(f"ignoring {path}: {problem}; starting over", flush=True)
        return None
    return state


def _read_state(path: Path) -> tuple[Any, str | None]:
    """(content, None) of a state file read without unpickling code, or (None, why not)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a state we can use"; nothing of it ran
        reason = " ".join(str(err).split())
        reason = reason.split(" Check the documentation")[0]  # torch appends a long help text
        return None, f"not a fem training state ({type(err).__name__}: {reason[:300]})"
    if not isinstance(state, dict):
        return None, f"not a fem training state (a {type(state).__name__}, expected a mapping)"
    return state, None


def _state_problem(state: dict) -> str | None:
    """Why `state` (of the right fingerprint) cannot be resumed, or None."""
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        return f"not a complete fem training state (missing {', '.join(missing)})"
    wrong = [key for key, kind in STATE_KEYS.items() if not isinstance(state[key], kind)]
    if wrong:
        return f"not a fem training state (wrong type of {', '.join(wrong)})"
    return None


def require_checkpoint(path: str | Path) -> Path:
    """`path` if it holds a saved model (config.json and safetensors weights); otherwise a
    DataSourceError naming the pre-training run folder, the step and how to rebuild it."""
    from fem.errors import DataSourceError

    path = Path(path)
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    step = path.name.removeprefix("step-") if path.parent.name == "checkpoints" else "final"
    raise DataSourceError(
        f"checkpoint {path} is missing or incomplete: the pre-training run {run} has no saved model at step "
        f"{step}. Rebuild that run with `snakemake --forcerun {run}/model` (or delete {run} and run the same "
        f"command again), then build the table again"
    )


def write_json_atomic(path: str | Path, content: object, indent: int | None = None) -> None:
    """Write `content` as JSON to `path` through a temporary file and a rename: a reader (or a
    rerun after a kill) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=indent) + "\n")
    os.replace(tmp, path)


def publish_folder(source: str | Path, target: str | Path) -> None:
    """Make `target` a copy of the folder `source` (empty if `source` does not exist), leaving
    `source` intact, so that a job killed at any instant can publish it again.

    Files are hard links where the file system allows (no second copy on disk), else copies.
    The copy is built at `<target>.tmp` and renamed into place."""
    source, target = Path(source), Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, tmp, copy_function=_link_or_copy)
    else:
        tmp.mkdir(parents=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def remove_state_folder(folder: str | Path) -> None:
    """Remove a run's resume folder once every output is written: the state file first, so
    that a kill halfway through never leaves a state whose checkpoints are half deleted (a
    rerun then starts over instead of publishing an incomplete set)."""
    folder = Path(folder)
    (folder / "state.pt").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def save_model_folder(model, path: str | Path, tokenizer_dir: str | Path | None = None, extra: dict | None = None):
    """model.save_pretrained into `path` atomically, with the tokenizer files of
    `tokenizer_dir` and `extra` as JSON files ({file name: content})."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a carriage-return bar per save clutters job logs
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp))
    for name, content in (extra or {}).items():
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def checkpoint_identity(checkpoint: str | Path) -> dict:
    """Which run and step a saved model is, from its own checkpoint_metrics.json (written by
    fem pretrain into every model folder): strategy, seed, K, step, final, validation loss."""
    path = Path(checkpoint) / "checkpoint_metrics.json"
    try:
        record = json.loads(path.read_text())
        identity = {"strategy": record["strategy"], "pretrain_seed": record["seed"], "segments": record["segments"],
                    "step": record["step"], "final": record["final"]}  # fmt: skip
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: cannot read the checkpoint's identity ({err!r}); expected the "
                        "checkpoint_metrics.json fem pretrain writes (rerun the pre-training)") from None  # fmt: skip
    return identity | {"validation_mlm_loss": record["validation_mlm_loss"], "checkpoint": str(checkpoint)}
