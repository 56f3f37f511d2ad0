"""The statistics of one table row over pre-training seeds (Tables 1-4).

A row holds values per (strategy, pre-training seed, fine-tuning seed); fine-tuning seeds are
averaged within a pre-training seed first (fem/statistics.py says why). Then:

- per strategy `s`: `s` (mean over pre-training seeds), `s_std` (their sd, ddof 1), `s_lo` and
  `s_hi` (95% t interval of the mean) and `s_above_trivial`: whether the whole interval is on
  the better side of the row's trivial baseline (lo > trivial when higher is better, hi <
  trivial when lower is better, as for a loss);
- per comparison A:B (A minus B), over the pre-training seeds with runs of every strategy of
  the row (the row's `pairs`): `A_minus_B` (mean paired difference), `_lo`/`_hi` (its 95%
  interval), `_sd` (sd of the paired difference), `_mdd` (minimum detectable difference, 80%
  power, alpha 0.05, these pairs), `_p_sign` (exact sign-flip p), `_p_t` (paired t p).

Values are in the row's unit (scores x 100, losses in nats); every statistic is rounded to
DECIMALS decimals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from fem.comparisons import comparison_name
from fem.errors import DataError
from fem.statistics import paired_summary, t_interval

DECIMALS = 4
P_DECIMALS = 6
STRATEGY_SUFFIXES = ("std", "lo", "hi", "above_trivial")
COMPARISON_SUFFIXES = ("lo", "hi", "sd", "mdd", "p_sign", "p_t")


@dataclass(frozen=True)
class RowSpec:
    """One table row: its names, unit, scale (x 100 for scores) and direction."""

    task: str
    metric: str
    unit: str = "score x 100"
    scale: float = 100.0
    higher_is_better: bool = True


def seed_means(values: pd.DataFrame) -> pd.DataFrame:
    """Long values (strategy, pretrain_seed, value, ...) -> one column per strategy, one row
    per pre-training seed: the mean over that seed's fine-tuning runs."""
    return values.groupby(["pretrain_seed", "strategy"]).value.mean().unstack("strategy")


def _beats(lo: float, hi: float, trivial: float, higher_is_better: bool) -> bool:
    if math.isnan(trivial) or math.isnan(lo):
        return False
    return bool(lo > trivial) if higher_is_better else bool(hi < trivial)


def strategy_columns(name: str, per_seed: pd.Series, trivial: float, higher_is_better: bool) -> dict:
    """`name`, `name_std`, `name_lo`, `name_hi`, `name_above_trivial` of one strategy's
    per-seed values (already in the row's unit)."""
    mean, sd, lo, hi = t_interval(per_seed.dropna().to_numpy())
    rounded = [round(x, DECIMALS) for x in (mean, sd, lo, hi)]
    return dict(zip([name, *(f"{name}_{s}" for s in STRATEGY_SUFFIXES[:3])], rounded, strict=True)) | {
        f"{name}_above_trivial": _beats(lo, hi, trivial, higher_is_better)
    }


def comparison_columns(name: str, a: pd.Series, b: pd.Series) -> dict:
    """`name` (mean of a - b) and `name_<suffix>` for COMPARISON_SUFFIXES, paired by the index
    (pre-training seed); a and b hold the same seeds."""
    summary = paired_summary((a - b).to_numpy())
    values = [summary.difference, summary.lo, summary.hi, summary.sd, summary.mdd, summary.p_sign, summary.p_t]
    keys = [name, *(f"{name}_{s}" for s in COMPARISON_SUFFIXES)]
    digits = [DECIMALS] * 5 + [P_DECIMALS] * 2  # the two p-values keep more digits
    return {k: round(v, d) for k, v, d in zip(keys, values, digits, strict=True)}


def row_columns(of_row: pd.DataFrame, spec: RowSpec, strategies: list[str], comparisons: list[tuple[str, str]]) -> dict:
    """The statistics columns of one row (module docstring) from its long values (strategy,
    pretrain_seed, finetune_seed, value, trivial; value and trivial unscaled), plus `trivial`
    (mean over the row's runs, scaled) and `pairs`."""
    scaled = of_row.assign(value=of_row.value * spec.scale)
    by_seed = seed_means(scaled).reindex(columns=strategies)
    trivial = float(of_row.trivial.mean() * spec.scale) if of_row.trivial.notna().any() else float("nan")
    row: dict = {"unit": spec.unit, "better": "higher" if spec.higher_is_better else "lower",
                 "trivial": round(trivial, DECIMALS)}  # fmt: skip
    for strategy in strategies:
        row |= strategy_columns(strategy, by_seed[strategy], trivial, spec.higher_is_better)
    complete = by_seed.dropna()  # the seeds with runs of every strategy: every comparison's pairs
    for a, b in comparisons:
        if complete.empty:
            raise DataError(f"row {spec.task} ({spec.metric}): no pre-training seed has runs of every strategy")
        row |= comparison_columns(comparison_name(a, b), complete[a], complete[b])
    row["pairs"] = len(complete)
    return row
