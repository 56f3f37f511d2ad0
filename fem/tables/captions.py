"""The captions of Tables 1-5: what was run and how to read the numbers, in words.

Pure functions of plain arguments (numbers, lists, strings); fem/rule_settings.py reads the
config and passes them, and the table rules hand the text to the table commands (--caption),
which write it under each table's Markdown.
"""

from __future__ import annotations

from fem.comparisons import statistics_caption

TRIVIAL_GLUE = (
    "'trivial' is each row's trivial baseline on the same dev examples: the majority class of the (subsampled) "
    "training set for accuracy and F1 (MCC 0), a constant prediction for correlations (0), SQuAD v1.1 exact match "
    'and F1 0, SQuAD v2 the scores of answering "" everywhere'
)
TRIVIAL_INTRINSIC = (
    "The 'mlm validation' rows are the pre-training runs' validation MLM loss (nats per masked token, lower is "
    "better) and masked-token accuracy (x 100) on the fixed validation masks; their trivial baseline is a unigram "
    "model of the training blocks (add-one smoothed; accuracy: always its most frequent token)."
)
STEP_NOTE = (
    "The last table gives one pre-training step of each strategy from its runs' metrics.json: rows, distinct "
    "sequences, predictions (masked tokens), training FLOPs, per-copy masking ratio and the share of steps whose "
    "gradient norm was clipped."
)


def matched(match: str) -> str:
    """How the strategies' steps are matched (pretrain.match: rows or sequences), in words."""
    if match == "sequences":
        return (
            "the same distinct sequences per step for every strategy, so K-copy strategies do K x the rows and compute"
        )
    return "compute matched per step: the K-copy strategies take rows/K sequences, K copies each"


def learning_rates_text(rates: list[float]) -> str:
    """[1e-3, 3e-4] -> "0.001/0.0003"."""
    return "/".join(f"{lr:g}" for lr in rates)


def table1_caption(
    *, scale: str, model: str, steps: int, rows_per_step: int, block_size: int, segments: int,
    learning_rates: list[float], comparisons: list[tuple[str, str]], pretrain_seeds: int, finetune_seeds: int,
    match: str,
) -> str:  # fmt: skip
    """Table 1 (continual pre-training of `model`, then fine-tuning): `steps` of `rows_per_step`
    blocks of `block_size` tokens, K = `segments`; seeds are counts."""
    return (
        f"Scale '{scale}'. Continual (task-adaptive) pre-training: '{model}' continued with "
        f"masked-LM training on the text of each task's training split for {steps} steps of "
        f"{rows_per_step} rows of {block_size} tokens with each masking strategy (K = {segments}), "
        f"then fine-tuned on the task (learning rate {learning_rates_text(learning_rates)}). Dev scores x 100 with "
        f"the task's metric (macro-F1, "
        f"micro-F1 for ChemProt and RCT, as Don't Stop Pretraining; accuracy for SST-2); 'average' is the mean of "
        f"the task scores. 'trivial' is each row's trivial baseline on the same dev examples: the majority class of "
        f"the training set. " + statistics_caption(comparisons, pretrain_seeds, finetune_seeds, match, "table1")
    )


def table2_caption(
    *, scale: str, corpus: str, layers: int, hidden_size: int, steps: int, rows_per_step: int, mask_ratio: float,
    segments: int, match: str, max_train_examples: int | None, epochs: int, learning_rates: list[float],
    per_task: dict[str, dict], average_exclude: list[str], comparisons: list[tuple[str, str]], pretrain_seeds: int,
    finetune_seeds: int,
) -> str:  # fmt: skip
    """Table 2 (pre-training from scratch, then GLUE / SQuAD): the model, pre-training and
    fine-tuning settings; `per_task` holds the finetune.per_task values of the table's tasks."""
    subsample = max_train_examples or "all"
    rate_note = "" if len(learning_rates) == 1 else " (best on dev)"
    excluded = ", ".join(average_exclude) or "none"
    per_task_text = "".join(
        f"; {task}: " + ", ".join(f"{key.replace('_', ' ')} {value if value is not None else 'all'}"
                                  for key, value in values.items())
        for task, values in per_task.items()
    )  # fmt: skip
    return (
        f"Scale '{scale}'. Dev scores x 100 of a BERT ({layers} layers, "
        f"hidden {hidden_size}) pre-trained from scratch on '{corpus}' for {steps} steps "
        f"of {rows_per_step} rows with each masking strategy (p = {mask_ratio}, K = {segments} "
        f"masks per sequence for the K-copy strategies; {matched(match)}), then fine-tuned per task "
        f"({subsample} training examples, {epochs} epochs, learning rate {learning_rates_text(learning_rates)}"
        f"{rate_note}{per_task_text}). A GLUE "
        f"task's score is the mean of its metrics (MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman; "
        f"MNLI: matched and mismatched accuracy); 'glue average' is the mean of the task scores, excluding "
        f"{excluded}. SQuAD rows give exact match and F1 separately. {TRIVIAL_GLUE}. {TRIVIAL_INTRINSIC} "
        + statistics_caption(comparisons, pretrain_seeds, finetune_seeds, match, "table2")
        + f" {STEP_NOTE}"
    )


def table3_caption(
    *, scale: str, steps: list[int], final_step: int, task: str, match: str, comparisons: list[tuple[str, str]],
    pretrain_seeds: int, finetune_seeds: int,
) -> str:  # fmt: skip
    """Table 3 (efficiency): intermediate checkpoints at `steps` and the final model at
    `final_step`, fine-tuned on `task`."""
    return (
        f"Scale '{scale}'. Efficiency: checkpoints of each strategy's pre-training at steps "
        f"{', '.join(map(str, steps))} and the final model (step {final_step}), each "
        f"fine-tuned on {task} (dev score x 100, fine-tuning as in Table 2; trivial baseline: the "
        f"majority class of the training set); validation MLM loss on fixed random masks (nats per masked token, "
        f"lower is better; trivial baseline: a unigram model of the training blocks). Strategies' steps: "
        f"{matched(match)}. "
        + statistics_caption(comparisons, pretrain_seeds, finetune_seeds, match, "table3")
        + " A comparison's columns (score_<A>_minus_<B>..., validation_mlm_loss_<A>_minus_<B>...) are on A's rows."
    )


def table4_caption(
    *, scale: str, segment_counts: list[int], segments: int, mask_ratio: float, steps: int, rows_per_step: int,
    match: str, pretrain_seeds: int, finetune_seeds: int,
) -> str:  # fmt: skip
    """Table 4 (number of segments): fe and random_k at each K of `segment_counts`; `segments`
    is the default K."""
    return (
        f"Scale '{scale}'. Number of segments: BERT pre-trained from scratch with fe masking for K in "
        f"[{', '.join(map(str, segment_counts))}] ('fe' and 'random_k' are K = {segments}, "
        f"'fe-k<K>' and 'random_k-k<K>' the others), each with its control random_k of the same K (independent "
        f"masks of the same sizes as fe's K groups), and with random masking (p = {mask_ratio}); "
        f"{steps} steps of {rows_per_step} rows ({matched(match)}), fine-tuned as in Table 2; dev scores "
        f"x 100; one row per (K, task), the columns fe and random_k holding that K's runs. Each fe copy masks 1/K "
        f"of a row, so the per-copy masking ratio and the predictions per step change with K: the columns "
        f"<strategy>_masking_ratio_per_row and <strategy>_predictions_per_step (from the runs' metrics.json) give "
        f"them, and 'fe − random_k' at each K holds them fixed. {TRIVIAL_GLUE}. {TRIVIAL_INTRINSIC} "
        + statistics_caption([("fe", "random_k"), ("fe", "random")], pretrain_seeds, finetune_seeds, match, "table4")
        + f" {STEP_NOTE}"
    )


def table5_caption(
    *, scale: str, seed: int, corpus: str, parameters: str, projection_dim: int | None, hamming_sequences: int,
    pairs_per_intersection: int, segments: int, mask_ratio: float, replicates: int, bootstrap: int,
) -> str:  # fmt: skip
    """Table 5 (gradient variance) of pre-training seed `seed`'s checkpoints on held-out `corpus`
    blocks; the remaining arguments are the variance section's settings."""
    projection = f", count-sketched to {projection_dim} dimensions" if projection_dim else ""
    return (
        f"Scale '{scale}'. Gradient variance of the masked-LM loss of BERT checkpoints "
        f"(pre-training seed {seed}; 'init' = the shared initialisation) on held-out '{corpus}' "
        f"blocks; gradients of {parameters.replace('_', ' ')}{projection}; masked tokens replaced by "
        f"[MASK], model in eval mode. Variances are traces (squared gradient norm). 'slope of Cov/Var' is "
        f"the least-squares slope of the covariance of two masks' gradients against their Hamming "
        f"distance, divided by one mask's variance ({hamming_sequences} sequences x "
        f"{pairs_per_intersection} pairs per intersection size), with the closed form of independent "
        f"per-token contributions. Var(...) are the total variances of three estimators of one K-row "
        f"gradient (K = {segments}, compute matched): fe and random_k (one sequence, K disjoint or K "
        f"independent masks) and random with K sequences (one mask each, p = {mask_ratio}); "
        f"'mask-sampling' holds the sequence fixed. {replicates} replicates each; [lo, hi] are "
        f"bootstrap 95% intervals ({bootstrap} resamples). All columns with intervals and closed "
        f"forms are in table5.csv."
    )


def table6_caption(
    *, scale: str, corpus: str, layers: int, hidden_size: int, steps: int, rows_per_step: int, mask_ratio: float,
    segments: int, decay_schedule: dict[str, float], runs: list[str], comparisons: list[tuple[str, str]],
    pretrain_seeds: int, finetune_seeds: int, objective_notes: str = "",
) -> str:  # fmt: skip
    """Table 6 (objectives): `runs` (fem.registry.run_label names) pre-trained for `steps` steps
    whose model FLOPs match `rows_per_step` plain-MLM rows, then fine-tuned as Table 2."""
    return (
        f"Scale '{scale}'. Pre-training objectives at matched compute: a BERT ({layers} layers, hidden "
        f"{hidden_size}) pre-trained from scratch on '{corpus}' for {steps} steps with each run of "
        f"{', '.join(runs)}, then fine-tuned on each task as in Table 2. 'random', 'random_k' and 'fe' are BERT's "
        f"masked LM (mlm) with Table 2's strategies (p = {mask_ratio}, K = {segments}); 'pmlm.*' is UniLMv2's "
        "pseudo-masked LM (autoencoding + partially autoregressive loss), 'plm.*' an XLNet-style permuted LM, "
        "'mpnet.*' MPNet's masked and permuted LM; '.block' is UniLMv2's blockwise masking, '.random' BERT's random "
        f"{mask_ratio:.0%}, '.fe' the K fully-explored groups: pmlm.fe predicts every maskable token, the K groups "
        "being its K factorization steps (its context is only the special tokens and the [M]s), plm.fe and "
        f"mpnet.fe predict group k in copy k. 'random.decay' is mlm random with the masking rate decayed linearly "
        f"from {decay_schedule['start']:g} to {decay_schedule['end']:g} over the steps (Ankner et al. 2024). The "
        f"step of every pmlm, plm and mpnet run matches the model FLOPs of {rows_per_step} plain-MLM rows within 5% "
        "(fem/compute_matching.py), so the objectives with longer augmented inputs take fewer sequences; the mlm runs "
        f"keep {rows_per_step} rows as in Table 2 (random_k and fe: rows/K sequences, K copies each), so their FLOPs "
        "differ by their predictions (random.decay predicts up to twice as many early on). The columns give each run's "
        "model FLOPs, their ratio to the random step, tokens, rows, sequences and predictions per step and wall "
        f"seconds (means over its runs' metrics.json). {objective_notes + ' ' if objective_notes else ''}"
        f"Differences from the papers: absolute position embeddings and no relative position bias; the [P] and "
        "query placeholders are the [MASK] embedding (no new parameters); UniLMv2's AE + PAR loss is the mean over "
        "all predictions of both (half their sum: Adam is invariant to the scale); MPNet's whole-word and span "
        f"permutation is not used; the corpus is '{corpus}' and the budget {steps} x {rows_per_step} rows, not the "
        "papers' BERT-base runs. The validation MLM loss (nats per masked token, lower is better) scores every "
        "run's encoder as a plain masked LM on the fixed validation masks; its trivial baseline is a unigram model "
        f"of the training blocks. {TRIVIAL_GLUE}. "
        + statistics_caption(comparisons, pretrain_seeds, finetune_seeds, "rows", "table6")
        + " A row's 'control' and 'counterpart' columns name the runs its differences are taken against "
        "(<measure>_minus_control..., <measure>_minus_counterpart...); 'significance' says when its seeds cannot "
        "give a sign-flip p below 0.05."
    )
