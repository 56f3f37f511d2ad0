# Fine-tune every pre-trained checkpoint on every GLUE task, per fine-tuning seed.


rule finetune:
    input:
        checkpoint="results/{setting}/pretrain/{strategy}-s{seed}/model",
        task="data/raw/glue/{task}",
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
        settings=cli_flags({k: v for k, v in config["finetune"].items() if k != "tasks"}),
    shell:
        "fem finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out results/{wildcards.setting}/finetune/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}-f{wildcards.ftseed}"
        " --seed {wildcards.ftseed} {params.settings} --threads {threads}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"
