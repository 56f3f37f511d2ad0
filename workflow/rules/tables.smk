# One file per paper table, built from the metrics of finished runs. Seconds of work each:
# on a cluster they run on the submit host instead of waiting in the queue.


localrules:
    table1,
    table2,
    table3,
    table4,
    table5,
    report,


def table2_caption():
    pre, model, ft = config["pretrain"], config["model"], config["finetune"]
    subsample = ft["max_train_examples"] or "all"
    rates = "/".join(f"{lr:g}" for lr in ft["learning_rates"])
    rate_note = "" if len(ft["learning_rates"]) == 1 else " (best on dev)"
    excluded = ", ".join(ft["average_exclude"]) or "none"
    compared = [s for s in STRATEGIES if s != "random"] if "random" in STRATEGIES else []
    n_pre = len(PRETRAIN_SEEDS)
    test = (
        f" '<s>_minus_random' is the difference of means and 'p_<s>' the two-sided p-value of a paired "
        f"test over the {n_pre} pre-training seed(s), fine-tuning seeds averaged within each (column "
        f"'test': exact sign-flip up to 16 seeds, then a paired t-test; with n seeds the smallest exact "
        f"p is 2/2^n = {2 / 2**n_pre:.4g} here)."
        if compared
        else ""
    )
    return (
        f"Scale '{config['scale']}'. Dev scores x 100 of a BERT ({model['num_hidden_layers']} layers, "
        f"hidden {model['hidden_size']}) pre-trained from scratch on '{CORPUS}' for {pre['steps']} steps "
        f"of {pre['rows_per_step']} rows with each masking strategy (p = {pre['mask_ratio']}, K = {SEGMENTS} "
        f"masks per sequence for the K-copy strategies; compute matched per step), then fine-tuned per task "
        f"({subsample} training examples, {ft['epochs']} epochs, learning rate {rates}{rate_note}). A GLUE "
        f"task's score is the mean of its metrics (MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman; "
        f"MNLI: matched and mismatched accuracy); 'glue average' is the mean of the task scores, excluding "
        f"{excluded}. SQuAD rows give exact match and F1 separately. Each cell is mean ± standard deviation "
        f"over {n_pre} pre-training x {len(FINETUNE_SEEDS)} fine-tuning seed(s).{test}"
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
        code=fem_modules("tables", "statistics", "cli"),
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
        average_exclude=" ".join(config["finetune"]["average_exclude"]),
        caption=table2_caption(),
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks}"
        " --strategies {params.strategies} --baseline random --average-exclude {params.average_exclude}"
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
        code=fem_modules("tables", "figures", "cli"),
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


def statistics_caption(compared, n_pretrain, n_finetune):
    """The sentence on means, standard deviations and the paired test (as Table 2's)."""
    test = (
        f" '<s>_minus_random' is the difference of means and 'p_<s>' the two-sided p-value of a paired test over "
        f"the {n_pretrain} pre-training seed(s) (exact sign-flip up to 16 seeds, then a paired t-test)."
        if compared
        else ""
    )
    return f"Each cell is mean ± standard deviation over {n_pretrain} pre-training x {n_finetune} fine-tuning seed(s).{test}"


def table1_caption():
    pre, ft = CONTINUAL["pretrain"], CONTINUAL["finetune"]
    rates = "/".join(f"{lr:g}" for lr in ft.get("learning_rates", config["finetune"]["learning_rates"]))
    return (
        f"Scale '{config['scale']}'. Continual (task-adaptive) pre-training: '{CONTINUAL['model']}' continued with "
        f"masked-LM training on the text of each task's training split for {pre['steps']} steps of "
        f"{pre['rows_per_step']} rows of {CONTINUAL['block_size']} tokens with each masking strategy (K = {SEGMENTS}), "
        f"then fine-tuned on the task (learning rate {rates}). Dev scores x 100 with the task's metric (macro-F1, "
        f"micro-F1 for ChemProt and RCT, as Don't Stop Pretraining; accuracy for SST-2); 'average' is the mean of "
        f"the task scores. "
        + statistics_caption(len(CONTINUAL["strategies"]) > 1, len(CONTINUAL_PRETRAIN_SEEDS), len(CONTINUAL_FINETUNE_SEEDS))
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
        code=fem_modules("tables", "statistics", "cli"),
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
        caption=table1_caption(),
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks} --strategies {params.strategies}"
        " --baseline random --average-exclude --average-label average"
        " --title 'Table 1: continual pre-training, then fine-tuning on the task'"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


EFFICIENCY = config["efficiency"]
EFFICIENCY_STEPS = [s for s in EFFICIENCY["steps"] if s != "final"]


def table3_caption():
    return (
        f"Scale '{config['scale']}'. Efficiency: checkpoints of each strategy's pre-training at steps "
        f"{', '.join(map(str, EFFICIENCY_STEPS))} and the final model (step {config['pretrain']['steps']}), each "
        f"fine-tuned on {EFFICIENCY['task']} (dev score x 100, fine-tuning as in Table 2); validation MLM loss on "
        f"fixed random masks (nats per masked token). Mean ± standard deviation over {len(PRETRAIN_SEEDS)} "
        f"pre-training x {len(FINETUNE_SEEDS)} fine-tuning seed(s). Compute per step is matched across strategies."
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
        code=fem_modules("efficiency", "figures", "tables", "statistics", "cli"),
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
        steps=" ".join(str(config["pretrain"]["steps"] if s == "final" else s) for s in EFFICIENCY["steps"]),
        caption=table3_caption(),
    shell:
        "fem table3 --csv {output.csv} --md {output.md} --figure {output.figure} --task {EFFICIENCY[task]}"
        " --strategies {params.strategies} --steps {params.steps} --total-steps {config[pretrain][steps]}"
        " --caption {params.caption:q} {input.intermediate} {input.final} --train-logs {input.train_logs}"
        " 2>&1 | tee {log}"


SEGMENT_COUNTS = config["segment_counts"]
# fe with each K; the default K is Table 2's fe run, the others are fe-k<K> runs
TABLE4_STRATEGIES = ["random"] + ["fe" if k == SEGMENTS else f"fe-k{k}" for k in SEGMENT_COUNTS["segments"]]


def table4_caption():
    pre = config["pretrain"]
    return (
        f"Scale '{config['scale']}'. Number of segments: BERT pre-trained from scratch with fe masking for K in "
        f"[{', '.join(map(str, SEGMENT_COUNTS['segments']))}] ('fe' is K = {SEGMENTS} = round(1/p), 'fe-k<K>' the "
        f"others) and with random masking, {pre['steps']} steps of {pre['rows_per_step']} rows each (compute "
        f"matched: K copies of rows/K sequences), fine-tuned as in Table 2; dev scores x 100. "
        + statistics_caption(True, len(PRETRAIN_SEEDS), len(FINETUNE_SEEDS))
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
        code=fem_modules("tables", "statistics", "cli"),
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
        strategies=" ".join(TABLE4_STRATEGIES),
        average_exclude=" ".join(config["finetune"]["average_exclude"]),
        caption=table4_caption(),
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks} --strategies {params.strategies}"
        " --baseline random --average-exclude {params.average_exclude} --title 'Table 4: number of segments K'"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


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
