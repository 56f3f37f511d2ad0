"""LICHEE's coarse vocabulary (fem/lichee.py): the most frequent multi-piece words of the
pre-training corpus, built once per corpus as its own DAG stage (`fem coarse-vocab`, rule
coarse_vocab) and read by every `lichee` pre-training run.

The file is JSON, readable by a reviewer: each word with its pieces, piece ids, count and key
(fem.lichee.word_keys), and the ids of the tokenizer's "##" pieces, which decide where words
begin. Nothing in it is executed or unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fem.errors import DataError


def build_coarse_vocab(data_dir: str | Path, out: str | Path, size: int, max_pieces: int) -> dict:
    """Count the words of 2..max_pieces pieces in data_dir's train.npy (fem tokenize's blocks)
    and write the `size` most frequent to `out` (JSON; see the module docstring)."""
    from transformers import AutoTokenizer

    from fem.lichee import coarse_vocabulary

    data_dir = Path(data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    continuation = torch.tensor([token.startswith("##") for token in tokens])
    blocks = np.load(data_dir / "train.npy", mmap_mode="r")
    keys, counts, words = coarse_vocabulary(blocks, continuation, size, max_pieces)
    vocab = {
        "corpus": str(data_dir), "size": size, "max_pieces": max_pieces, "vocab_size": len(tokens),
        "continuation_ids": torch.nonzero(continuation)[:, 0].tolist(),
        "words": [{"pieces": tokenizer.convert_ids_to_tokens(ids), "ids": ids, "count": int(count), "key": int(key)}
                  for key, count, ids in zip(keys.tolist(), counts.tolist(), words, strict=True)],
    }  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(vocab, indent=1))
    frequent = sorted(vocab["words"], key=lambda word: -word["count"])[:8]
    print(f"coarse vocabulary: {len(words)} words of 2..{max_pieces} pieces (asked for {size}) in {len(blocks)} "
          f"blocks; most frequent: {', '.join(' '.join(word['pieces']) for word in frequent)}", flush=True)  # fmt: skip
    return vocab


def load_coarse_vocab(path: str | Path) -> dict:
    """The coarse vocabulary at `path`, with `continuation` (bool tensor [V]) and `keys` (int64
    tensor [N], sorted); DataError naming the file when it is missing or not one."""
    path = Path(path)
    try:
        vocab = json.loads(path.read_text())
        continuation = torch.zeros(vocab["vocab_size"], dtype=torch.bool)
        continuation[vocab["continuation_ids"]] = True
        keys = torch.tensor([word["key"] for word in vocab["words"]], dtype=torch.int64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a coarse vocabulary written by `fem coarse-vocab` ({err})") from None
    if len(keys) == 0 or not bool((keys[1:] > keys[:-1]).all()):
        raise DataError(f"{path}: expected at least one word, with sorted distinct keys")
    return vocab | {"continuation": continuation, "keys": keys}
