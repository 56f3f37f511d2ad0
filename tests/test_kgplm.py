"""KgPLM (fem/kgplm.py): the discriminator's labels, the loss, pre-training on entity spans."""

import pytest
import torch
import torch.nn.functional as F
from helpers import pretrain_settings
from test_entities import packed_entities  # noqa: F401  (the fixture: entity spans of `packed`)
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from fem.compute_matching import TOLERANCE
from fem.errors import ConfigError
from fem.kgplm import KgplmLoss, replaced_rows
from fem.modeling import build_bert
from fem.pretraining import pretrain


def test_the_discriminators_labels_are_exactly_the_replaced_positions():
    input_ids = torch.tensor([[1, 5, 6, 3, 3, 9, 2], [1, 3, 7, 8, 3, 3, 2]])
    masked = input_ids == 3
    targets = torch.tensor([10, 11, 12, 13, 14])
    sure = torch.full((5, 20), -1e4)
    picks = torch.tensor([10, 4, 12, 15, 14])  # the generator is sure of these: two of them wrong
    sure[torch.arange(5), picks] = 1e4
    replaced, labels = replaced_rows(input_ids, masked, sure, targets, temperature=1.0)
    assert torch.equal(replaced[masked], picks) and torch.equal(replaced[~masked], input_ids[~masked])
    assert labels.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]  # 1 exactly where the sample is not the original


def test_the_loss_is_the_generator_plus_the_weighted_discriminator():
    torch.manual_seed(0)
    model = build_bert(30, 16, 1, 2, 32).eval()
    loss = KgplmLoss(model, disc_weight=50.0, temperature=1.0).eval()
    input_ids = torch.randint(5, 30, (3, 10))
    masked = torch.zeros_like(input_ids, dtype=torch.bool)
    masked[:, 2:5] = True
    targets = input_ids[masked].clone()
    corrupted = input_ids.masked_fill(masked, 3)
    torch.manual_seed(1)
    generator, discriminator = loss.losses(corrupted, masked, targets)
    torch.manual_seed(1)
    total = loss(corrupted, masked, targets)
    assert torch.equal(total, generator + 50.0 * discriminator)
    logits = model.cls(model.bert(input_ids=corrupted).last_hidden_state[masked])
    assert torch.equal(generator, F.cross_entropy(logits.float(), targets, reduction="sum"))  # BERT's MLM


def test_kgplm_pretrains_on_entity_spans_at_the_flops_of_the_mlm_step(packed, packed_entities, tmp_path):  # noqa: F811
    settings = pretrain_settings("salient_span", objective="kgplm", steps=4, rows_per_step=14,
                                 entities=str(packed_entities))  # fmt: skip
    metrics = pretrain(packed, tmp_path / "run", settings)
    assert metrics["objective"] == "kgplm" and abs(metrics["flops_ratio_to_mlm"] - 1) <= TOLERANCE
    assert metrics["sequences_per_step"] < 14  # two encoder passes per row
    assert metrics["validation_mlm_loss"] < metrics["validation_mlm_loss_init"]  # the generator learns
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert type(model) is BertForMaskedLM  # the discriminator head is not saved
    with pytest.raises(
        ConfigError, match="salient_span needs the entity spans"
    ):  # the knowledge spans come from the entity stage
        pretrain(packed, tmp_path / "no-entities", pretrain_settings("salient_span", objective="kgplm", steps=1))
