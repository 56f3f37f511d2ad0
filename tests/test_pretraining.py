import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_args, pretrain_settings
from transformers import AutoModelForMaskedLM

from fem.collation import MaskingSpec, mask_rows, sequence_schedule
from fem.modeling import build_bert
from fem.optimization import cosine_schedule, linear_schedule
from fem.pretraining import pretrain
from fem.registry import ENTITY_STRATEGIES, STRATEGIES
from fem.settings import PretrainImplementation
from fem.throughput import training_flops
from fem.train_step import MaskedLMLoss, train_step
from fem.validation import unigram_baseline, validate, validation_batches, validation_targets

ROOT = Path(__file__).resolve().parent.parent


def test_schedule_visits_every_block_once_per_epoch_and_crosses_epochs():
    cache: dict = {}
    steps = [sequence_schedule(s, 7, 20, seed=1, cache=cache) for s in range(6)]
    epochs = np.concatenate([e for e, _ in steps])
    indices = np.concatenate([i for _, i in steps])
    assert sorted(indices[:20]) == list(range(20)) and sorted(indices[20:40]) == list(range(20))
    assert epochs.tolist() == [0] * 20 + [1] * 20 + [2] * 2
    # pure: asking for step 3 alone, with a fresh cache, gives the same sequences
    assert np.array_equal(sequence_schedule(3, 7, 20, seed=1, cache={})[1], steps[3][1])


def test_linear_schedule_warms_up_then_decays_to_zero():
    assert [round(linear_schedule(s, 2, 6), 3) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_cosine_schedule_warms_up_then_follows_half_a_cosine():
    assert [round(cosine_schedule(s, 2, 6), 3) for s in range(7)] == [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]


# the entity strategies need the entity stage's spans: tests/test_entities.py pre-trains with them
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in ENTITY_STRATEGIES])
def test_pretrain_writes_a_loadable_checkpoint_and_matched_logs(packed, tmp_path, strategy):
    metrics = pretrain(packed, tmp_path / "run", pretrain_settings(strategy, steps=6, validate_every=2, save_steps=[3]))
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert model.config.hidden_size == 32
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    multi_copy = strategy in ("random_k", "fe", "fe_contiguous", "fe_span")
    # compute matched: 14 rows every step; K-copy strategies take 14 / 7 sequences
    assert log["rows"] == [14] * 6
    assert log["sequences"] == ([2] * 6 if multi_copy else [14] * 6)
    # 30 maskable positions per block: 30/7 -> 4 or 5 per copy (sum 30 per sequence), else round(0.15*30) = 4
    if strategy in ("random_k", "fe", "fe_contiguous", "fe_span"):
        assert log["predictions"] == [60] * 6
    elif strategy in ("random", "span"):
        assert log["predictions"] == [14 * 4] * 6
    elif strategy == "block":  # blocks until at least 4 per row, the last one up to 6 long: 4..9 per row
        assert all(14 * 4 <= p <= 14 * 9 for p in log["predictions"])
    elif strategy == "fragment":  # MASS's fragment: round(0.5 * 30) = 15 per row
        assert log["predictions"] == [14 * 15] * 6
    else:  # whole words: as close to 4 per row as words allow
        assert all(30 <= p <= 90 for p in log["predictions"])
    assert log["validation"]["step"] == [0, 2, 3, 4, 6]
    assert metrics["validation_mlm_loss"] == log["validation"]["loss"][-1]
    assert np.isfinite(metrics["validation_mlm_loss"]) and metrics["tokens_per_second"] > 0
    assert metrics["validation_mlm_loss"] < metrics["validation_mlm_loss_init"]
    assert 0 < metrics["masking_share"] < 1
    intermediate = tmp_path / "run" / "checkpoints" / "step-3"
    assert AutoModelForMaskedLM.from_pretrained(str(intermediate)).config.hidden_size == 32
    assert json.loads((intermediate / "checkpoint_metrics.json").read_text())["step"] == 3
    assert not (tmp_path / "run" / "resume").exists()  # removed once the run is complete


@pytest.fixture
def fe_rows(packed):
    """(one step's rows: 2 real blocks x 7 fe copies, vocabulary size)."""
    blocks = np.load(packed / "train.npy")[:2].astype(np.int64)
    meta = json.loads((packed / "meta.json").read_text())
    spec = MaskingSpec("fe", 0, 0.15, 7, {"mask": 0.8, "random": 0.1, "keep": 0.1}, meta["mask_token_id"],
                       meta["vocab_size"], tuple(meta["unmaskable_token_ids"]))  # fmt: skip
    return mask_rows(blocks, np.zeros(2, dtype=np.int64), np.arange(2), spec), meta["vocab_size"]


def test_gradient_accumulation_gives_the_same_step(fe_rows):
    """Same rows in 1 or 3 micro-batches: the same gradient, so the same parameters after
    two steps (dropout off; plain SGD, because Adam's normalisation would magnify rounding
    noise in near-zero gradients)."""
    rows, vocab = fe_rows
    results = []
    for parts in (1, 3):
        torch.manual_seed(0)
        model = build_bert(vocab, 32, 1, 2, 64).eval()  # eval: no dropout
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        losses = [train_step(MaskedLMLoss(model), rows, optimizer, scheduler, 1.0, parts)[0] for _ in range(2)]
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (loss_1, params_1), (loss_3, params_3) = results
    assert np.allclose(loss_1, loss_3, rtol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(params_1, params_3, strict=True)) < 1e-6
    assert not torch.equal(params_1[0], build_bert(vocab, 32, 1, 2, 64).bert.embeddings.word_embeddings.weight)


def test_a_run_killed_with_sigkill_resumes_to_identical_parameters(packed, tmp_path):
    """Kill a real `fem pretrain` process mid-run, start it again: it resumes from its last
    saved state and ends with exactly the parameters of an uninterrupted run."""
    run = pretrain_settings("fe", steps=300, log_every=1000, validate_every=50, save_steps=[100])
    reference = pretrain(packed, tmp_path / "reference", run)

    out = tmp_path / "killed"
    child = subprocess.Popen(
        cli_args(packed, out, run, resume_every=10), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in child.stdout:
        if "step 120: saved resumable state" in line:
            os.kill(child.pid, signal.SIGKILL)
            break
    assert child.wait(timeout=60) == -signal.SIGKILL
    state = torch.load(out / "resume" / "state.pt", weights_only=False)
    assert 120 <= state["step"] < 300 and not (out / "metrics.json").exists()
    assert (out / "resume" / "checkpoints" / "step-100").is_dir()  # finished work kept

    resumed = subprocess.run(cli_args(packed, out, run, resume_every=10), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {state['step']}" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == state["step"]
    a = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "reference" / "model")).state_dict()
    b = AutoModelForMaskedLM.from_pretrained(str(out / "model")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    assert metrics["validation_mlm_loss"] == reference["validation_mlm_loss"]
    log_a = json.loads((tmp_path / "reference" / "train_log.json").read_text())
    log_b = json.loads((out / "train_log.json").read_text())
    assert log_a["loss"] == log_b["loss"] and log_a["validation"] == log_b["validation"]
    mid_a = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "reference" / "checkpoints" / "step-100")).state_dict()
    mid_b = AutoModelForMaskedLM.from_pretrained(str(out / "checkpoints" / "step-100")).state_dict()
    assert all(torch.equal(mid_a[k], mid_b[k]) for k in mid_a)


def test_a_saved_state_of_other_settings_is_not_resumed(packed, tmp_path, capsys):
    run = pretrain_settings("random", steps=6, save_steps=[3])
    pretrain(packed, tmp_path / "a", run, PretrainImplementation(resume_every=2))
    # leave a state behind, as a killed run would, then change a science setting
    state = {"fingerprint": "another run", "step": 4}
    (tmp_path / "a" / "resume").mkdir()
    torch.save(state, tmp_path / "a" / "resume" / "state.pt")
    metrics = pretrain(packed, tmp_path / "a", run)
    assert metrics["resumed_from_step"] == 0
    assert "ignoring" in capsys.readouterr().out


def test_pretrain_is_deterministic_for_a_seed(packed, tmp_path):
    first = pretrain(packed, tmp_path / "a", pretrain_settings("fe"))
    second = pretrain(packed, tmp_path / "b", pretrain_settings("fe"))
    other_seed = pretrain(packed, tmp_path / "c", pretrain_settings("fe", seed=4))
    log_a = json.loads((tmp_path / "a" / "train_log.json").read_text())
    log_b = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert log_a["loss"] == log_b["loss"]
    assert first["validation_mlm_loss"] == second["validation_mlm_loss"]
    assert other_seed["validation_mlm_loss"] != first["validation_mlm_loss"]
    a = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "a" / "model")).state_dict()
    b = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "b" / "model")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_autocast_changes_the_loss_only_by_rounding(fe_rows):
    """The bf16 switch is a speed setting: the first step's loss matches float32 closely."""
    rows, vocab = fe_rows
    losses = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = build_bert(vocab, 32, 1, 2, 64).eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        losses.append(train_step(MaskedLMLoss(model), rows, optimizer, scheduler, 1.0, 1, bf16=bf16)[0])
    assert losses[0] != losses[1] and abs(losses[0] - losses[1]) / losses[0] < 0.01


@pytest.mark.slow
def test_throughput_benchmark_runs_both_engines_and_every_strategy(packed):
    """A few steps of benchmarks/pretrain_throughput.py: it must keep working (the numbers
    themselves are measured by running it in full, not asserted here)."""
    script = ROOT / "benchmarks" / "pretrain_throughput.py"
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(packed), "--steps", "3", "--masking-steps", "2", "--rows", "7"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ratio = [line for line in done.stdout.splitlines() if line.startswith("ratio fem / Hugging Face:")]
    assert len(ratio) == 1 and float(ratio[0].split(":")[1]) > 0
    lines = [line.split() for line in done.stdout.splitlines()]
    for strategy in STRATEGIES:
        if strategy in ENTITY_STRATEGIES:  # no spaCy spans in plain data: said, not measured
            assert [strategy, "not", "measured:"] in [words[:3] for words in lines]
        else:
            assert any(words[:1] == [strategy] and words[1].endswith("%") for words in lines)


def test_train_log_holds_the_pre_clip_gradient_norm_of_every_step(packed, tmp_path):
    """Step 1's logged norm equals the norm of a gradient recomputed here, independently (the
    same initialisation and dropout stream, the dense MLM head, a float64 sum of squares);
    clipped_share and the norm summary in metrics.json come from the logged norms."""
    run = pretrain_settings("random", steps=4, max_grad_norm=1.4)  # between the norms of this run's steps
    metrics = pretrain(packed, tmp_path / "run", run)
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert len(log["grad_norm"]) == len(log["loss"]) == 4

    meta = json.loads((packed / "meta.json").read_text())
    train = np.load(packed / "train.npy")
    torch.manual_seed(run.seed)
    model = build_bert(meta["vocab_size"], 32, 1, 2, 64, pad_token_id=meta["pad_token_id"], dropout=0.1)
    model.set_attn_implementation("sdpa")
    spec = MaskingSpec("random", run.seed, 0.15, 7, run.replacement, meta["mask_token_id"], meta["vocab_size"],
                       tuple(meta["unmaskable_token_ids"]))  # fmt: skip
    epochs, indices = sequence_schedule(0, 14, len(train), run.seed, {})
    rows = mask_rows(train[indices], epochs, indices, spec)
    logits = model(input_ids=rows.input_ids).logits[rows.masked]  # every position through the head
    torch.nn.functional.cross_entropy(logits, rows.targets).backward()
    norm = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()) ** 0.5
    # torch's float32 norm of the 1M-entry embedding gradient is off by ~3e-4 of this float64 one
    assert log["grad_norm"][0] == pytest.approx(norm, rel=1e-3)

    norms = np.array(log["grad_norm"])
    assert metrics["clipped_share"] == np.mean(norms > 1.4) and 0 < metrics["clipped_share"] < 1
    assert metrics["grad_norm"] == {"median": np.median(norms), "p90": np.percentile(norms, 90), "max": norms.max()}


def test_validation_reports_masked_token_accuracy_from_the_same_forward_pass(packed, tmp_path):
    """The accuracy on the fixed validation masks equals a hand count with the dense head, on a
    tiny model whose output bias favours two frequent tokens (so some, not all, are right);
    a run's log, checkpoints and metrics carry it, with the unigram baseline."""
    meta = json.loads((packed / "meta.json").read_text())
    blocks = np.load(packed / "validation.npy")[:16]
    special = meta["unmaskable_token_ids"]
    torch.manual_seed(0)
    model = build_bert(meta["vocab_size"], 32, 1, 2, 64).eval()
    targets = validation_targets(blocks, 0.15, special, meta)
    frequent = np.bincount(targets).argsort()[-2:]  # the two commonest targets
    with torch.no_grad():
        model.cls.predictions.bias[torch.from_numpy(frequent)] += 20.0
    result = validate(model, blocks, 0.15, special, meta)
    model.eval()  # validate leaves it training
    correct = count = 0
    loss = 0.0
    with torch.no_grad():
        for rows in validation_batches(blocks, 0.15, special, meta):
            logits = model(input_ids=rows.input_ids).logits[rows.masked]
            correct += int((logits.argmax(-1) == rows.targets).sum())
            count += len(rows.targets)
            loss += float(torch.nn.functional.cross_entropy(logits, rows.targets, reduction="sum"))
    assert count == len(targets) and 0 < correct < np.isin(targets, frequent).sum()
    assert result.accuracy == correct / count
    assert result.loss == pytest.approx(loss / count, rel=1e-5)

    metrics = pretrain(packed, tmp_path / "run", pretrain_settings("fe", steps=4, validate_every=2, save_steps=[0, 3],
                                                          validation_blocks=16))  # fmt: skip
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["validation"]["step"] == [0, 2, 3, 4] and len(log["validation"]["accuracy"]) == 4
    final = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert metrics["validation_masked_accuracy"] == log["validation"]["accuracy"][-1]
    assert metrics["validation_masked_accuracy"] == validate(final, blocks, 0.15, special, meta).accuracy
    assert metrics["validation_masked_accuracy_init"] == log["validation"]["accuracy"][0]
    for step, position in ((0, 0), (3, 2)):
        saved = json.loads((tmp_path / "run" / "checkpoints" / f"step-{step}" / "checkpoint_metrics.json").read_text())
        assert saved["validation_masked_accuracy"] == log["validation"]["accuracy"][position]
    baseline = unigram_baseline(np.load(packed / "train.npy"), targets, meta["vocab_size"], special)
    assert metrics["unigram_validation_loss"] == baseline.loss
    assert metrics["unigram_validation_accuracy"] == baseline.accuracy
    assert metrics["corpus"] == meta["corpus"] and metrics["corpus"]["documents"] == 60  # the corpus split's counts


def test_unigram_baseline_by_hand():
    """Vocabulary 10, special ids 0-3: the training blocks hold 5 three times, 7 twice and 6
    once (total 6, V' = 6 non-special ids), so q(5) = 4/12, q(7) = 3/12 and an unseen 8 gets
    1/12; the most frequent token is 5."""
    blocks = np.array([[1, 5, 5, 6, 2], [1, 5, 7, 7, 2], [1, 2, 0, 0, 0]])
    result = unigram_baseline(blocks, np.array([5, 7, 8]), vocab_size=10, special_ids=(0, 1, 2, 3))
    assert result.loss == pytest.approx(-(np.log(4 / 12) + np.log(3 / 12) + np.log(1 / 12)) / 3)
    assert result.accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="special token"):
        unigram_baseline(blocks, np.array([5, 1]), vocab_size=10, special_ids=(0, 1, 2, 3))


def test_match_sequences_gives_k_copy_strategies_k_times_the_rows(packed, tmp_path):
    """match: sequences, 4 per step (not a multiple of K = 7): random and fe take the same 4
    sequences per step, fe masks 7 copies of each (28 rows, every maskable position once, so
    a masking ratio of 1/7 per row) against random's 4 rows of 4 masked of 30 positions.
    match: rows gives both 14 rows."""
    logs, metrics = {}, {}
    for match, rows_per_step in (("sequences", 4), ("rows", 14)):
        for strategy in ("random", "fe"):
            out = tmp_path / f"{match}-{strategy}"
            metrics[match, strategy] = pretrain(packed, out, pretrain_settings(strategy, steps=2, match=match,
                                                                      rows_per_step=rows_per_step))  # fmt: skip
            logs[match, strategy] = json.loads((out / "train_log.json").read_text())
    random, fe = logs["sequences", "random"], logs["sequences", "fe"]
    assert random["sequences"] == fe["sequences"] == [4, 4]
    assert random["rows"] == [4, 4] and fe["rows"] == [28, 28]
    assert random["predictions"] == [4 * 4] * 2 and fe["predictions"] == [4 * 30] * 2
    assert logs["rows", "random"]["rows"] == logs["rows", "fe"]["rows"] == [14, 14]
    assert logs["rows", "random"]["sequences"] == [14, 14] and logs["rows", "fe"]["sequences"] == [2, 2]
    config = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "sequences-fe" / "model")).config
    for (match, strategy), run in metrics.items():
        log = logs[match, strategy]
        assert run["match"] == match
        assert run["rows_per_step"] == log["rows"][0] and run["sequences_per_step"] == log["sequences"][0]
        assert run["flops_per_step"] == training_flops(config, log["rows"][0], 32, log["predictions"][0])
    assert metrics["sequences", "random"]["masking_ratio_per_row"] == pytest.approx(4 / 30)
    assert metrics["sequences", "fe"]["masking_ratio_per_row"] == pytest.approx(1 / 7)
    assert metrics["sequences", "fe"]["train_tokens"] == 7 * metrics["sequences", "random"]["train_tokens"]
