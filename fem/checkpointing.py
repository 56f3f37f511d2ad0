"""Resumable training state and atomically written model folders.

A killed job must lose nothing it finished. The training state (model, optimizer,
scheduler, RNG states, step, logs) is one file written to a temporary name and renamed
into place, so a reader sees the old state or the new one, never half of one. Model
folders are written the same way: to `<name>.tmp`, then renamed.

The state carries a fingerprint of the run's settings and data; a state with another
fingerprint is ignored (with a message), so changing the config never resumes a
different run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch


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


def load_state(path: str | Path, expected_fingerprint: str) -> dict | None:
    """The state saved at `path`, or None when there is none or it belongs to another run."""
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != expected_fingerprint:
        print(f"ignoring {path}: it was saved by a run with other settings or data; starting over", flush=True)
        return None
    return state


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
