"""The pre-training side of the tables, read from each pre-training run's metrics.json.

- The intrinsic rows of Tables 2 and 4: validation MLM loss (nats per masked token, lower is
  better) and masked-token accuracy (x 100) on the fixed validation masks, with the unigram
  model of the training blocks as their trivial baselines.
- What a strategy's step is (rows, distinct sequences, predictions, FLOPs, per-copy masking
  ratio, clipped share): named in the tables' Markdown, since they are per-run numbers and
  the captions are written before any run.

A run's identity is what its metrics.json records (`strategy`, `seed`, `segments`), never its
path: the tables name its strategy fem.registry.strategy_label(strategy, segments, default K),
"fe-k2" for fe with K = 2 when the default K is another.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fem.errors import DataError
from fem.registry import strategy_label
from fem.tables.row_statistics import RowSpec

INTRINSIC_TASK = "mlm validation"
LOSS = RowSpec(INTRINSIC_TASK, "loss", "nats per masked token", 1.0, higher_is_better=False)
ACCURACY = RowSpec(INTRINSIC_TASK, "masked-token accuracy", "% of masked tokens", 100.0)
# metrics.json key of each intrinsic row's value and of its trivial baseline (interfaces: fem pretrain)
INTRINSIC_KEYS = {LOSS: ("validation_mlm_loss", "unigram_validation_loss"),
                  ACCURACY: ("validation_masked_accuracy", "unigram_validation_accuracy")}  # fmt: skip
IDENTITY_KEYS = ["strategy", "seed", "segments"]  # who the run is (metrics.json of fem pretrain)
# What one step of a strategy is, in the order the Markdown shows it.
STEP_KEYS = {
    "match": "matched by",
    "rows_per_step": "rows / step",
    "sequences_per_step": "distinct sequences / step",
    "predictions_per_step": "predictions / step",
    "flops_per_step": "training FLOPs / step",
    "masking_ratio_per_row": "per-copy masking ratio",
    "clipped_share": "clipped share of steps",
}


def read_json_keys(path: str | Path, keys: list[str], what: str) -> dict:
    """The JSON object in `path`, checked to hold every key of `keys`: a DataError naming
    the file and the first missing key otherwise (`what` says which file was expected)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found; expected {what}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); expected {what}") from None
    missing = [key for key in keys if key not in data]
    if missing:
        raise DataError(f"{path}: no key {missing[0]!r}; expected {what} with the keys {', '.join(keys)}")
    return data


def load_pretrain_runs(
    files: list[str | Path], default_segments: int | None = None, extra_keys: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One row per pre-training run: strategy (its table name, run_strategies), pretrain_seed,
    segments, source, and the keys of INTRINSIC_KEYS, STEP_KEYS and `extra_keys` (each one required)."""
    keys = [key for pair in INTRINSIC_KEYS.values() for key in pair] + list(STEP_KEYS) + list(extra_keys)
    rows = []
    for path in files:
        data = read_json_keys(path, IDENTITY_KEYS + keys, "the metrics.json of a `fem pretrain` run")
        rows.append({"strategy": data["strategy"], "pretrain_seed": int(data["seed"]), "segments": data["segments"],
                     "source": str(path)} | {k: data[k] for k in keys})  # fmt: skip
    runs = pd.DataFrame(rows)
    return runs.assign(strategy=run_strategies(runs, default_segments)) if rows else runs


def run_strategies(runs: pd.DataFrame, default_segments: int | None) -> list[str]:
    """The table name of each run's strategy (columns strategy, segments, source):
    registry.strategy_label against `default_segments`. Without a default K (Tables 1-3, whose
    runs all use the configured K) the plain strategy, and a DataError when runs of one
    strategy differ in K, since their names would then depend on which K is the default."""
    if default_segments is not None:
        return [strategy_label(s, k, default_segments) for s, k in zip(runs.strategy, runs.segments, strict=True)]
    for strategy, of_strategy in runs.groupby("strategy", sort=False):
        if of_strategy.segments.nunique() > 1:
            first, other = of_strategy.drop_duplicates("segments").source.iloc[:2]
            raise DataError(f"pre-training runs of {strategy} with different K: {first} and {other}; a table "
                            "of runs of several K needs the default K (`fem table4 --default-segments`)")  # fmt: skip
    return runs.strategy.tolist()


def intrinsic_values(pretrain: pd.DataFrame) -> tuple[list[RowSpec], pd.DataFrame]:
    """The intrinsic rows and their long values (task, metric, strategy, pretrain_seed,
    finetune_seed = nan, value, trivial, source), unscaled."""
    long = []
    for spec, (value_key, trivial_key) in INTRINSIC_KEYS.items():
        long.append(pd.DataFrame({
            "task": spec.task, "metric": spec.metric, "strategy": pretrain.strategy,
            "pretrain_seed": pretrain.pretrain_seed, "finetune_seed": float("nan"),
            "value": pretrain[value_key].astype(float), "trivial": pretrain[trivial_key].astype(float),
            "source": pretrain.source,
        }))  # fmt: skip
    return list(INTRINSIC_KEYS), pd.concat(long, ignore_index=True)


def step_summary(pretrain: pd.DataFrame, strategies: list[str]) -> pd.DataFrame:
    """Per strategy (in `strategies` order), the mean over its runs of each STEP_KEYS number
    (the `match` setting as text)."""
    rows = []
    for strategy in strategies:
        runs = pretrain[pretrain.strategy == strategy]
        if runs.empty:
            raise DataError(f"no pre-training metrics.json of strategy {strategy!r} among the --pretrain-metrics")
        row = {"strategy": strategy, "match": "/".join(sorted(set(map(str, runs["match"]))))}
        row |= {key: float(runs[key].astype(float).mean()) for key in STEP_KEYS if key != "match"}
        rows.append(row)
    return pd.DataFrame(rows)


def step_markdown(summary: pd.DataFrame) -> str:
    """The per-strategy step of pre-training as a Markdown table (means over seeds)."""
    lines = ["| strategy | " + " | ".join(STEP_KEYS.values()) + " |", "|---" * (len(STEP_KEYS) + 1) + "|"]
    for row in summary.to_dict("records"):
        cells = [row["match"], f"{row['rows_per_step']:g}", f"{row['sequences_per_step']:g}",
                 f"{row['predictions_per_step']:.1f}", f"{row['flops_per_step']:.3g}",
                 f"{row['masking_ratio_per_row']:.3f}", f"{row['clipped_share']:.0%}"]  # fmt: skip
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
