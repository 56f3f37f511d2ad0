"""Pre-training with the augmented objectives and the masking-rate schedule: matched FLOPs per
step, what each run records, and the refusals (fem/compute_matching.py, fem/pretraining.py)."""

import json
import subprocess

import pytest
from helpers import cli_args, pretrain_settings
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from fem.collation import mask_ratio_at
from fem.compute_matching import TOLERANCE
from fem.errors import ConfigError
from fem.pretraining import pretrain

# Step sizes at which the tiny model of tests/helpers.py matches each objective's FLOPs (the
# refusal below names them): 30 maskable positions per 32-token block.
MATCHED = [("pmlm", "block", 16), ("pmlm", "fe", 14), ("plm", "fe", 15), ("mpnet", "random", 14)]


@pytest.mark.parametrize(("objective", "strategy", "rows"), MATCHED)
def test_an_objective_trains_at_the_model_flops_of_the_mlm_step(packed, tmp_path, objective, strategy, rows):
    settings = pretrain_settings(strategy, objective=objective, steps=8, rows_per_step=rows)
    metrics = pretrain(packed, tmp_path / "run", settings)
    assert metrics["objective"] == objective and metrics["strategy"] == strategy
    # matched in expectation; a block step's predictions vary (4..9 per row here, and the tiny
    # model's LM head over a 30k vocabulary is most of its FLOPs), so 8 steps may be off by more
    assert abs(metrics["flops_ratio_to_mlm"] - 1) <= (2 * TOLERANCE if strategy == "block" else TOLERANCE)
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert all(length > 32 for length in log["length"])  # augmented rows are longer than the block
    assert metrics["tokens_per_step"] == pytest.approx(metrics["rows_per_step"] * metrics["row_length"])
    assert metrics["validation_mlm_loss"] < metrics["validation_mlm_loss_init"]  # scored as a plain masked LM
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "model"))
    assert isinstance(model, BertForMaskedLM) and model.config.hidden_size == 32  # the encoder fine-tuning loads


def test_the_same_objective_run_gives_the_same_numbers(packed, tmp_path):
    settings = pretrain_settings("block", objective="pmlm", steps=2, rows_per_step=16)
    first = pretrain(packed, tmp_path / "a", settings)
    second = pretrain(packed, tmp_path / "b", settings)
    assert first["validation_mlm_loss"] == second["validation_mlm_loss"]
    assert first["final_train_loss"] == second["final_train_loss"]


def test_a_step_that_cannot_match_the_flops_is_refused_with_sizes_that_do(packed, tmp_path):
    settings = pretrain_settings("fe", objective="mpnet", steps=2, rows_per_step=14)
    with pytest.raises(ConfigError, match=r"rows_per_step: 14: objective mpnet with strategy fe .* at rows_per_step 8"):
        pretrain(packed, tmp_path / "run", settings)
    result = subprocess.run(cli_args(packed, tmp_path / "cli", settings), capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "rows_per_step: 14" in result.stderr and not (tmp_path / "cli" / "model").exists()


@pytest.mark.parametrize(
    ("objective", "strategy", "schedule", "expected"),
    [
        ("plm", "block", None, "objective plm does not run with strategy block"),
        ("mlm", "fe", {"start": 0.3, "end": 0.15}, "a masking-rate schedule needs objective mlm"),
        ("pmlm", "random", {"start": 0.3, "end": 0.15}, "a masking-rate schedule needs objective mlm"),
    ],
)
def test_a_combination_that_is_not_allowed_is_refused(packed, tmp_path, objective, strategy, schedule, expected):
    settings = pretrain_settings(strategy, objective=objective, mask_ratio_schedule=schedule)
    with pytest.raises(ConfigError, match=expected):
        pretrain(packed, tmp_path / "run", settings)


def test_the_masking_rate_decays_linearly_over_the_steps(packed, tmp_path):
    schedule = {"start": 0.3, "end": 0.15}
    assert [round(mask_ratio_at(s, 4, schedule), 3) for s in range(4)] == [0.3, 0.25, 0.2, 0.15]
    metrics = pretrain(packed, tmp_path / "run", pretrain_settings("random", steps=4, mask_ratio_schedule=schedule))
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    # 30 maskable positions per row: round(p * 30) = 9, 8 (7.5 rounds to even), 6, 4 (4.5 to even)
    assert log["predictions"] == [14 * 9, 14 * 8, 14 * 6, 14 * 4]
    assert metrics["mask_ratio_schedule"] == schedule
