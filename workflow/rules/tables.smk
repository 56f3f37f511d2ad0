# One file per paper table, built from the metrics of finished runs. Seconds of work each:
# on a cluster they run on the submit host instead of waiting in the queue.


localrules:
    table1,
    table2,
    table3,
    table4,
    table5,
    report,


from fem.comparisons import default_comparisons, statistics_caption, table4_strategies

# pretrain.match (fem pretrain): rows (equal compute per step) or sequences (equal distinct sequences)
MATCH = config["pretrain"]["match"]
TABLE_CODE = ("tables", "statistics", "row_statistics", "comparisons", "intrinsic", "table_cli", "cli")
TRIVIAL_GLUE = (
    "'trivial' is each row's trivial baseline on the same dev examples: the majority class of the (subsampled) "
    "training set for accuracy and F1 (MCC 0), a constant prediction for correlations (0), SQuAD v1.1 exact match "
    "and F1 0, SQuAD v2 the scores of answering \"\" everywhere"
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


def strategy_flags(comparisons):
    """--comparisons a:b c:d (A minus B)."""
    return " ".join(f"{a}:{b}" for a, b in comparisons)


def matched():
    """How the strategies' steps are matched (pretrain.match), in words."""
    if MATCH == "sequences":
        return "the same distinct sequences per step for every strategy, so K-copy strategies do K x the rows and compute"
    return "compute matched per step: the K-copy strategies take rows/K sequences, K copies each"


TABLE2_COMPARISONS = default_comparisons(STRATEGIES)


def table2_caption():
    pre, model, ft = config["pretrain"], config["model"], config["finetune"]
    subsample = ft["max_train_examples"] or "all"
    rates = "/".join(f"{lr:g}" for lr in ft["learning_rates"])
    rate_note = "" if len(ft["learning_rates"]) == 1 else " (best on dev)"
    excluded = ", ".join(ft["average_exclude"]) or "none"
    per_task = "".join(
        f"; {task}: " + ", ".join(f"{key.replace('_', ' ')} {value if value is not None else 'all'}"
                                  for key, value in values.items())
        for task, values in (ft.get("per_task") or {}).items() if task in TASKS
    )  # fmt: skip
    return (
        f"Scale '{config['scale']}'. Dev scores x 100 of a BERT ({model['num_hidden_layers']} layers, "
        f"hidden {model['hidden_size']}) pre-trained from scratch on '{CORPUS}' for {pre['steps']} steps "
        f"of {pre['rows_per_step']} rows with each masking strategy (p = {pre['mask_ratio']}, K = {SEGMENTS} "
        f"masks per sequence for the K-copy strategies; {matched()}), then fine-tuned per task "
        f"({subsample} training examples, {ft['epochs']} epochs, learning rate {rates}{rate_note}{per_task}). A GLUE "
        f"task's score is the mean of its metrics (MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman; "
        f"MNLI: matched and mismatched accuracy); 'glue average' is the mean of the task scores, excluding "
        f"{excluded}. SQuAD rows give exact match and F1 separately. {TRIVIAL_GLUE}. {TRIVIAL_INTRINSIC} "
        + statistics_caption(TABLE2_COMPARISONS, len(PRETRAIN_SEEDS), len(FINETUNE_SEEDS), MATCH, "table2")
        + f" {STEP_NOTE}"
    )


rule table2:
    input:
        metrics=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=TASKS,
            strategy=STRATEGIES,
            seed=PRETRAIN_SEEDS,
            ftseed=FINETUNE_SEEDS,
        ),
        pretrain_metrics=expand(
            "results/scratch/pretrain/{strategy}-s{seed}/metrics.json", strategy=STRATEGIES, seed=PRETRAIN_SEEDS
        ),
        code=fem_modules(*TABLE_CODE),
    output:
        csv="results/table2.csv",
        md="results/table2.md",
        provenance="results/table2.provenance.json",
    log:
        "logs/tables/table2.log",
    benchmark:
        "logs/benchmarks/tables/table2.tsv"
    params:
        tasks=" ".join(TASKS),
        strategies=" ".join(STRATEGIES),
        comparisons=strategy_flags(TABLE2_COMPARISONS),
        average_exclude=" ".join(config["finetune"]["average_exclude"]),
        caption=table2_caption(),
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks}"
        " --strategies {params.strategies} --comparisons {params.comparisons}"
        " --average-exclude {params.average_exclude} --pretrain-metrics {input.pretrain_metrics}"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


def table5_caption():
    v, pre = config["variance"], config["pretrain"]
    projection = f", count-sketched to {v['projection_dim']} dimensions" if v["projection_dim"] else ""
    return (
        f"Scale '{config['scale']}'. Gradient variance of the masked-LM loss of BERT checkpoints "
        f"(pre-training seed {VARIANCE_SEED}; 'init' = the shared initialisation) on held-out '{CORPUS}' "
        f"blocks; gradients of {v['parameters'].replace('_', ' ')}{projection}; masked tokens replaced by "
        f"[MASK], model in eval mode. Variances are traces (squared gradient norm). 'slope of Cov/Var' is "
        f"the least-squares slope of the covariance of two masks' gradients against their Hamming "
        f"distance, divided by one mask's variance ({v['hamming_sequences']} sequences x "
        f"{v['pairs_per_intersection']} pairs per intersection size), with the closed form of independent "
        f"per-token contributions. Var(...) are the total variances of three estimators of one K-row "
        f"gradient (K = {SEGMENTS}, compute matched): fe and random_k (one sequence, K disjoint or K "
        f"independent masks) and random with K sequences (one mask each, p = {pre['mask_ratio']}); "
        f"'mask-sampling' holds the sequence fixed. {v['replicates']} replicates each; [lo, hi] are "
        f"bootstrap 95% intervals ({v['bootstrap']} resamples). All columns with intervals and closed "
        f"forms are in table5.csv."
    )


rule table5:
    input:
        results=[
            f"results/scratch/variance/{strategy}-s{VARIANCE_SEED}/step-{step}/variance.json"
            for strategy, step in VARIANCE_RUNS
        ],
        code=fem_modules("tables", "variance_table", "figures", "table_cli", "cli"),
    output:
        csv="results/table5.csv",
        md="results/table5.md",
        hamming_figure="results/figures/variance_vs_hamming.png",
        estimator_figure="results/figures/estimator_variance.png",
        provenance="results/table5.provenance.json",
    log:
        "logs/tables/table5.log",
    benchmark:
        "logs/benchmarks/tables/table5.tsv"
    params:
        caption=table5_caption(),
    shell:
        "fem table5 --csv {output.csv} --md {output.md} --hamming-figure {output.hamming_figure}"
        " --estimator-figure {output.estimator_figure} --caption {params.caption:q} {input.results}"
        " 2>&1 | tee {log}"


CONTINUAL_PRETRAIN_SEEDS = CONTINUAL["seeds"]["pretrain"]
CONTINUAL_FINETUNE_SEEDS = CONTINUAL["seeds"]["finetune"]


TABLE1_COMPARISONS = default_comparisons(CONTINUAL["strategies"])


def table1_caption():
    pre, ft = CONTINUAL["pretrain"], CONTINUAL["finetune"]
    rates = "/".join(f"{lr:g}" for lr in ft.get("learning_rates", config["finetune"]["learning_rates"]))
    match = pre.get("match", MATCH)
    return (
        f"Scale '{config['scale']}'. Continual (task-adaptive) pre-training: '{CONTINUAL['model']}' continued with "
        f"masked-LM training on the text of each task's training split for {pre['steps']} steps of "
        f"{pre['rows_per_step']} rows of {CONTINUAL['block_size']} tokens with each masking strategy (K = {SEGMENTS}), "
        f"then fine-tuned on the task (learning rate {rates}). Dev scores x 100 with the task's metric (macro-F1, "
        f"micro-F1 for ChemProt and RCT, as Don't Stop Pretraining; accuracy for SST-2); 'average' is the mean of "
        f"the task scores. 'trivial' is each row's trivial baseline on the same dev examples: the majority class of "
        f"the training set. "
        + statistics_caption(TABLE1_COMPARISONS, len(CONTINUAL_PRETRAIN_SEEDS), len(CONTINUAL_FINETUNE_SEEDS), match,
                             "table1")
    )


rule table1:
    input:
        metrics=expand(
            "results/continual/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=CONTINUAL_TASKS,
            strategy=CONTINUAL["strategies"],
            seed=CONTINUAL_PRETRAIN_SEEDS,
            ftseed=CONTINUAL_FINETUNE_SEEDS,
        ),
        code=fem_modules(*TABLE_CODE),
    output:
        csv="results/table1.csv",
        md="results/table1.md",
        provenance="results/table1.provenance.json",
    log:
        "logs/tables/table1.log",
    benchmark:
        "logs/benchmarks/tables/table1.tsv"
    params:
        tasks=" ".join(CONTINUAL_TASKS),
        strategies=" ".join(CONTINUAL["strategies"]),
        comparisons=strategy_flags(TABLE1_COMPARISONS),
        caption=table1_caption(),
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks} --strategies {params.strategies}"
        " --comparisons {params.comparisons} --average-exclude --average-label average"
        " --title 'Table 1: continual pre-training, then fine-tuning on the task'"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


EFFICIENCY = config["efficiency"]
EFFICIENCY_STEPS = [s for s in EFFICIENCY["steps"] if s != "final"]


def table3_caption():
    return (
        f"Scale '{config['scale']}'. Efficiency: checkpoints of each strategy's pre-training at steps "
        f"{', '.join(map(str, EFFICIENCY_STEPS))} and the final model (step {config['pretrain']['steps']}), each "
        f"fine-tuned on {EFFICIENCY['task']} (dev score x 100, fine-tuning as in Table 2; trivial baseline: the "
        f"majority class of the training set); validation MLM loss on fixed random masks (nats per masked token, "
        f"lower is better; trivial baseline: a unigram model of the training blocks). Strategies' steps: "
        f"{matched()}. "
        + statistics_caption(TABLE2_COMPARISONS, len(PRETRAIN_SEEDS), len(FINETUNE_SEEDS), MATCH, "table3")
        + " A comparison's columns (score_<A>_minus_<B>..., validation_mlm_loss_<A>_minus_<B>...) are on A's rows."
    )


rule table3:
    input:
        intermediate=expand(
            "results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/metrics.json",
            task=EFFICIENCY["task"],
            strategy=STRATEGIES,
            seed=PRETRAIN_SEEDS,
            step=EFFICIENCY_STEPS,
            ftseed=FINETUNE_SEEDS,
        ),
        final=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=EFFICIENCY["task"],
            strategy=STRATEGIES,
            seed=PRETRAIN_SEEDS,
            ftseed=FINETUNE_SEEDS,
        ) if "final" in EFFICIENCY["steps"] else [],
        train_logs=expand("results/scratch/pretrain/{strategy}-s{seed}/train_log.json", strategy=STRATEGIES,
                          seed=PRETRAIN_SEEDS),
        pretrain_metrics=expand("results/scratch/pretrain/{strategy}-s{seed}/metrics.json", strategy=STRATEGIES,
                                seed=PRETRAIN_SEEDS),
        code=fem_modules("efficiency", "figures", *TABLE_CODE),
    output:
        csv="results/table3.csv",
        md="results/table3.md",
        figure="results/figures/efficiency.png",
        provenance="results/table3.provenance.json",
    log:
        "logs/tables/table3.log",
    benchmark:
        "logs/benchmarks/tables/table3.tsv"
    params:
        strategies=" ".join(STRATEGIES),
        comparisons=strategy_flags(TABLE2_COMPARISONS),
        steps=" ".join(str(config["pretrain"]["steps"] if s == "final" else s) for s in EFFICIENCY["steps"]),
        caption=table3_caption(),
    shell:
        "fem table3 --csv {output.csv} --md {output.md} --figure {output.figure} --task {EFFICIENCY[task]}"
        " --strategies {params.strategies} --comparisons {params.comparisons} --steps {params.steps}"
        " --total-steps {config[pretrain][steps]} --caption {params.caption:q} {input.intermediate} {input.final}"
        " --train-logs {input.train_logs} --pretrain-metrics {input.pretrain_metrics} 2>&1 | tee {log}"


SEGMENT_COUNTS = config["segment_counts"]
# per K: fe-k<K> and its control random_k-k<K> (the plain fe and random_k at the default K), and random
TABLE4_STRATEGIES = table4_strategies(SEGMENT_COUNTS["segments"], SEGMENTS)


def table4_caption():
    pre = config["pretrain"]
    return (
        f"Scale '{config['scale']}'. Number of segments: BERT pre-trained from scratch with fe masking for K in "
        f"[{', '.join(map(str, SEGMENT_COUNTS['segments']))}] ('fe' and 'random_k' are K = {SEGMENTS}, "
        f"'fe-k<K>' and 'random_k-k<K>' the others), each with its control random_k of the same K (independent "
        f"masks of the same sizes as fe's K groups), and with random masking (p = {pre['mask_ratio']}); "
        f"{pre['steps']} steps of {pre['rows_per_step']} rows ({matched()}), fine-tuned as in Table 2; dev scores "
        f"x 100; one row per (K, task), the columns fe and random_k holding that K's runs. Each fe copy masks 1/K "
        f"of a row, so the per-copy masking ratio and the predictions per step change with K: the columns "
        f"<strategy>_masking_ratio_per_row and <strategy>_predictions_per_step (from the runs' metrics.json) give "
        f"them, and 'fe − random_k' at each K holds them fixed. {TRIVIAL_GLUE}. {TRIVIAL_INTRINSIC} "
        + statistics_caption([("fe", "random_k"), ("fe", "random")], len(PRETRAIN_SEEDS), len(FINETUNE_SEEDS),
                             MATCH, "table4")
        + f" {STEP_NOTE}"
    )


rule table4:
    input:
        metrics=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=SEGMENT_COUNTS["tasks"],
            strategy=TABLE4_STRATEGIES,
            seed=PRETRAIN_SEEDS,
            ftseed=FINETUNE_SEEDS,
        ),
        pretrain_metrics=expand("results/scratch/pretrain/{strategy}-s{seed}/metrics.json",
                                strategy=TABLE4_STRATEGIES, seed=PRETRAIN_SEEDS),
        code=fem_modules("segments_table", *TABLE_CODE),
    output:
        csv="results/table4.csv",
        md="results/table4.md",
        provenance="results/table4.provenance.json",
    log:
        "logs/tables/table4.log",
    benchmark:
        "logs/benchmarks/tables/table4.tsv"
    params:
        tasks=" ".join(SEGMENT_COUNTS["tasks"]),
        segments=" ".join(map(str, SEGMENT_COUNTS["segments"])),
        default_segments=SEGMENTS,
        average_exclude=" ".join(config["finetune"]["average_exclude"]),
        caption=table4_caption(),
    shell:
        "fem table4 --csv {output.csv} --md {output.md} --tasks {params.tasks} --segments {params.segments}"
        " --default-segments {params.default_segments} --average-exclude {params.average_exclude}"
        " --pretrain-metrics {input.pretrain_metrics} --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


rule report:
    input:
        tables=expand("results/table{n}.md", n=[1, 2, 3, 4, 5]),
        figures=["results/figures/efficiency.png", "results/figures/variance_vs_hamming.png",
                 "results/figures/estimator_variance.png"],
        data_overlap="results/data/overlap.md",
        code=fem_modules("report", "cli"),
    output:
        report="results/report.md",
        provenance="results/report.provenance.json",
    log:
        "logs/tables/report.log",
    shell:
        "fem report --out {output.report} --tables {input.tables} --figures {input.figures} 2>&1 | tee {log}"
