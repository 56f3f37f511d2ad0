# One file per paper table, built from the metrics of finished runs.


def table2_caption():
    pre, model, ft = config["pretrain"], config["model"], config["finetune"]
    subsample = ft["max_train_examples"] or "all"
    return (
        f"Scale '{config['scale']}'. GLUE dev score x 100 (the mean of the task's metrics where it "
        f"has two) of a BERT ({model['num_hidden_layers']} layers, hidden {model['hidden_size']}) "
        f"pre-trained from scratch on '{CORPUS}' for {pre['steps']} steps of {pre['rows_per_step']} "
        f"rows with each masking strategy (p = {pre['mask_ratio']}, fe: K = {SEGMENTS} disjoint "
        f"masks per sequence; compute matched per step), then fine-tuned per task ({subsample} training "
        f"examples, {ft['epochs']} epochs, learning rate {ft['learning_rate']}). Each cell is the mean "
        f"over {len(PRETRAIN_SEEDS)} pre-training x {len(FINETUNE_SEEDS)} fine-tuning seed(s); "
        f"'average' is the unweighted mean of the task rows."
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
        code=fem_modules("tables", "cli"),
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
        caption=table2_caption(),
    shell:
        "fem table2 --csv {output.csv} --md {output.md} --tasks {params.tasks}"
        " --strategies {params.strategies} --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"
