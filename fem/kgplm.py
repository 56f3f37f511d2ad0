"""KgPLM, knowledge-guided generative and discriminative pre-training (He et al., arXiv
2012.03551; no code released), in its pipeline scheme, on the knowledge spans of `salient_span`.

One step, one shared encoder (the BERT fine-tuning loads):
1. generator: the masked LM on the corrupted row, at the masked positions (entity spans):
   cross-entropy against the original tokens, as BERT's;
2. its predictions are sampled (softmax at `temperature`, no gradient through the sample) and
   written into the masked positions of the row;
3. discriminator: the same encoder reads that row, and a small head (dense, GELU, LayerNorm,
   one logit: ELECTRA's discriminator head) says at each masked position whether the token is
   the original (label 0) or a replacement (label 1): replaced-token detection on the spans.
Loss = generator + disc_weight x discriminator, both summed over the masked positions (fem
divides by the step's predictions). The weights are ELECTRA's (google-research/electra,
configure_pretraining.py: gen_weight 1, disc_weight 50): the stored copies of the KgPLM paper
hold only its abstract. The discriminator head is trained with the encoder and dropped after
pre-training; the second encoder pass and the head count in the step's FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fem.modeling import mlm_parts
from fem.throughput import encoder_forward_flops
from fem.train_step import MaskedLMLoss


class DiscriminatorHead(torch.nn.Module):
    """ELECTRA's discriminator head: dense d -> d, GELU, LayerNorm, then one logit per token."""

    def __init__(self, hidden_size: int, layer_norm_eps: float = 1e-12):
        super().__init__()
        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        self.norm = torch.nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out = torch.nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(F.gelu(self.dense(hidden)))).squeeze(-1)


def replaced_rows(
    input_ids: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the rows with the generator's samples at the masked positions: int64 [R, L], the
    discriminator's labels at those positions: float [M], 1 where the sample is not the original)."""
    with torch.no_grad():
        sampled = torch.multinomial(F.softmax(logits.float() / temperature, dim=-1), 1)[:, 0]
    return input_ids.masked_scatter(masked, sampled), (sampled != targets).float()


class KgplmLoss(MaskedLMLoss):
    """Generator + disc_weight x discriminator, summed over the masked positions (module docstring)."""

    def __init__(self, model, disc_weight: float, temperature: float):
        super().__init__(model)
        self.discriminator = DiscriminatorHead(model.config.hidden_size, model.config.layer_norm_eps)
        self.disc_weight, self.temperature = disc_weight, temperature

    def forward(self, input_ids, masked, targets, position_ids=None, attention=None) -> torch.Tensor:
        generator, discriminator = self.losses(input_ids, masked, targets)
        return generator + self.disc_weight * discriminator

    def losses(self, input_ids, masked, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """(generator cross-entropy, discriminator binary cross-entropy), each summed over the masked positions."""
        encoder, head = mlm_parts(self.model)
        logits = head(encoder(input_ids=input_ids).last_hidden_state[masked])
        generator = F.cross_entropy(logits.float(), targets, reduction="sum")
        replaced, labels = replaced_rows(input_ids, masked, logits, targets, self.temperature)
        scores = self.discriminator(encoder(input_ids=replaced).last_hidden_state[masked])
        return generator, F.binary_cross_entropy_with_logits(scores.float(), labels, reduction="sum")


def kgplm_forward_flops(config, mask_ratio: float, rows: int, length: int) -> float:
    """What KgPLM adds to the masked LM's forward pass: the encoder's second pass over the replaced
    rows and the discriminator head (2 d^2 + 2 d per position) at about round(p * length) masked
    positions per row."""
    d = config.hidden_size
    second = encoder_forward_flops(d, config.intermediate_size, config.num_hidden_layers, rows, length)
    return second + rows * round(mask_ratio * length) * 2 * (d * d + d)
