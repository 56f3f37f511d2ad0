"""LICHEE, multi-grained embeddings (Guo et al., Findings of ACL 2021, arXiv 2108.00801;
`Tencent/Lichee`, lichee/module/torch/layer/embedding.py, `BertEmbeddingMixGrained`).

Every WordPiece also gets the id of the coarse unit that contains it: its whole word, when the
word is in a coarse vocabulary of the N most frequent multi-piece words of the pre-training
corpus (`coarse_vocabulary`; a one-piece word's coarse embedding would only repeat its fine
one). Fine and coarse embeddings are fused, summed (LICHEE's default) or concatenated and
projected back to the hidden size (LICHEE concatenates two half-width tables; fem keeps the word
table at full width so the MLM head stays tied), before the position and token-type embeddings
and the LayerNorm, as in BertEmbeddingMixGrained.forward. A token outside a known word gets
coarse row 0, one learned "no coarse unit" vector (LICHEE falls back to the token's own id).

The coarse ids are computed inside the embeddings from the input ids, so fine-tuning needs no
new inputs, and nothing leaks: a word is looked up by all its pieces as the model sees them, so a
word with a [MASK] or a random piece is not found and gets row 0. Words are WordPiece's: a
piece without the "##" prefix starts one (the tokenizer's word ids, for BERT's pre-tokenizer).
Masking with the `whole_word` strategy masks coarse units whole.

A word is found by a 62-bit hash of its piece ids (two polynomial hashes modulo primes below
2^31), looked up in the sorted keys of the vocabulary (`coarse_keys`, a saved buffer, as is the
"##" flag of every token): `from_pretrained` restores everything, once `register()` has run.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)
from transformers.models.bert.modeling_bert import BertEmbeddings

MODEL_TYPE = "fem-lichee-bert"
FUSIONS = ("sum", "concat")
_MODULI, _BASES = (2147483647, 2147483629), (1000003, 999983)  # primes below 2^31; hash bases


class LicheeConfig(BertConfig):
    """A BertConfig with LICHEE's coarse vocabulary: its size N, the fusion and the longest word (pieces)."""

    model_type = MODEL_TYPE

    def __init__(self, coarse_vocab_size: int = 1, fusion: str = "sum", max_pieces: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.coarse_vocab_size, self.fusion, self.max_pieces = coarse_vocab_size, fusion, max_pieces


def word_keys(input_ids: torch.Tensor, continuation: torch.Tensor, max_pieces: int) -> tuple[torch.Tensor, ...]:
    """(key, pieces, word start) of the word of every token: int64 [R, L] each. input_ids: int64
    [R, L]; continuation: bool [V], True for "##" pieces. key: the hash of the word's piece ids;
    pieces: its length; a row's leading "##" pieces (a word cut by the block start) get pieces 0."""
    rows, length = input_ids.shape
    cont = continuation[input_ids]
    word = torch.cumsum(~cont, dim=1)  # 1.. per word; 0 for leading "##" pieces
    positions = torch.arange(length, device=input_ids.device).expand(rows, length)
    start = torch.cummax(torch.where(cont, torch.zeros_like(positions), positions), dim=1).values
    piece = (positions - start).clamp(max=max_pieces - 1)
    key = torch.zeros(rows, length, dtype=torch.int64, device=input_ids.device)
    for modulus, base in zip(_MODULI, _BASES, strict=True):
        powers = torch.tensor([pow(base, j, modulus) for j in range(max_pieces)], device=input_ids.device)
        terms = (input_ids + 1) * powers[piece] % modulus  # < 2^62
        sums = torch.zeros(rows, length + 1, dtype=torch.int64, device=input_ids.device).scatter_add_(1, word, terms)
        key = key * (1 << 31) + sums.gather(1, word) % modulus
    counts = torch.zeros(rows, length + 1, dtype=torch.int64, device=input_ids.device)
    counts.scatter_add_(1, word, torch.ones_like(word))
    pieces = torch.where(word > 0, counts.gather(1, word), 0)
    return key, pieces, ~cont & (word > 0)


class LicheeEmbeddings(BertEmbeddings):
    """BertEmbeddings with the coarse table fused into the word embeddings (module docstring)."""

    def __init__(self, config: LicheeConfig):
        super().__init__(config)
        if config.fusion not in FUSIONS:
            raise ValueError(f"fusion {config.fusion!r}: expected one of {', '.join(FUSIONS)}")
        self.coarse_embeddings = torch.nn.Embedding(config.coarse_vocab_size + 1, config.hidden_size)
        self.fuse = torch.nn.Linear(2 * config.hidden_size, config.hidden_size) if config.fusion == "concat" else None
        self.continuation = torch.nn.Buffer(torch.zeros(config.vocab_size, dtype=torch.bool))
        self.coarse_keys = torch.nn.Buffer(torch.zeros(config.coarse_vocab_size, dtype=torch.int64))
        self.max_pieces = config.max_pieces

    def set_vocabulary(self, continuation: torch.Tensor, keys: torch.Tensor) -> None:
        """The "##" flag of every token (bool [V]) and the coarse words' keys (int64 [N], sorted,
        from `coarse_vocabulary`): word i of `keys` is coarse row i + 1."""
        if len(keys) != len(self.coarse_keys) or not bool((keys[1:] > keys[:-1]).all()):
            raise ValueError(f"expected {len(self.coarse_keys)} sorted, distinct coarse keys, got {len(keys)}")
        self.continuation.copy_(continuation)
        self.coarse_keys.copy_(keys)

    def coarse_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The coarse row of every token: int64 [R, L], 0 outside the vocabulary's words."""
        key, pieces, _ = word_keys(input_ids, self.continuation, self.max_pieces)
        index = torch.searchsorted(self.coarse_keys, key).clamp(max=len(self.coarse_keys) - 1)
        found = (self.coarse_keys[index] == key) & (pieces >= 2) & (pieces <= self.max_pieces)
        return torch.where(found, index + 1, 0)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, cache_length=0):
        if input_ids is not None and inputs_embeds is None:
            words, coarse = self.word_embeddings(input_ids), self.coarse_embeddings(self.coarse_ids(input_ids))
            inputs_embeds = words + coarse if self.fuse is None else self.fuse(torch.cat([words, coarse], dim=-1))
        return super().forward(None, token_type_ids, position_ids, inputs_embeds, cache_length)


class LicheeModel(BertModel):
    config_class = LicheeConfig

    def __init__(self, config: LicheeConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer)
        self.embeddings = LicheeEmbeddings(config)
        self.post_init()


class LicheeForMaskedLM(BertForMaskedLM):
    config_class = LicheeConfig

    def __init__(self, config: LicheeConfig):
        super().__init__(config)
        self.bert = LicheeModel(config, add_pooling_layer=False)
        self.post_init()


class LicheeForSequenceClassification(BertForSequenceClassification):
    config_class = LicheeConfig

    def __init__(self, config: LicheeConfig):
        super().__init__(config)
        self.bert = LicheeModel(config)
        self.post_init()


class LicheeForQuestionAnswering(BertForQuestionAnswering):
    config_class = LicheeConfig

    def __init__(self, config: LicheeConfig):
        super().__init__(config)
        self.bert = LicheeModel(config, add_pooling_layer=False)
        self.post_init()


def register() -> None:
    """Make the Auto classes load a saved LICHEE model (config.json's model_type) as these classes."""
    AutoConfig.register(MODEL_TYPE, LicheeConfig, exist_ok=True)
    AutoModelForMaskedLM.register(LicheeConfig, LicheeForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(LicheeConfig, LicheeForSequenceClassification, exist_ok=True)
    AutoModelForQuestionAnswering.register(LicheeConfig, LicheeForQuestionAnswering, exist_ok=True)


def coarse_vocabulary(
    blocks, continuation: torch.Tensor, size: int, max_pieces: int, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """The `size` most frequent words of 2..max_pieces pieces in `blocks` (int [N, L], packed
    training blocks): (keys int64 [n] sorted, their counts int64 [n], their piece ids); n <= size.
    Ties go to the smaller key."""
    keys, counts = [], []
    for _, key, _, chosen in _words(blocks, continuation, max_pieces, chunk):
        unique, count = torch.unique(key[chosen], return_counts=True)
        keys.append(unique), counts.append(count)
    unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    total = torch.zeros(len(unique), dtype=torch.int64).scatter_add_(0, inverse, torch.cat(counts))
    order = sorted(range(len(unique)), key=lambda i: (-int(total[i]), int(unique[i])))[:size]
    kept = torch.tensor(sorted(order, key=lambda i: int(unique[i])), dtype=torch.int64)
    keys, counts = unique[kept], total[kept]
    words: dict[int, list[int]] = {}
    wanted = set(keys.tolist())
    for ids, key, pieces, chosen in _words(blocks, continuation, max_pieces, chunk):
        for row, column in torch.nonzero(chosen).tolist():
            k = int(key[row, column])
            if k in wanted and k not in words:
                words[k] = ids[row, column : column + int(pieces[row, column])].tolist()
        if len(words) == len(wanted):
            break
    return keys, counts, [words[k] for k in keys.tolist()]


def _words(blocks, continuation, max_pieces, chunk):
    """Per chunk of blocks: (ids, word_keys' key and pieces, the first pieces of the words of
    2..max_pieces pieces (bool [R, L]))."""
    for first in range(0, len(blocks), chunk):
        ids = torch.from_numpy(np.asarray(blocks[first : first + chunk], dtype=np.int64))
        key, pieces, starts = word_keys(ids, continuation, max_pieces)
        yield ids, key, pieces, starts & (pieces >= 2) & (pieces <= max_pieces)


def build_lichee_mlm(coarse_vocab: str | None, lichee: dict, vocab_size: int, shape: dict) -> LicheeForMaskedLM:
    """A randomly initialised LICHEE masked LM (global torch seed) of BERT `shape` (fem.modeling.
    build_bert's keywords) with the coarse vocabulary in file `coarse_vocab` (fem/coarse_vocab.py)
    and pretrain.lichee's fusion and max_pieces."""
    from fem.coarse_vocab import load_coarse_vocab
    from fem.errors import ConfigError
    from fem.modeling import build_bert

    if not coarse_vocab:
        raise ConfigError("objective lichee needs its coarse vocabulary: --coarse-vocab FILE (fem coarse-vocab)")
    vocab = load_coarse_vocab(coarse_vocab)
    if vocab["vocab_size"] != vocab_size or vocab["max_pieces"] != lichee["max_pieces"]:
        raise ConfigError(
            f"{coarse_vocab}: built for a vocabulary of {vocab['vocab_size']} tokens and words of up to "
            f"{vocab['max_pieces']} pieces; this run has {vocab_size} and pretrain.lichee.max_pieces "
            f"{lichee['max_pieces']}"
        )
    coarse = {"coarse_vocab_size": len(vocab["keys"]), "fusion": lichee["fusion"], "max_pieces": lichee["max_pieces"]}
    model = build_bert(vocab_size, **shape, config_class=LicheeConfig, model_class=LicheeForMaskedLM, **coarse)
    with torch.no_grad():
        model.bert.embeddings.set_vocabulary(vocab["continuation"], vocab["keys"])
    return model


def lichee_forward_flops(hidden_size: int, fusion: str, rows: int, length: int) -> float:
    """FLOPs LICHEE adds to the encoder's forward pass: none for a sum (table lookups and adds are
    not matmuls), the projection of the concatenated embeddings (2d -> d per token) for concat."""
    return 0.0 if fusion == "sum" else rows * length * 2 * (2 * hidden_size) * hidden_size
