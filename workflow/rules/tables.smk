# One file per paper table, built from the metrics of finished runs.


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
        "fem table2 --csv {output.csv} --md {output.md} --tasks {params.tasks}"
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
