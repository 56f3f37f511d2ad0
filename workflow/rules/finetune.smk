# Fine-tune every pre-trained checkpoint on every task, per fine-tuning seed: GLUE and the
# classification tasks of Table 1 with `fem finetune`, SQuAD with `fem finetune-squad`. Same
# output layout for both. Table 3 fine-tunes intermediate checkpoints (finetune_checkpoint).


def finetune_checkpoint_dir(wildcards):
    """scratch: results/scratch/pretrain/<run>/model; continual: the run continued on the task."""
    if wildcards.setting == "continual":
        return f"results/continual/pretrain/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}/model"
    return f"results/scratch/pretrain/{wildcards.strategy}-s{wildcards.seed}/model"


def finetune_settings(wildcards):
    """FinetuneSettings flags: the finetune keys (finetune.per_task on top); for continual runs with
    continual.finetune on top of those."""
    settings = glue_settings(wildcards.task)
    if wildcards.setting == "continual":
        settings |= CONTINUAL["finetune"]
    return cli_flags(settings)


rule finetune:
    wildcard_constraints:
        task="|".join(GLUE_TASKS + CLASSIFICATION_TASKS),
    input:
        checkpoint=finetune_checkpoint_dir,
        task="data/raw/tasks/{task}",
        code=fem_modules("finetuning", "checkpointing", "distributed", "metrics", "data", "modeling", "optimization", "settings",
                         "cli"),
    output:
        metrics="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
        predictions="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/predictions.csv",
        provenance="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/provenance.json",
    log:
        "logs/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.tsv"
    threads: config["implementation"]["finetune_threads"]
    resources:
        **rule_resources("finetune"),
    params:
        settings=finetune_settings,
        metrics=task_metric_flags,
    shell:
        "{LAUNCH[finetune]} finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out results/{wildcards.setting}/finetune/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} {params.metrics} --threads {threads}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"


rule finetune_squad:
    wildcard_constraints:
        task="squad|squad_v2",
        setting="scratch",
    input:
        checkpoint="results/{setting}/pretrain/{strategy}-s{seed}/model",
        task="data/raw/tasks/{task}",
        code=fem_modules("squad", "finetuning", "checkpointing", "distributed", "metrics", "data", "modeling", "optimization",
                         "settings", "cli"),
    output:
        metrics="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
        predictions="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/predictions.json",
        null_odds="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/null_odds.json",
        provenance="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/provenance.json",
    log:
        "logs/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.tsv"
    threads: config["implementation"]["finetune_threads"]
    resources:
        **rule_resources("finetune_squad"),
    params:
        settings=cli_flags(config["finetune"]["squad"]),
        metrics=task_metric_flags,
    shell:
        "{LAUNCH[finetune_squad]} finetune-squad --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out results/{wildcards.setting}/finetune/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} {params.metrics} --threads {threads}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"


rule finetune_checkpoint:
    # Table 3: an intermediate checkpoint (pretrain.save_steps) fine-tuned on one task.
    wildcard_constraints:
        task="|".join(GLUE_TASKS),
        step=r"\d+",
    input:
        checkpoints="results/scratch/pretrain/{strategy}-s{seed}/checkpoints",
        task="data/raw/tasks/{task}",
        code=fem_modules("finetuning", "checkpointing", "distributed", "metrics", "data", "modeling", "optimization", "settings",
                         "cli"),
    output:
        metrics="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/metrics.json",
        predictions="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/predictions.csv",
        provenance="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/provenance.json",
    log:
        "logs/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}.tsv"
    threads: config["implementation"]["finetune_threads"]
    resources:
        **rule_resources("finetune"),
    params:
        settings=lambda w: cli_flags(glue_settings(w.task)),
        metrics=task_metric_flags,
    shell:
        "{LAUNCH[finetune]} finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoints}/step-{wildcards.step}"
        " --out results/scratch/efficiency/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-step-{wildcards.step}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} {params.metrics} --threads {threads}"
        " --label setting=scratch --label strategy={wildcards.strategy} --label step={wildcards.step}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"
