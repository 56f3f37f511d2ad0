"""Model construction and the sparse masked-LM loss.

The LM head (a hidden -> vocabulary projection, the most expensive layer of a small BERT)
runs only at the masked positions, as in cramming: with p = 0.15 that is 15% of the work
of the dense head, and the loss is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM


def build_bert(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
    dropout: float | None = None,
) -> BertForMaskedLM:
    """A randomly initialised BERT with an MLM head (uses the global torch seed). `dropout`:
    hidden and attention dropout probability (None: BERT's 0.1)."""
    drop = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        **drop,
    )
    return BertForMaskedLM(config)


def load_pretrained_mlm(source: str, vocab_size: int):
    """A pretrained encoder with its MLM head (a hub id such as FacebookAI/roberta-base, a
    folder, or "pip:<package>"); a head missing from the checkpoint is initialised fresh, as
    transformers does. Its vocabulary must be the tokenizer's (`vocab_size`)."""
    from transformers import AutoModelForMaskedLM

    from fem.tokenization import resolve_pretrained_source

    model = AutoModelForMaskedLM.from_pretrained(resolve_pretrained_source(source))
    if model.config.vocab_size < vocab_size:
        raise ValueError(
            f"model {source!r} has {model.config.vocab_size} token embeddings but the tokenized data has a "
            f"vocabulary of {vocab_size}; tokenize with the model's own tokenizer"
        )
    return model


def mlm_parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(encoder, LM head) of a masked-LM model: BERT's `bert` / `cls`, RoBERTa's `roberta` /
    `lm_head` (any model whose base model returns last_hidden_state)."""
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no `cls` or `lm_head` masked-LM head")
    return model.base_model, head


def sparse_mlm_loss(
    model: BertForMaskedLM,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy (nats) over masked positions, with the LM head applied only there:
    the mean, or the sum with reduction="sum" (for gradient accumulation).

    input_ids: int64 [R, L]; masked: bool [R, L]; targets: int64 [M] in row-major order of
    `masked`. Packed blocks have no padding, so no attention mask is needed.
    """
    return F.cross_entropy(masked_logits(model, input_ids, masked).float(), targets, reduction=reduction)


def masked_logits(model: BertForMaskedLM, input_ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The LM head's logits at the masked positions only: [M, V] for input_ids int64 [R, L]
    and masked bool [R, L] with M True entries, in row-major order."""
    encoder, head = mlm_parts(model)
    hidden = encoder(input_ids=input_ids).last_hidden_state  # [R, L, H]
    return head(hidden[masked])
