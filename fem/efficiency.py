"""Table 3, efficiency: how fast each masking strategy learns.

Intermediate checkpoints (pretrain.save_steps, e.g. 25/50/75% of pre-training) and the final
model of each strategy and pre-training seed are fine-tuned on one downstream task; each row
gives, for one (strategy, step), the task score (x 100) and the validation MLM loss (fixed
masks, nats per masked token, from the pre-training run's train_log.json), as mean and
standard deviation over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fem.statistics import mean_and_std


def validation_losses(train_logs: list[str | Path]) -> pd.DataFrame:
    """One row per (strategy, pretrain_seed, step) of the validation curves: columns
    strategy, pretrain_seed, step, validation_mlm_loss. The run is read from the path
    `.../<strategy>-s<seed>/train_log.json`."""
    rows = []
    for path in map(Path, train_logs):
        strategy, seed = path.parent.name.rsplit("-s", 1)
        curve = json.loads(path.read_text())["validation"]
        rows += [
            {"strategy": strategy, "pretrain_seed": int(seed), "step": step, "validation_mlm_loss": loss}
            for step, loss in zip(curve["step"], curve["loss"], strict=True)
        ]
    return pd.DataFrame(rows)


def efficiency_table(runs: pd.DataFrame, losses: pd.DataFrame, task: str, strategies: list[str], steps: list[int],
                     total_steps: int) -> pd.DataFrame:  # fmt: skip
    """Rows (strategy, step) for `steps` (the final model is step `total_steps`): columns
    strategy, step, fraction, score/score_std (x 100 on `task`), validation_mlm_loss(_std),
    pretrain_seeds, finetune_seeds, runs."""
    runs = runs[runs.task == task].assign(step=lambda r: r.step.fillna(total_steps).astype(int))
    rows = []
    for strategy in strategies:
        for step in steps:
            of_row = runs[(runs.strategy == strategy) & (runs.step == step)]
            loss = losses[(losses.strategy == strategy) & (losses.step == step)]
            if of_row.empty or loss.empty:
                raise ValueError(f"Table 3: no fine-tuning run or validation loss for {strategy} at step {step}")
            score, score_std = mean_and_std(of_row.score)
            # the loss per pre-training seed, over the seeds whose checkpoints were fine-tuned
            loss = loss[loss.pretrain_seed.isin(of_row.pretrain_seed)]
            loss_mean, loss_std = mean_and_std(loss.validation_mlm_loss)
            rows.append({
                "strategy": strategy, "step": step, "fraction": round(step / total_steps, 4),
                "task": task, "score": round(100 * score, 2), "score_std": round(100 * score_std, 2),
                "validation_mlm_loss": round(loss_mean, 4), "validation_mlm_loss_std": round(loss_std, 4),
                "pretrain_seeds": of_row.pretrain_seed.nunique(), "finetune_seeds": of_row.finetune_seed.nunique(),
                "runs": ";".join(sorted(of_row.source)),
            })  # fmt: skip
    return pd.DataFrame(rows)


def efficiency_markdown(table: pd.DataFrame, title: str, caption: str) -> str:
    """Table 3 as Markdown: one line per (strategy, step), "mean ± std" cells."""
    lines = [f"## {title}", "", caption, "", "| strategy | step | share of pre-training | task score | "
             "validation MLM loss |", "|---|---|---|---|---|"]  # fmt: skip
    for row in table.to_dict("records"):
        lines.append(
            f"| {row['strategy']} | {row['step']} | {row['fraction']:.0%} | {row['score']:.2f} ± {row['score_std']:.2f}"
            f" | {row['validation_mlm_loss']:.3f} ± {row['validation_mlm_loss_std']:.3f} |"
        )
    return "\n".join(lines) + "\n"
