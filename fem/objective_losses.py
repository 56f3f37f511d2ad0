"""What each objective trains beyond the encoder and its head, and what that costs.

mlm, pmlm, plm and mpnet train the encoder and its masked-LM head only (MaskedLMLoss; the
augmented rows of pmlm, plm and mpnet bring their position ids and attention masks). mass adds
a decoder (fem/mass.py, MassLoss), trained with the encoder and dropped afterwards. Its FLOPs
count in the step's model FLOPs (`auxiliary_forward_flops`), so compute matching
(fem/compute_matching.py) and the metrics see them, and its parameters are in the optimizer
and the resumable state, not in the saved model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fem.fragment_masking import fragment_width
from fem.settings import PretrainSettings
from fem.train_step import MaskedLMLoss

AuxiliaryFlops = Callable[[int, int], float]  # (rows, row length) -> forward FLOPs beyond the encoder and head


def build_loss_module(model: torch.nn.Module, settings: PretrainSettings, mask_token_id: int, block_size: int):
    """The loss module of `settings.objective` around `model` (a BertForMaskedLM, its attention
    implementation set): its auxiliary parts are built here, with the global torch seed."""
    if settings.objective == "kgplm":
        from fem.kgplm import KgplmLoss

        return KgplmLoss(model, float(settings.kgplm["disc_weight"]), float(settings.kgplm["temperature"]))
    if settings.objective == "mass":
        from fem.mass import MassLoss, build_decoder

        width = fragment_width(block_size, settings.mass["fragment_ratio"])
        return MassLoss(model, build_decoder(model, int(settings.mass["decoder_layers"])), mask_token_id, width)
    return MaskedLMLoss(model)


def auxiliary_forward_flops(settings: PretrainSettings, model_config, block_size: int) -> AuxiliaryFlops | None:
    """Forward FLOPs of the objective's parts beyond the encoder and its head, as a function of
    (rows, row length); None when it has none. mass: its decoder over the padded fragment;
    lichee with fusion concat: the projection of the fused embeddings; kgplm: the encoder's
    second pass and the discriminator head."""
    if settings.objective == "kgplm":
        from fem.kgplm import kgplm_forward_flops

        return lambda rows, length: kgplm_forward_flops(model_config, settings.mask_ratio, rows, length)
    if settings.objective == "lichee":
        from fem.lichee import lichee_forward_flops

        fusion, hidden = settings.lichee["fusion"], model_config.hidden_size
        return None if fusion == "sum" else lambda rows, length: lichee_forward_flops(hidden, fusion, rows, length)
    if settings.objective != "mass":
        return None
    from fem.mass import decoder_forward_flops

    width = fragment_width(block_size, settings.mass["fragment_ratio"])
    layers = int(settings.mass["decoder_layers"])
    config = model_config
    return lambda rows, length: decoder_forward_flops(
        config.hidden_size, config.intermediate_size, layers, rows, width, length
    )


def unwrapped(loss_module: torch.nn.Module) -> MaskedLMLoss:
    """The loss module itself, out of DistributedDataParallel when wrapped."""
    return getattr(loss_module, "module", loss_module)


def auxiliary_state(run) -> dict:
    """The loss module's parameters beyond the model (MASS's decoder), for the resumable state:
    {name: tensor}, empty for the objectives without any."""
    return {
        name: value for name, value in unwrapped(run.loss_module).state_dict().items() if not name.startswith("model.")
    }


def parameter_count(model: torch.nn.Module, loss_module: torch.nn.Module) -> str:
    """The model's parameters in millions, and those the loss module adds (MASS's decoder)."""
    own = sum(p.numel() for p in model.parameters())
    extra = sum(p.numel() for p in loss_module.parameters()) - own
    return f"{own / 1e6:.2f}M parameters" + (
        f" (+{extra / 1e6:.2f}M in the {type(loss_module).__name__})" if extra else ""
    )
