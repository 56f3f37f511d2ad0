"""A WordPiece vocabulary learned on the pre-training corpus (`tokenizer.source: trained`).

At the tiny scale the 30,522-token bert-base-uncased vocabulary is most of the model: its
embedding and output layer hold 3.9M of a 4.4M-parameter BERT and most of a step's time.
A vocabulary learned on the corpus's own training documents (never its validation
documents) is smaller and fits the text. Same recipe as BERT's: lower-cased, accents
stripped, split on whitespace and punctuation, then WordPiece with "##" continuations,
and BERT's special tokens, so the result loads as a `BertTokenizerFast` like any hub
tokenizer.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, in this order


def train_wordpiece(texts: list[str], vocab_size: int, out_dir: str | Path, min_frequency: int = 2) -> int:
    """Learn a WordPiece vocabulary of at most `vocab_size` tokens (special tokens included)
    on `texts` and save it to `out_dir` as a BertTokenizerFast (save_pretrained). Returns
    the size of the learned vocabulary. Deterministic for the same texts in the same order."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # The trainer adds the alphabet in hash order, so ids differ between runs while the
    # vocabulary does not. WordPiece matches the longest known piece, whatever its id: number
    # the tokens specials first, then in sorted order, and the file is the same every run.
    learned = set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + sorted(learned))}
    tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    wrapped = BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=True, model_max_length=512)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out_dir))
    return tokenizer.get_vocab_size()


def train_corpus_tokenizer(
    corpus_dir: str | Path, out_dir: str | Path, vocab_size: int, validation_fraction: float, max_documents: int | None
) -> dict:
    """`fem train-tokenizer`: learn the vocabulary on the training documents of the corpus
    saved at `corpus_dir`, split exactly as `fem tokenize` splits it (same documents, same
    validation_fraction and max_documents), so no validation text shapes the vocabulary.
    Returns what it did: documents used, vocabulary size."""
    from fem.tokenization import read_and_split_corpus

    train_texts, _validation_texts, _stats = read_and_split_corpus(corpus_dir, validation_fraction, max_documents)
    size = train_wordpiece(train_texts, vocab_size, out_dir)
    print(f"WordPiece vocabulary of {size} tokens learned on {len(train_texts)} training documents -> {out_dir}")
    return {"training_documents": len(train_texts), "vocab_size": size}
