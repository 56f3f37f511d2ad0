"""MASS (fem/mass.py, fem/fragment_masking.py): the fragment, what the decoder sees, the
length-1 reduction to a masked LM, and pre-training with a decoder at matched FLOPs."""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from helpers import cli_args, pretrain_settings
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from fem.compute_matching import TOLERANCE
from fem.fragment_masking import FIRST, LAST, fragment_masks
from fem.mass import build_decoder, decoder_inputs, mass_logits
from fem.modeling import build_bert
from fem.pretraining import pretrain

MASK, VOCAB, LENGTH = 3, 60, 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bert = build_bert(VOCAB, 32, 2, 2, 64, pad_token_id=0).eval()
    decoder = build_decoder(bert, 2).eval()
    return bert, decoder


def fragment_rows(ratio: float, seed: int = 1, rows: int = 4):
    """Corrupted rows ([MASK] on the fragment), the fragment, its original tokens, the originals."""
    blocks = np.random.default_rng(seed).integers(5, VOCAB, (rows, LENGTH))
    blocks[:, 0], blocks[:, -1] = 1, 2  # [CLS] ... [SEP]
    masked = torch.from_numpy(fragment_masks(seed, 0, np.arange(rows), blocks >= 5, ratio)[:, 0])
    originals = torch.from_numpy(blocks)
    return originals.masked_fill(masked, MASK), masked, originals[masked], originals


def test_a_fragment_is_contiguous_of_its_ratio_and_a_function_of_seed_epoch_and_index():
    maskable = np.ones((2000, 40), dtype=bool)
    maskable[:, [0, 39]] = False  # 38 maskable positions
    masks = fragment_masks(7, 3, np.arange(2000), maskable, 0.5)[:, 0]
    assert (masks.sum(axis=1) == 19).all() and not masks[:, [0, 39]].any()
    starts = masks.argmax(axis=1)
    assert all(masks[row, start : start + 19].all() for row, start in enumerate(starts))  # one contiguous run
    assert (masks == fragment_masks(7, 3, np.arange(2000), maskable, 0.5)[:, 0]).all()
    assert not (masks == fragment_masks(7, 4, np.arange(2000), maskable, 0.5)[:, 0]).all()
    # MASS's start: the first slot with probability 0.2, the last 0.2, else uniform over the 20 starts
    assert np.mean(starts == 1) == pytest.approx(FIRST + 0.6 / 20, abs=0.03)
    assert np.mean(starts == 20) == pytest.approx(LAST + 0.6 / 20, abs=0.03)
    assert np.mean(starts == 10) == pytest.approx(0.6 / 20, abs=0.015)


def test_the_decoder_input_is_the_fragment_shifted_right_at_its_own_positions():
    corrupted, masked, targets, originals = fragment_rows(0.5)
    ids, positions, valid = decoder_inputs(corrupted, masked, targets, 8)
    for row in range(len(corrupted)):
        fragment = torch.nonzero(masked[row])[:, 0]
        assert torch.equal(positions[row][valid[row]], fragment - 1)  # the input token's own position
        assert torch.equal(ids[row][valid[row]], originals[row, fragment - 1])  # originals, not [MASK]s


def encoder_output_replaced(bert, replacement=None):
    """A forward hook on the encoder: its last hidden state becomes `replacement(hidden)`."""

    def hook(module, args, output):
        output.last_hidden_state = replacement(output.last_hidden_state)
        return output

    return bert.bert.register_forward_hook(hook)


def test_the_decoder_sees_the_unmasked_context_only_through_cross_attention(model):
    bert, decoder = model
    corrupted, masked, targets, originals = fragment_rows(0.5)
    constant = torch.randn(len(corrupted), LENGTH, 32)
    handle = encoder_output_replaced(bert, lambda hidden: constant)  # cross-attention cut off from the input
    try:
        before = mass_logits(bert, decoder, corrupted, masked, targets, MASK)
        context = ~masked & ~torch.roll(masked, -1, dims=1) & (corrupted >= 5)  # not the token before the fragment
        changed = torch.where(context, (corrupted + 7) % (VOCAB - 5) + 5, corrupted)
        assert torch.equal(before, mass_logits(bert, decoder, changed, masked, targets, MASK))
        before_fragment = torch.roll(masked, -1, dims=1) & ~masked  # the decoder's first input
        changed = torch.where(before_fragment, (corrupted + 7) % (VOCAB - 5) + 5, corrupted)
        assert not torch.equal(before, mass_logits(bert, decoder, changed, masked, targets, MASK))
    finally:
        handle.remove()
    # through cross-attention it sees the encoder's output everywhere but at the [MASK]s
    leaf = {}

    def as_leaf(hidden):
        leaf["hidden"] = hidden.detach().requires_grad_()
        return leaf["hidden"]

    handle = encoder_output_replaced(bert, as_leaf)
    try:
        mass_logits(bert, decoder, corrupted, masked, targets, MASK).sum().backward()
    finally:
        handle.remove()
    seen = leaf["hidden"].grad.abs().sum(dim=-1) > 0
    assert torch.equal(seen, corrupted != MASK)


def test_a_fragment_token_is_predicted_without_itself_or_later_ones(model):
    bert, decoder = model
    corrupted, masked, targets, _ = fragment_rows(0.5, rows=1)
    before = mass_logits(bert, decoder, corrupted, masked, targets, MASK)
    for j in range(len(targets) - 1):
        later = targets.clone()
        later[j:] = (later[j:] + 11) % (VOCAB - 5) + 5  # the tokens at fragment steps >= j
        after = mass_logits(bert, decoder, corrupted, masked, later, MASK)
        assert torch.equal(before[: j + 1], after[: j + 1])  # step j predicted from steps < j only
        assert not torch.equal(before[j + 1], after[j + 1])  # step j + 1 reads token j


def test_a_fragment_of_one_token_is_a_masked_lm(model):
    bert, decoder = model
    corrupted, masked, targets, _ = fragment_rows(1e-6)  # round(ratio * n) < 1: one token per row
    assert (masked.sum(dim=1) == 1).all()
    training = mass_logits(bert, decoder, corrupted, masked, targets, MASK)
    # the decoder's one input is a token the encoder sees too: the training logits are exactly those
    # of scoring the row as a masked LM (every masked position its own fragment), and the target
    # itself changes nothing
    assert torch.equal(training, mass_logits(bert, decoder, corrupted, masked, None, MASK, single=True))
    assert torch.equal(training, mass_logits(bert, decoder, corrupted, masked, (targets + 1) % VOCAB, MASK))


def test_mass_pretrains_at_the_flops_of_the_mlm_step_and_saves_the_encoder(packed, tmp_path):
    settings = pretrain_settings("fragment", objective="mass", steps=6, rows_per_step=14)
    metrics = pretrain(packed, tmp_path / "run", settings)
    assert metrics["objective"] == "mass" and metrics["strategy"] == "fragment"
    assert abs(metrics["flops_ratio_to_mlm"] - 1) <= TOLERANCE
    assert metrics["sequences_per_step"] < 14  # the decoder and 50% predictions cost more per row
    assert metrics["predictions_per_step"] == pytest.approx(15 * metrics["sequences_per_step"])  # 30 maskable
    assert metrics["validation_mlm_loss"] < metrics["validation_mlm_loss_init"]
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert isinstance(model, BertForMaskedLM) and model.config.num_hidden_layers == 1  # the decoder is not saved


def test_a_killed_mass_run_resumes_with_its_decoder(packed, tmp_path):
    settings = pretrain_settings("fragment", objective="mass", steps=40, rows_per_step=14, validate_every=10)
    reference = pretrain(packed, tmp_path / "reference", settings)
    out = tmp_path / "killed"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(cli_args(packed, out, settings, resume_every=5), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    for line in child.stdout:
        if "step 20: saved resumable state" in line:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=60)
    resumed = subprocess.run(cli_args(packed, out, settings, resume_every=5), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert 20 <= metrics["resumed_from_step"] < 40
    # the validation loss is the decoder's: equal only if the decoder was restored bit for bit
    assert metrics["validation_mlm_loss"] == reference["validation_mlm_loss"]
    log_a = json.loads((tmp_path / "reference" / "train_log.json").read_text())
    assert log_a["loss"] == json.loads((out / "train_log.json").read_text())["loss"]
