# Fine-tune every pre-trained checkpoint on every task, per fine-tuning seed: GLUE and the
# classification tasks of Table 1 with `fem finetune`, SQuAD with `fem finetune-squad`. Same
# output layout for both. Table 3 fine-tunes intermediate checkpoints (finetune_checkpoint).


rule finetune:
    wildcard_constraints:
        task="|".join(task_names("glue") + task_names("classification")),
    input:
        checkpoint=finetune_checkpoint_dir,
        task="data/raw/tasks/{task}",
        code=fem_modules("finetune"),
    output:
        metrics="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
        predictions="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/predictions.csv",
        curves=directory("results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/curves"),  # for `dvc plots` (fem/live_metrics.py)
        provenance="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/provenance.json",
    log:
        "logs/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.tsv"
    threads: THREADS["finetune_threads"]
    resources:
        **rule_resources(config, "finetune"),
    params:
        settings=lambda w: finetune_flags(config, w.task, w.setting),
        out=lambda w, output: os.path.dirname(output.metrics),
        # Speed settings (SpeedFlags): changing one reruns nothing.
        launch=launcher(config, "finetune"),
        speed=speed_flags(config, "finetune"),
    shell:
        "{params.launch} finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out {params.out}"
        " --seed {wildcards.ftseed} {params.settings} --threads {threads} {params.speed}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"


rule finetune_squad:
    wildcard_constraints:
        task="|".join(task_names("squad")),
        setting="scratch",
    input:
        checkpoint="results/{setting}/pretrain/{strategy}-s{seed}/model",
        task="data/raw/tasks/{task}",
        code=fem_modules("finetune_squad"),
    output:
        metrics="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
        predictions="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/predictions.json",
        null_odds="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/null_odds.json",
        curves=directory("results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/curves"),  # for `dvc plots` (fem/live_metrics.py)
        provenance="results/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}/provenance.json",
    log:
        "logs/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/{setting}/finetune/{task}/{strategy}-s{seed}-f{ftseed}.tsv"
    threads: THREADS["finetune_threads"]
    resources:
        **rule_resources(config, "finetune_squad"),
    params:
        settings=squad_flags(config),
        out=lambda w, output: os.path.dirname(output.metrics),
        # Speed settings (SpeedFlags): changing one reruns nothing.
        launch=launcher(config, "finetune_squad"),
        speed=speed_flags(config, "finetune_squad"),
    shell:
        "{params.launch} finetune-squad --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoint}"
        " --out {params.out}"
        " --seed {wildcards.ftseed} {params.settings} --threads {threads} {params.speed}"
        " --label setting={wildcards.setting} --label strategy={wildcards.strategy}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"


rule finetune_checkpoint:
    # Table 3: an intermediate checkpoint (pretrain.save_steps) fine-tuned on one task.
    wildcard_constraints:
        task="|".join(task_names("glue")),
        step=r"\d+",
    input:
        checkpoints="results/scratch/pretrain/{strategy}-s{seed}/checkpoints",
        task="data/raw/tasks/{task}",
        code=fem_modules("finetune_checkpoint"),
    output:
        metrics="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/metrics.json",
        predictions="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/predictions.csv",
        curves=directory("results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/curves"),  # for `dvc plots` (fem/live_metrics.py)
        provenance="results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/provenance.json",
    log:
        "logs/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}.log",
    benchmark:
        "logs/benchmarks/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}.tsv"
    threads: THREADS["finetune_threads"]
    resources:
        **rule_resources(config, "finetune"),
    params:
        settings=lambda w: finetune_flags(config, w.task),
        out=lambda w, output: os.path.dirname(output.metrics),
        # Speed settings (SpeedFlags): changing one reruns nothing.
        launch=launcher(config, "finetune"),
        speed=speed_flags(config, "finetune_checkpoint"),
    shell:
        "{params.launch} finetune --task {wildcards.task} --task-dir {input.task} --checkpoint {input.checkpoints}/step-{wildcards.step}"
        " --out {params.out}"
        " --seed {wildcards.ftseed} {params.settings} --threads {threads} {params.speed}"
        " --label setting=scratch --label strategy={wildcards.strategy} --label step={wildcards.step}"
        " --label pretrain_seed={wildcards.seed} --label finetune_seed={wildcards.ftseed}"
        " 2>&1 | tee {log}"
