"""Table 3, efficiency: how fast each masking strategy learns.

Intermediate checkpoints (pretrain.save_steps, e.g. 25/50/75% of pre-training) and the final
model of each strategy and pre-training seed are fine-tuned on one downstream task; each row
gives, for one (strategy, step), the task score (x 100; fine-tuning seeds averaged within a
pre-training seed) and the validation MLM loss (fixed masks, nats per masked token, from the
pre-training run's train_log.json), each with the statistics of fem/tables/row_statistics.py over
pre-training seeds (`score`, `score_std`, `score_lo`, `score_hi`, `score_trivial`,
`score_above_trivial`; the same for `validation_mlm_loss`, whose trivial baseline is the
unigram model of the pre-training metrics.json). Each comparison A:B at a step fills the
columns `score_<A>_minus_<B>` (and its _lo, _hi, _sd, _mdd, _p_sign, _p_t) and
`validation_mlm_loss_<A>_minus_<B>...` of A's row at that step.

A train_log.json does not say whose run it is: it is paired with the pre-training run whose
metrics.json sits in the same run folder, and takes that run's strategy and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fem.comparisons import comparison_name
from fem.errors import DataError
from fem.tables.render import interval_cell, markdown_lines, number, p_cell, write_csv_and_markdown
from fem.tables.row_statistics import COMPARISON_SUFFIXES, comparison_columns, seed_means, strategy_columns

TITLE = "Table 3: efficiency, score and validation loss along pre-training"

MEASURES = {"score": ("task score", "score x 100", True),
            "validation_mlm_loss": ("validation MLM loss", "nats per masked token", False)}  # fmt: skip


def _require_pretrain(pretrain: pd.DataFrame | None) -> pd.DataFrame:
    if pretrain is None:
        raise DataError("Table 3 needs the pre-training metrics.json files (--pretrain-metrics): the loss's baseline")
    return pretrain


def validation_losses(train_logs: list[str | Path], pretrain: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (strategy, pretrain_seed, step) of the validation curves: columns
    strategy, pretrain_seed, step, validation_mlm_loss. Each train_log.json takes the strategy
    and seed of the run of `pretrain` (intrinsic.load_pretrain_runs) whose metrics.json is in
    its folder; a DataError names a log without one."""
    runs = _require_pretrain(pretrain)[["source", "strategy", "pretrain_seed"]]
    run_of_folder = {Path(run.source).absolute().parent: run for run in runs.itertuples(index=False)}
    rows = []
    for path in map(Path, train_logs):
        run = run_of_folder.get(path.absolute().parent)
        if run is None:
            raise DataError(f"{path}: no pre-training metrics.json in its folder among the --pretrain-metrics "
                            "(it says whose run the log is)")  # fmt: skip
        curve = json.loads(path.read_text())["validation"]
        rows += [
            {"strategy": run.strategy, "pretrain_seed": run.pretrain_seed, "step": step, "validation_mlm_loss": loss}
            for step, loss in zip(curve["step"], curve["loss"], strict=True)
        ]
    return pd.DataFrame(rows)


def _per_seed(runs: pd.DataFrame, losses: pd.DataFrame, strategy: str, step: int) -> pd.DataFrame:
    """Per pre-training seed (index) of `strategy` at `step`: the score x 100 (mean over its
    fine-tuning runs) and the validation loss, over the seeds whose checkpoints were fine-tuned."""
    of_row = runs[(runs.strategy == strategy) & (runs.step == step)]
    loss = losses[(losses.strategy == strategy) & (losses.step == step)]
    if of_row.empty or loss.empty:
        raise DataError(f"Table 3: no fine-tuning run or validation loss for {strategy} at step {step}")
    score = 100 * seed_means(of_row.rename(columns={"score": "value"}))[strategy]
    loss = loss.set_index("pretrain_seed").validation_mlm_loss.reindex(score.index)  # the fine-tuned seeds
    return pd.DataFrame({"score": score, "validation_mlm_loss": loss})


def efficiency_table(runs: pd.DataFrame, losses: pd.DataFrame, task: str, strategies: list[str], steps: list[int],
                     total_steps: int, comparisons: list[tuple[str, str]],
                     pretrain: pd.DataFrame | None) -> pd.DataFrame:  # fmt: skip
    """Rows (strategy, step) for `steps` (the final model is step `total_steps`); columns in
    the module docstring, then pretrain_seeds, finetune_seeds, runs. `pretrain`
    (intrinsic.load_pretrain_runs) gives the loss's trivial baseline; required."""
    pretrain = _require_pretrain(pretrain)
    runs = runs[runs.task == task].assign(step=lambda r: r.step.fillna(total_steps).astype(int))
    trivial = {"score": 100 * float(runs.trivial_score.mean()),
               "validation_mlm_loss": float(pretrain.unigram_validation_loss.mean())}  # fmt: skip
    per_seed = {(s, step): _per_seed(runs, losses, s, step) for s in strategies for step in steps}
    rows = []
    for strategy in strategies:
        for step in steps:
            of_row = runs[(runs.strategy == strategy) & (runs.step == step)]
            row = {"strategy": strategy, "step": step, "fraction": round(step / total_steps, 4), "task": task}
            for measure, (_, _, higher) in MEASURES.items():
                columns = strategy_columns(measure, per_seed[strategy, step][measure], trivial[measure], higher)
                row |= columns | {f"{measure}_trivial": round(trivial[measure], 4)}
            for a, b in comparisons:
                if a != strategy:
                    continue
                both = pd.concat({"a": per_seed[a, step], "b": per_seed[b, step]}, axis=1).dropna()
                for measure in MEASURES:
                    name = f"{measure}_{comparison_name(a, b)}"
                    row |= comparison_columns(name, both["a"][measure], both["b"][measure])
                row[f"{comparison_name(a, b)}_pairs"] = len(both)
            row.update(pretrain_seeds=of_row.pretrain_seed.nunique(), finetune_seeds=of_row.finetune_seed.nunique(),
                       runs=";".join(sorted(of_row.source)))  # fmt: skip
            rows.append(row)
    table = pd.DataFrame(rows)
    # comparison columns exist only on A's rows: put them after the per-strategy ones, in a fixed order
    names = [f"{m}_{comparison_name(a, b)}" for a, b in comparisons for m in MEASURES]
    ordered = [c for c in table.columns if not any(c.startswith(n) for n in names) and c not in _pairs(comparisons)]
    extra = [f"{n}{s}" for n in names for s in ("", *(f"_{x}" for x in COMPARISON_SUFFIXES))] + _pairs(comparisons)
    tail = ["pretrain_seeds", "finetune_seeds", "runs"]
    table = table.astype({name: "Int64" for name in _pairs(comparisons)})  # counts, blank on other rows
    return table[[c for c in ordered if c not in tail] + extra + tail]


def _pairs(comparisons: list[tuple[str, str]]) -> list[str]:
    return [f"{comparison_name(a, b)}_pairs" for a, b in comparisons]


def efficiency_markdown(table: pd.DataFrame, title: str, caption: str, comparisons: list[tuple[str, str]]) -> str:
    """Table 3 as Markdown: one line per (strategy, step) with "mean [lo, hi]" cells and the
    trivial baselines; then per step and comparison the differences with interval, sd, MDD
    and both p-values."""
    records = table.to_dict("records")
    head = ["strategy", "step", "share of pre-training", "task score", "validation MLM loss", "interval beyond trivial"]
    main = []
    for r in records:
        cells = [interval_cell(r | {"unit": MEASURES[m][1]}, m) for m in MEASURES]
        beyond = ", ".join(MEASURES[m][0] for m in MEASURES if r[f"{m}_above_trivial"]) or "none"
        main.append([r["strategy"], str(r["step"]), f"{r['fraction']:.0%}", *cells, beyond])
    first = records[0]
    trivial = (f"Trivial baselines: task score {number(first['score_trivial'], 'score')}, validation MLM loss "
               f"{number(first['validation_mlm_loss_trivial'], 'nats')} (unigram model).")  # fmt: skip
    parts = [f"## {title}", "", caption, "", *markdown_lines(head, main), "", trivial]
    differences = []
    for r in records:
        for a, b in comparisons:
            if r["strategy"] != a:
                continue
            for measure, (label, unit, _) in MEASURES.items():
                name, cell = f"{measure}_{comparison_name(a, b)}", r | {"unit": unit}
                differences.append([str(r["step"]), f"{a} − {b}", label, interval_cell(cell, name, sign=True),
                                    number(r[f"{name}_sd"], unit), number(r[f"{name}_mdd"], unit),
                                    p_cell(r[f"{name}_p_sign"]), p_cell(r[f"{name}_p_t"]),
                                    str(r[f"{comparison_name(a, b)}_pairs"])])  # fmt: skip
    if differences:
        parts += ["", "Differences over pre-training seeds (paired by seed):", ""]
        parts += markdown_lines(["step", "difference", "measure", "mean [95% interval]", "sd of difference",
                                 "MDD (80% power)", "p sign-flip", "p paired t", "pairs"], differences)  # fmt: skip
    return "\n".join(parts) + "\n"


def write_efficiency_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, caption: str,
                           comparisons: list[tuple[str, str]], task: str, figure: str | Path) -> list[str]:  # fmt: skip
    """Write Table 3 as CSV and Markdown (efficiency_markdown) and its figure
    (figures.plot_efficiency); return the three paths."""
    from fem.figures import plot_efficiency  # matplotlib, and fem.figures reads fem.tables.variance

    outputs = write_csv_and_markdown(table, csv_path, md_path, efficiency_markdown(table, TITLE, caption, comparisons))
    plot_efficiency(table, task, figure)
    return [*outputs, str(figure)]
