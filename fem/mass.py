"""MASS, masked sequence-to-sequence pre-training (Song et al., ICML 2019, arXiv 1905.02450).

The encoder (the BERT that fine-tuning loads) sees a row whose one contiguous fragment is
corrupted (BERT's 80/10/10, strategy `fragment`); a small Transformer decoder predicts the
fragment left to right. As in MASS-unsupNMT's trainer (`microsoft/MASS`,
MASS-unsupNMT/src/trainer.py, `mask_sent`):

- fragment: round(ratio * n) consecutive maskable positions (at least 1), starting at the first
  maskable position with probability 0.2, ending at the last with probability 0.2, else at a
  uniform start (`shuffle_segments`: p >= 0.8 first, p >= 0.6 last);
- decoder input at fragment position u: the original token at u - 1 (`target_i = words[pos_i -
  1]`), i.e. the fragment shifted right by one, its first input the unmasked token before it;
  its position id u - 1 (`positions.append(pos_i - 1)`); target: the original token at u;
- decoder self-attention: causal over the fragment, left to right; cross-attention: every
  encoder position except those holding [MASK] (`enc_mask = x1.ne(params.mask_index)`), so the
  unmasked context reaches the decoder only through the encoder and cross-attention.

The decoder is `decoder_layers` transformers BertLayers with cross-attention (a BertModel with
is_decoder and add_cross_attention). It shares the encoder's word, position and token-type
embeddings and its output head (MASS shares all embeddings), so its only own parameters are its
layers and its embedding LayerNorm. It is trained with the encoder and dropped afterwards: the
saved model is the encoder with its head, as for every objective.

With a fragment of one token the decoder's input is a token the encoder already sees and its
self-attention is the 1 x 1 identity: the prediction of the masked token comes from the corrupted
row through cross-attention alone, a masked LM whose head is the decoder. The validation MLM
loss scores MASS this way at the fixed validation masks (`mass_logits(..., single=True)`: each
masked position a fragment of its own), as every objective's encoder is scored as a masked LM.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

from fem.modeling import attention_mask_4d, mlm_parts
from fem.train_step import MaskedLMLoss


def build_decoder(model, decoder_layers: int) -> BertModel:
    """A decoder for the masked LM `model` (a BertForMaskedLM): `decoder_layers` BertLayers with
    causal self-attention and cross-attention, of the encoder's width, sharing its embeddings.
    Uses the global torch seed, like the model."""
    encoder = mlm_parts(model)[0]
    config = BertConfig(**encoder.config.to_dict())
    config.num_hidden_layers, config.is_decoder, config.add_cross_attention = decoder_layers, True, True
    config.use_cache = False
    decoder = BertModel(config, add_pooling_layer=False)
    decoder.set_attn_implementation(encoder.config._attn_implementation)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(decoder.embeddings, name, getattr(encoder.embeddings, name))  # shared, as MASS's
    return decoder


def decoder_inputs(
    input_ids: torch.Tensor, masked: torch.Tensor, targets: torch.Tensor | None, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(decoder input ids, position ids, valid) of R rows, each padded to `width` fragment
    positions in left-to-right order: int64 [R, W], int64 [R, W], bool [R, W]. The input at
    fragment position u is the original token at u - 1 (the corrupted row with `targets` put
    back at `masked`); targets None: the corrupted token (validation: fragments of one token)."""
    rows, length = input_ids.shape
    originals = input_ids if targets is None else input_ids.masked_scatter(masked, targets)
    columns = torch.arange(length, device=input_ids.device)
    order = torch.argsort(torch.where(masked, columns, columns + length), dim=1)[:, :width]  # masked first
    valid = torch.arange(width, device=input_ids.device)[None, :] < masked.sum(dim=1, keepdim=True)
    place = torch.where(valid, order, 1)  # a padded slot reads position 0 (any valid one would do)
    return originals.gather(1, place - 1), place - 1, valid


def mass_logits(
    model, decoder: BertModel, input_ids: torch.Tensor, masked: torch.Tensor, targets: torch.Tensor | None,
    mask_token_id: int, width: int | None = None, single: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The head's logits at the masked positions, predicted by the decoder: [M, V] in row-major
    order of `masked` (bool [R, L]; input_ids int64 [R, L], corrupted). single: every masked
    position is a fragment of its own (self-attention only to itself; `targets` unused)."""
    encoder, head = mlm_parts(model)
    implementation = encoder.config._attn_implementation
    width = width or int(masked.sum(dim=1).max())
    encoded = encoder(input_ids=input_ids).last_hidden_state
    ids, positions, valid = decoder_inputs(input_ids, masked, None if single else targets, width)
    rows = len(input_ids)
    own = torch.eye(width, dtype=torch.bool, device=ids.device)
    causal = own if single else torch.ones(width, width, dtype=torch.bool, device=ids.device).tril()
    self_attention = (causal[None] & valid[:, None, :]) | own[None]  # a pad sees itself only
    cross = (input_ids != mask_token_id)[:, None, :].expand(rows, width, -1)
    hidden = decoder(
        input_ids=ids, position_ids=positions, attention_mask=attention_mask_4d(self_attention, implementation),
        encoder_hidden_states=encoded, encoder_attention_mask=attention_mask_4d(cross, implementation),
        use_cache=False,
    ).last_hidden_state  # fmt: skip
    return head(hidden[valid])


class MassLoss(MaskedLMLoss):
    """The summed cross-entropy of the decoder's fragment predictions, as a module (encoder,
    head and decoder: DistributedDataParallel wraps it as MaskedLMLoss)."""

    def __init__(self, model, decoder: BertModel, mask_token_id: int, width: int):
        super().__init__(model)
        self.decoder, self.mask_token_id, self.width = decoder, mask_token_id, width

    def forward(self, input_ids, masked, targets, position_ids=None, attention=None) -> torch.Tensor:
        logits = mass_logits(self.model, self.decoder, input_ids, masked, targets, self.mask_token_id, self.width)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")

    def validation_logits(self, input_ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Every masked position predicted as a fragment of its own (module docstring)."""
        return mass_logits(self.model, self.decoder, input_ids, masked, None, self.mask_token_id, single=True)


def decoder_forward_flops(
    hidden_size: int, intermediate_size: int, decoder_layers: int, rows: int, width: int, length: int
) -> float:
    """FLOPs of the decoder's forward pass over `rows` fragments of `width` positions attending
    to encoder rows of `length` tokens, per layer: self-attention projections and feed-forward
    on W tokens (8 d^2 + 4 d ff each), self-attention scores (4 W^2 d), cross-attention Q and
    output on W (4 d^2 each) and K, V on L tokens (4 d^2 each), cross scores (4 W L d). The head
    at the predictions is counted as every objective's (fem.throughput.head_forward_flops)."""
    d, ff, w = hidden_size, intermediate_size, width
    per_row = w * (8 * d * d + 4 * d * ff) + 4 * w * w * d + 4 * d * d * w + 4 * d * d * length + 4 * w * length * d
    return decoder_layers * rows * per_row
