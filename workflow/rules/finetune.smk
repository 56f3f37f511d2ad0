# Fine-tune every pre-trained checkpoint on every task, per fine-tuning seed: GLUE tasks
# with `fem finetune`, SQuAD with `fem finetune-squad`. Same output layout for both.


rule finetune:
    wildcard_constraints:
        task="|".join(GLUE_TASKS),
    input:
        checkpoint="results/{setting}/pretrain/{strategy}-s{seed}/model",
        task="data/raw/tasks/{task}",
        code=fem_modules("finetuning", "metrics", "data", "modeling", "optimization", "settings", "cli"),
    output:
        metrics="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
        predictions="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/predictions.csv",
        provenance="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/provenance.json",
    log:
        "logs/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.tsv"
    threads: config["implementation"]["finetune_threads"]
    params:
        settings=cli_flags(glue_settings()),
        metrics=lambda wildcards: cli_flags({"metrics": config["finetune"]["metrics"][wildcards.task]}),
    shell:
        "fem finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out results/{wildcards.setting}/finetune/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} {params.metrics} --threads {threads}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"


rule finetune_squad:
    wildcard_constraints:
        task="squad|squad_v2",
    input:
        checkpoint="results/{setting}/pretrain/{strategy}-s{seed}/model",
        task="data/raw/tasks/{task}",
        code=fem_modules("squad", "finetuning", "metrics", "data", "modeling", "optimization", "settings", "cli"),
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
    params:
        settings=cli_flags(config["finetune"]["squad"]),
        metrics=lambda wildcards: cli_flags({"metrics": config["finetune"]["metrics"][wildcards.task]}),
    shell:
        "fem finetune-squad --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out results/{wildcards.setting}/finetune/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} {params.metrics} --threads {threads}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"
