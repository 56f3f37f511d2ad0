# Continual (task-adaptive) pre-training, Table 1: a pretrained encoder (continual.model)
# continues masked-LM training on the text of a task's training split, with each masking
# strategy, before it is fine-tuned on that task (finetune.smk, setting "continual").


rule task_text:
    input:
        task="data/raw/tasks/{task}",
        code=fem_modules("task_text"),
    output:
        directory("data/raw/corpus/task-{task}"),
    log:
        "logs/task_text/{task}.log",
    benchmark:
        "logs/benchmarks/task_text/{task}.tsv"
    shell:
        "fem task-text --task {wildcards.task} --task-dir {input.task} --out {output} 2>&1 | tee {log}"


rule pretrain_continual:
    input:
        train="data/tokenized/task-{task}/train.npy",
        validation="data/tokenized/task-{task}/validation.npy",
        meta="data/tokenized/task-{task}/meta.json",
        word_starts="data/tokenized/task-{task}/train_word_starts.npy",
        tokenizer="data/tokenized/task-{task}/tokenizer",
        code=fem_modules("pretrain_continual"),
    output:
        model=directory("results/continual/pretrain/{task}/{strategy}-s{seed}/model"),
        checkpoints=directory("results/continual/pretrain/{task}/{strategy}-s{seed}/checkpoints"),
        curves=directory("results/continual/pretrain/{task}/{strategy}-s{seed}/curves"),  # for `dvc plots` (fem/live_metrics.py)
        metrics="results/continual/pretrain/{task}/{strategy}-s{seed}/metrics.json",
        train_log="results/continual/pretrain/{task}/{strategy}-s{seed}/train_log.json",
        provenance="results/continual/pretrain/{task}/{strategy}-s{seed}/provenance.json",
    log:
        "logs/continual/pretrain/{task}/{strategy}-s{seed}.log",
    benchmark:
        "logs/benchmarks/continual/pretrain/{task}/{strategy}-s{seed}.tsv"
    threads: THREADS["pretrain_threads"]
    resources:
        **rule_resources(config, "pretrain_continual"),
    params:
        settings=lambda w: continual_pretrain_settings(config, w.strategy)["flags"],
        init_from=lambda w: continual_pretrain_settings(config, w.strategy)["init_from"],
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output.metrics),
        launch=launcher(config, "pretrain_continual"),  # speed settings (SpeedFlags): not params
        speed=speed_flags(config, "pretrain_continual"),
    shell:
        "{params.launch} pretrain --data {params.data} --out {params.out}"
        " --seed {wildcards.seed} --init-from {params.init_from:q} {params.settings} --threads {threads}"
        " {params.speed}"
        " 2>&1 | tee {log}"
