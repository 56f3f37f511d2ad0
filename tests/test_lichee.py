"""LICHEE (fem/lichee.py, fem/coarse_vocab.py): coarse ids of whole words, no leak through a
masked word's coarse id, the saved model reloading exactly for fine-tuning, pre-training."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import pretrain_settings
from test_finetuning import task_data
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from fem.coarse_vocab import build_coarse_vocab, load_coarse_vocab
from fem.lichee import LicheeForMaskedLM, LicheeForSequenceClassification, build_lichee_mlm, register
from fem.modeling import masked_logits
from fem.pretraining import pretrain

TEXTS = [
    "the unbelievably longwinded parliamentarians discussed cryptocurrency regulation",
    "parliamentarians said cryptocurrency regulation was unbelievably longwinded",
    "a cryptocurrency exchange and the parliamentarians",
]
SHAPE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
         "dropout": 0.0, "max_position_embeddings": 512, "pad_token_id": 0}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tokenizer, tmp_path_factory):
    """A tokenized folder of TEXTS (train.npy of 24-token rows and the tokenizer) and its coarse vocabulary."""
    root = tmp_path_factory.mktemp("lichee")
    rows = [tokenizer(text, padding="max_length", max_length=24, truncation=True)["input_ids"] for text in TEXTS]
    np.save(root / "train.npy", np.array(rows * 3, dtype=np.int32))
    tokenizer.save_pretrained(str(root / "tokenizer"))
    build_coarse_vocab(root, root / "coarse_vocab.json", 8, 8)
    return root, np.array(rows)


def lichee_model(corpus, fusion: str, seed: int = 0) -> LicheeForMaskedLM:
    torch.manual_seed(seed)
    root, _ = corpus
    model = build_lichee_mlm(str(root / "coarse_vocab.json"), {"fusion": fusion, "max_pieces": 8}, 30522, SHAPE)
    return model.eval()


def word_positions(tokenizer, row: np.ndarray, word: str) -> list[int]:
    """The positions of `word`'s pieces in `row` (its first occurrence)."""
    pieces = tokenizer.tokenize(word)
    ids = tokenizer.convert_tokens_to_ids(pieces)
    for start in range(len(row) - len(ids) + 1):
        if list(row[start : start + len(ids)]) == ids:
            return list(range(start, start + len(ids)))
    raise AssertionError(f"{word} not in row")


def test_the_coarse_vocabulary_holds_the_frequent_multi_piece_words(corpus, tokenizer):
    root, _ = corpus
    vocab = json.loads((root / "coarse_vocab.json").read_text())
    words = {"".join(word["pieces"]).replace("##", "") for word in vocab["words"]}
    assert {"cryptocurrency", "parliamentarians", "unbelievably", "longwinded"} <= words
    assert all(2 <= len(word["ids"]) <= 8 for word in vocab["words"])
    assert load_coarse_vocab(root / "coarse_vocab.json")["keys"].tolist() == sorted(w["key"] for w in vocab["words"])


def test_every_piece_of_a_known_word_gets_its_coarse_id_and_a_masked_word_none(corpus, tokenizer):
    _, rows = corpus
    embeddings = lichee_model(corpus, "sum").bert.embeddings
    row = torch.from_numpy(rows[:1]).long()
    coarse = embeddings.coarse_ids(row)[0]
    crypto = word_positions(tokenizer, rows[0], "cryptocurrency")
    assert len(set(coarse[crypto].tolist())) == 1 and coarse[crypto[0]] > 0  # one id for the whole word
    assert coarse[word_positions(tokenizer, rows[0], "discussed")].tolist() == [0]  # one piece: none
    for masked in ([crypto[0]], crypto):  # a piece or the whole word masked: the word is not found
        corrupted = row.clone()
        corrupted[0, masked] = tokenizer.mask_token_id
        assert (embeddings.coarse_ids(corrupted)[0, crypto] == 0).all()


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_a_masked_words_prediction_does_not_change_when_its_coarse_id_does(corpus, tokenizer, fusion):
    _, rows = corpus
    model = lichee_model(corpus, fusion)
    row = torch.from_numpy(rows[:1]).long()
    crypto = word_positions(tokenizer, rows[0], "cryptocurrency")
    masked = torch.zeros_like(row, dtype=torch.bool)
    masked[0, crypto] = True
    corrupted = row.masked_fill(masked, tokenizer.mask_token_id)
    coarse_row = int(model.bert.embeddings.coarse_ids(row)[0, crypto[0]])
    before = masked_logits(model, corrupted, masked)
    with torch.no_grad():
        model.bert.embeddings.coarse_embeddings.weight[coarse_row] += 5.0  # another coarse embedding for the word
    assert torch.equal(before, masked_logits(model, corrupted, masked))
    # where the word is visible its coarse embedding is read: the prediction of another word changes
    other = torch.zeros_like(masked)
    other[0, word_positions(tokenizer, rows[0], "regulation")] = True
    changed = masked_logits(model, row.masked_fill(other, tokenizer.mask_token_id), other)
    with torch.no_grad():
        model.bert.embeddings.coarse_embeddings.weight[coarse_row] -= 5.0
    assert not torch.equal(changed, masked_logits(model, row.masked_fill(other, tokenizer.mask_token_id), other))


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_a_saved_lichee_model_reloads_exactly_for_masked_lm_and_glue(corpus, tmp_path, fusion):
    model = lichee_model(corpus, fusion)
    model.save_pretrained(str(tmp_path / "model"))
    register()
    reloaded = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "model"))
    assert isinstance(reloaded, LicheeForMaskedLM)
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    classifier = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model"), num_labels=2)
    assert isinstance(classifier, LicheeForSequenceClassification)
    encoder = classifier.bert.state_dict()
    assert all(torch.equal(encoder[k], saved[f"bert.{k}"]) for k in encoder if f"bert.{k}" in saved)
    assert {"embeddings.coarse_keys", "embeddings.continuation", "embeddings.coarse_embeddings.weight"} <= set(encoder)
    ids = torch.from_numpy(corpus[1]).long()
    assert torch.equal(classifier.bert.embeddings.coarse_ids(ids), model.bert.embeddings.coarse_ids(ids))


def test_lichee_pretrains_with_its_coarse_vocabulary_and_fine_tunes_on_glue(packed, tmp_path, mirror):
    build_coarse_vocab(packed, tmp_path / "coarse.json", 64, 8)
    settings = pretrain_settings(
        "whole_word", objective="lichee", steps=6, coarse_vocab=str(tmp_path / "coarse.json"),
        lichee={"coarse_vocab_size": 64, "fusion": "sum", "max_pieces": 8},
    )  # fmt: skip
    metrics = pretrain(packed, tmp_path / "run", settings)
    assert metrics["objective"] == "lichee" and metrics["flops_ratio_to_mlm"] == 1.0  # sum fusion adds no matmul
    assert metrics["sequences_per_step"] == 14 and metrics["row_length"] == 32  # plain rows, as BERT's
    assert metrics["validation_mlm_loss"] < metrics["validation_mlm_loss_init"]
    register()
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert isinstance(model, LicheeForMaskedLM) and model.config.coarse_vocab_size == 64
    # the GLUE harness loads it with its coarse embeddings, registering the classes itself (a fresh process)
    script = (
        "import sys; from fem.finetuning.sweep import finetune; from fem.registry import get_task; "
        "from test_finetuning import SETTINGS; "
        "r = finetune(get_task('sst2'), sys.argv[1], sys.argv[2], sys.argv[3], SETTINGS); print(r['metrics'])"
    )
    args = [task_data(tmp_path, mirror, "sst2"), tmp_path / "run" / "model", tmp_path / "sst2"]
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).parent)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and (tmp_path / "sst2" / "predictions.csv").exists()
