"""Figures of the paper tables, as PNG files readable without the text (titles, labelled
axes with units, legends, and a footnote saying what the bands and bars are)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display (cluster nodes have none)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fem.tables.variance import checkpoint_label  # noqa: E402


def _save(figure, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)


def plot_variance_vs_hamming(results: list[dict], path: str | Path) -> None:
    """Left: covariance of two masks' gradients against their Hamming distance, one line per
    checkpoint with its bootstrap 95% band. Right: the same divided by one mask's variance
    (the correlation), against the closed form of independent per-token contributions."""
    figure, (raw, relative) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(results)))
    for result, color in zip(results, colors, strict=True):
        hamming, label = result["hamming"], checkpoint_label(result["run"])
        distance = np.array(hamming["distance"])
        for axis, key in ((raw, "covariance"), (relative, "correlation")):
            values = hamming[key]
            axis.plot(distance, values["value"], marker="o", markersize=3, color=color, label=label)
            axis.fill_between(distance, values["lo"], values["hi"], color=color, alpha=0.2)
    first = results[0]
    relative.plot(np.array(first["hamming"]["distance"]), first["hamming"]["closed_form_correlation"], "k--",
                  label="closed form (independent tokens)")  # fmt: skip
    n, m = first["n"], first["m"]
    raw.set_yscale("symlog", linthresh=_linear_threshold(results), linscale=0.5)
    raw.set(xlabel="Hamming distance |M1 △ M2| (positions)", ylabel="Cov(g(M1), g(M2))  (squared gradient norm)",
            title="Gradient covariance of two masks of one sequence")  # fmt: skip
    relative.set(xlabel="Hamming distance |M1 △ M2| (positions)", ylabel="Cov / Var(one mask)  (correlation)",
                 title="Relative to one mask's variance")  # fmt: skip
    for axis in (raw, relative):
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.legend(fontsize=8)
    figure.text(0.01, -0.04, f"Masks of m = {m} of n = {n} positions, every intersection 0..m (Hamming 0..{2 * m}); "
                f"{first['hamming_sequences']} held-out sequences x {first['pairs_per_intersection']} pairs per point; "
                "bands: bootstrap 95% over sequences. Masked tokens replaced by [MASK]; model in eval mode.",
                fontsize=8)  # fmt: skip
    _save(figure, path)


def plot_estimator_variance(results: list[dict], path: str | Path) -> None:
    """Per checkpoint, bars of the variance of three K-row gradient estimators (fe,
    random_k: one sequence, K masks; random_kseq: K sequences, one mask each), total and
    mask-sampling only, with bootstrap 95% intervals and the closed-form predictions."""
    figure, (total, masks) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = [checkpoint_label(r["run"]) for r in results]
    x = np.arange(len(results))
    series = {"total": ("fe", "random_k", "random_kseq"), "mask_sampling": ("fe", "random_k")}
    names = {"fe": "fe (1 seq., K disjoint masks)", "random_k": "random_k (1 seq., K independent masks)",
             "random_kseq": "random (K seq., 1 mask each)"}  # fmt: skip
    colors = {"fe": "tab:blue", "random_k": "tab:orange", "random_kseq": "tab:green"}
    for axis, kind in ((total, "total"), (masks, "mask_sampling")):
        width = 0.8 / len(series[kind])
        measured = [r["estimators"][f"{kind}_variance"][n]["lo"] for r in results for n in series[kind]]
        floor = 0.3 * min([v for v in measured if v > 0] or [1e-12])
        for i, name in enumerate(series[kind]):
            stats = [r["estimators"][f"{kind}_variance"][name] for r in results]
            value = np.array([s["value"] for s in stats])
            error = np.abs(np.array([[s["lo"] for s in stats], [s["hi"] for s in stats]]) - value)
            axis.bar(x + (i - (len(series[kind]) - 1) / 2) * width, value, width, yerr=error, capsize=3,
                     color=colors[name], label=names[name])  # fmt: skip
            if kind == "mask_sampling":
                predicted = [r["estimators"]["closed_form_mask_sampling_variance"][name] for r in results]
                shown = np.maximum(predicted, floor * 1.1)  # zero (fe, equal groups) is drawn at the floor
                axis.scatter(x + (i - 0.5) * width, shown, marker="_", s=300, color="black", zorder=3,
                             label="closed form" if i == 0 else None)  # fmt: skip
        axis.set_yscale("log")
        axis.set_ylim(bottom=floor)
        axis.set_xticks(x, labels, rotation=20)
        axis.legend(fontsize=8)
    first = results[0]
    total.set(ylabel="trace variance (squared gradient norm)", title="Total variance (sequences and masks drawn)")
    masks.set(ylabel="trace variance (squared gradient norm)", title="Mask-sampling variance (sequence fixed)")
    figure.text(0.01, -0.06, f"Each estimator averages K = {first['segments']} rows (compute matched); "
                f"{first['replicates']} replicates, error bars: bootstrap 95%. The closed form predicts zero "
                "mask-sampling variance for fe when the K groups have equal size (drawn at the axis floor).",
                fontsize=8)  # fmt: skip
    _save(figure, path)


def _linear_threshold(results: list[dict]) -> float:
    """symlog's linear range: a third of the smallest one-mask variance shown."""
    return 0.3 * min(abs(r["hamming"]["single_mask_variance"]["value"]) for r in results) or 1e-12


def plot_efficiency(table, task: str, path: str | Path) -> None:
    """Table 3 as a figure: downstream score and validation MLM loss against the pre-training
    step, one line per strategy, error bars = standard deviation over pre-training seeds."""
    figure, (score, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for strategy, rows in table.groupby("strategy", sort=False):
        score.errorbar(rows.step, rows.score, yerr=rows.score_std, marker="o", capsize=3, label=strategy)
        loss.errorbar(rows.step, rows.validation_mlm_loss, yerr=rows.validation_mlm_loss_std, marker="o", capsize=3,
                      label=strategy)  # fmt: skip
    score.set(xlabel="pre-training step", ylabel=f"{task} dev score (x 100)", title=f"Fine-tuned on {task}")
    loss.set(xlabel="pre-training step", ylabel="validation MLM loss (nats per masked token)",
             title="Validation MLM loss (fixed random masks)")  # fmt: skip
    for axis in (score, loss):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    seeds = int(table.pretrain_seeds.max())
    figure.text(0.01, -0.03, f"Each point: mean over {seeds} pre-training seed(s) (each the mean of its "
                f"{int(table.finetune_seeds.max())} fine-tuning seed(s)); error bars: standard deviation over "
                "pre-training seeds. Intervals and paired differences: table3.md.", fontsize=8)  # fmt: skip
    _save(figure, path)


def plot_pretrain_curves(runs: dict[str, list[dict]], title: str, path: str | Path) -> None:
    """Pre-training curves of several strategies (or objectives): `runs` maps a label to the
    train logs (fem/train_log.py) of its seeds. Left: validation MLM loss on the fixed masks
    against the step; right: training loss (mean of each curve point's steps, as curves/ holds
    it). One line per label: the mean over its seeds; the band: their range (min to max)."""
    from fem.train_log import log_curves

    figure, (validation, training) = plt.subplots(1, 2, figsize=(12, 4.6))
    seeds = set()
    for label, logs in runs.items():
        seeds.add(len(logs))
        for axis, name in ((validation, "validation/loss"), (training, "train/loss")):
            curves = [log_curves(log, log["step"][-1])[name] for log in logs]
            steps = [step for step, _ in curves[0]]
            if any([step for step, _ in curve] != steps for curve in curves):
                raise ValueError(f"{label}: its seeds' {name} curves have different steps; runs of other settings?")
            values = np.array([[value for _, value in curve] for curve in curves])  # [seeds, points]
            marker = "o" if len(steps) < 30 else None  # a few validations: show where they are
            (line,) = axis.plot(steps, values.mean(axis=0), label=label, linewidth=1.2, marker=marker, markersize=3)
            if len(logs) > 1:
                axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
    validation.set(xlabel="pre-training step", ylabel="validation MLM loss (nats per masked token)",
                   title="Validation loss (fixed masks)")  # fmt: skip
    training.set(xlabel="pre-training step", ylabel="training loss (nats per masked token)",
                 title="Training loss (each run's own masks)")  # fmt: skip
    for axis in (validation, training):
        axis.legend(fontsize=7, ncol=2)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    counts = ", ".join(str(n) for n in sorted(seeds))
    figure.text(0.01, -0.03, f"Lines: mean over {counts} pre-training seed(s); bands: their range (min to max). "
                "Training losses are not comparable across objectives whose rows predict different tokens; "
                "the validation loss scores every model on the same masks.", fontsize=8)  # fmt: skip
    _save(figure, path)
