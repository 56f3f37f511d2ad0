"""Matched compute across objectives: how many sequences one optimizer step takes.

The control of every comparison is BERT's step: `rows_per_step` rows of L tokens with random
masks (mlm). An augmented objective (fem/augmented.py) makes longer rows (about L + 2pL
tokens) and predicts more or fewer positions, so under pretrain.match "rows" its step takes as
many sequences as bring its model FLOPs (fem/throughput.py) closest to the control's; a step
more than TOLERANCE away is refused, naming step sizes that match. The masking strategies of
mlm keep their row count (fem.collation.MaskingSpec.step_size), and every run records its ratio.

FLOPs per row and per sequence are measured, not assumed: the first training blocks are masked
as at step 0 and counted, in steps of the chosen size. Augmented rows are padded to a fixed
width (fem.collation.prediction_width), so only a step's number of predictions varies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fem.collation import MaskingSpec, mask_rows
from fem.errors import ConfigError
from fem.throughput import training_flops

TOLERANCE = 0.05  # largest relative difference of a step's model FLOPs from the control's
SAMPLE = 64  # training blocks measured for a first estimate
STEPS = 16  # steps of consecutive blocks measured for the chosen size


@dataclass(frozen=True)
class StepSize:
    """Sequences and rows of one optimizer step (all processes), the model FLOPs of the
    control step (rows_per_step rows of random-masked MLM) and this step's expected ratio to it."""

    sequences: int
    rows: int
    control_flops: float
    flops_ratio: float


def step_size(
    spec: MaskingSpec,
    rows_per_step: int,
    match: str,
    model_config,
    train: np.ndarray,
    word_starts: np.ndarray | None = None,
    auxiliary=None,
) -> StepSize:
    """The step of a run masking with `spec` (see the module docstring). train: int [N, L]
    training blocks; word_starts: bool [N, L] (whole_word only); model_config: a transformers
    BertConfig; auxiliary: the FLOPs of the objective's other parts (MASS's decoder), as in
    fem.throughput.training_flops. Raises ConfigError when an objective other than mlm cannot
    be matched within TOLERANCE."""
    sample = np.asarray(train[:SAMPLE])
    starts = None if word_starts is None else np.asarray(word_starts[:SAMPLE])
    control = replace(spec, objective="mlm", strategy="random")
    control_per_row = _flops_per_sequence(sample, control, model_config, None)  # one row per sequence
    control_flops = rows_per_step * control_per_row
    per_sequence = _flops_per_sequence(sample, spec, model_config, starts, auxiliary=auxiliary)
    if spec.objective == "mlm" or match != "rows":
        sequences, rows = spec.step_size(rows_per_step, match)
        return StepSize(sequences, rows, control_flops, sequences * per_sequence / control_flops)
    guess = max(1, round(control_flops / per_sequence))
    # the step's own padding counts (an augmented batch is as long as its longest row): measure
    # steps of the guessed size and its neighbours on consecutive training blocks
    ratios = {
        s: _step_flops(train, spec, model_config, word_starts, s, auxiliary) / control_flops
        for s in {max(1, guess - 1), guess, guess + 1}
    }
    sequences = min(ratios, key=lambda s: (abs(ratios[s] - 1), s))
    ratio = ratios[sequences]
    if abs(ratio - 1) > TOLERANCE:
        raise ConfigError(
            f"rows_per_step: {rows_per_step}: objective {spec.objective} with strategy {spec.strategy} takes "
            f"{per_sequence / control_per_row:.2f} MLM rows of model FLOPs per sequence, so its step of {sequences} "
            f"sequence(s) does {ratio:.2f}x the FLOPs of {rows_per_step} MLM rows; FLOPs match within "
            f"{TOLERANCE:.0%} at rows_per_step {_matching_sizes(per_sequence / control_per_row, rows_per_step)}"
        )
    return StepSize(sequences, sequences * spec.copies, control_flops, ratio)


def _flops_per_sequence(
    sample: np.ndarray, spec: MaskingSpec, model_config, word_starts, first: int = 0, auxiliary=None
) -> float:
    """Mean model FLOPs of training on one sequence of `sample` (all its copies) under `spec`;
    the sample's blocks are sequences first, first + 1, ... of epoch 0."""
    indices = first + np.arange(len(sample))
    rows = mask_rows(sample, np.zeros(len(sample), dtype=np.int64), indices, spec, word_starts)
    flops = training_flops(model_config, len(rows.input_ids), rows.input_ids.shape[1], len(rows.targets), auxiliary)
    return flops / len(sample)


def _step_flops(train: np.ndarray, spec: MaskingSpec, model_config, word_starts, sequences: int, auxiliary) -> float:
    """Mean model FLOPs of steps of `sequences` sequences: up to STEPS steps of consecutive
    training blocks (as many as the data holds, at least one)."""
    steps = max(1, min(STEPS, len(train) // sequences))
    flops = []
    for i in range(steps):
        chunk = slice(i * sequences, (i + 1) * sequences)
        starts = None if word_starts is None else np.asarray(word_starts[chunk])
        sample = np.asarray(train[chunk])
        flops.append(_flops_per_sequence(sample, spec, model_config, starts, chunk.start, auxiliary) * sequences)
    return float(np.mean(flops))


def _matching_sizes(rows_per_sequence: float, around: int, shown: int = 5) -> str:
    """Step sizes near `around` whose nearest whole number of sequences is within TOLERANCE."""
    sizes = []
    for rows in range(max(1, around // 2), 4 * around + 1):
        sequences = max(1, round(rows / rows_per_sequence))
        if abs(sequences * rows_per_sequence / rows - 1) <= TOLERANCE:
            sizes.append(str(rows))
        if len(sizes) == shown:
            break
    return ", ".join(sizes) + (" ..." if len(sizes) == shown else "") if sizes else "none near it"
