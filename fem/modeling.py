"""Model construction and the sparse masked-LM loss.

The LM head (a hidden -> vocabulary projection, the most expensive layer of a small BERT)
runs only at the masked positions, as in cramming: with p = 0.15 that is 15% of the work
of the dense head, and the loss is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from fem.settings import PretrainSettings


def build_bert(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 512,
    pad_token_id: int = 0,
    dropout: float | None = None,
    config_class=BertConfig,
    model_class=BertForMaskedLM,
    **extra_config,
) -> BertForMaskedLM:
    """A randomly initialised BERT with an MLM head (uses the global torch seed). `dropout`:
    hidden and attention dropout probability (None: BERT's 0.1). config_class, model_class and
    extra_config: another BERT-shaped model (fem/lichee.py's)."""
    drop = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        **drop,
        **extra_config,
    )
    return model_class(config)


def build_model(settings: PretrainSettings, meta: dict, block_size: int) -> torch.nn.Module:
    """The model a run starts from (on the CPU): seeded with settings.seed, a BERT of the
    settings' shape, or settings.init_from continued (its MLM head fresh when not shipped)."""
    torch.manual_seed(settings.seed)  # also seeds a fresh MLM head of a pretrained encoder
    if settings.init_from:
        return load_pretrained_mlm(settings.init_from, meta["vocab_size"])
    shape = {key: getattr(settings, key) for key in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    shape |= {"intermediate_size": settings.intermediate_size, "dropout": settings.dropout}
    shape |= {"max_position_embeddings": max(512, block_size), "pad_token_id": meta["pad_token_id"]}
    if settings.objective == "lichee":  # LICHEE's fused fine + coarse embeddings (fem/lichee.py)
        from fem.lichee import build_lichee_mlm

        return build_lichee_mlm(settings.coarse_vocab, settings.lichee, meta["vocab_size"], shape)
    return build_bert(
        vocab_size=meta["vocab_size"],
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=max(512, block_size),
        pad_token_id=meta["pad_token_id"],
        dropout=settings.dropout,
    )


def load_pretrained_mlm(source: str, vocab_size: int):
    """A pretrained encoder with its MLM head (a hub id such as FacebookAI/roberta-base, a
    folder, or "pip:<package>"); a head missing from the checkpoint is initialised fresh, as
    transformers does. Its vocabulary must be the tokenizer's (`vocab_size`)."""
    from transformers import AutoModelForMaskedLM

    from fem.lichee import register
    from fem.tokenization import resolve_pretrained_source

    register()  # a saved LICHEE model loads as one
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
    position_ids: torch.Tensor | None = None,
    attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy (nats) over masked positions, with the LM head applied only there:
    the mean, or the sum with reduction="sum" (for gradient accumulation).

    input_ids: int64 [R, L]; masked: bool [R, L]; targets: int64 [M] in row-major order of
    `masked`. Packed blocks have no padding, so no attention mask is needed; an augmented row
    (fem/augmented.py) brings its position ids (int64 [R, L]) and attention (bool [R, L, L]).
    """
    logits = masked_logits(model, input_ids, masked, position_ids, attention)
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def masked_logits(
    model: BertForMaskedLM,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """The LM head's logits at the masked positions only: [M, V] for input_ids int64 [R, L]
    and masked bool [R, L] with M True entries, in row-major order. position_ids: int64
    [R, L] (None: 0..L-1); attention: bool [R, L, L], True where token i may attend to token j
    (None: everything), passed to the encoder as its 4-D mask (attention_mask_4d)."""
    encoder, head = mlm_parts(model)
    mask = None if attention is None else attention_mask_4d(attention, model.config._attn_implementation)
    hidden = encoder(input_ids=input_ids, position_ids=position_ids, attention_mask=mask).last_hidden_state
    return head(hidden[masked])  # [M, V]


def attention_mask_4d(attention: torch.Tensor, implementation: str) -> torch.Tensor:
    """bool [R, L, L] (True: may attend) as the encoder's 4-D mask [R, 1, L, L]. transformers
    passes a 4-D mask to the attention unchanged: SDPA takes the boolean mask (True = attend);
    eager attention adds the mask to its scores, so it gets 0 / the most negative float."""
    mask = attention[:, None]
    if implementation == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
        ~mask, torch.finfo(torch.float32).min
    )
