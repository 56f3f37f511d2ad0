# Continual (task-adaptive) pre-training, Table 1: a pretrained encoder (continual.model)
# continues masked-LM training on the text of a task's training split, with each masking
# strategy, before it is fine-tuned on that task (finetune.smk, setting "continual").


rule task_text:
    input:
        task="data/raw/tasks/{task}",
        code=fem_modules("data", "cli"),
    output:
        directory("data/raw/corpus/task-{task}"),
    log:
        "logs/task_text/{task}.log",
    benchmark:
        "logs/benchmarks/task_text/{task}.tsv"
    shell:
        "fem task-text --task {wildcards.task} --task-dir {input.task} --out {output} 2>&1 | tee {log}"


def continual_settings(wildcards):
    """The science flags of a continual run: pretrain keys, continual.pretrain on top, no
    intermediate checkpoints; the model shape comes from continual.model."""
    pretrain = {k: v for k, v in config["pretrain"].items() if k != "strategies"} | {"save_steps": []}
    shape = {k: None for k in config["model"]}
    return cli_flags(pretrain | CONTINUAL["pretrain"] | shape | {"strategy": wildcards.strategy})


rule pretrain_continual:
    input:
        train="data/tokenized/task-{task}/train.npy",
        validation="data/tokenized/task-{task}/validation.npy",
        meta="data/tokenized/task-{task}/meta.json",
        word_starts="data/tokenized/task-{task}/train_word_starts.npy",
        tokenizer="data/tokenized/task-{task}/tokenizer",
        code=fem_modules("pretraining", "tokenization", "distributed", "throughput", "masking", "collation",
                         "checkpointing", "modeling", "optimization", "settings", "cli", "validation", "train_log"),
    output:
        model=directory("results/continual/pretrain/{task}/{strategy}-s{seed}/model"),
        checkpoints=directory("results/continual/pretrain/{task}/{strategy}-s{seed}/checkpoints"),
        metrics="results/continual/pretrain/{task}/{strategy}-s{seed}/metrics.json",
        train_log="results/continual/pretrain/{task}/{strategy}-s{seed}/train_log.json",
        provenance="results/continual/pretrain/{task}/{strategy}-s{seed}/provenance.json",
    log:
        "logs/continual/pretrain/{task}/{strategy}-s{seed}.log",
    benchmark:
        "logs/benchmarks/continual/pretrain/{task}/{strategy}-s{seed}.tsv"
    threads: config["implementation"]["pretrain_threads"]
    resources:
        **rule_resources("pretrain_continual"),
    params:
        settings=continual_settings,
        init_from=CONTINUAL["model"],
    shell:
        "{LAUNCH[pretrain_continual]} pretrain --data data/tokenized/task-{wildcards.task} --out results/continual/pretrain/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}"
        " --seed {wildcards.seed} --init-from {params.init_from:q} {params.settings} --threads {threads}"
        " {PRETRAIN_IMPLEMENTATION_FLAGS}"
        " 2>&1 | tee {log}"
