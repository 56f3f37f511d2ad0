# Pre-train a BERT from scratch, one job per masking strategy and seed ("fe-k4": fe with
# K = 4, for Table 4).


def scratch_settings(wildcards):
    """The science flags of a from-scratch run: the pretrain and model keys, K from the
    strategy wildcard."""
    strategy, segments = pretrain_strategy(wildcards.strategy)
    pretrain = {k: v for k, v in config["pretrain"].items() if k != "strategies"} | {"segments": segments}
    return cli_flags(pretrain | config["model"] | {"strategy": strategy})


rule pretrain:
    wildcard_constraints:
        setting="scratch",
    input:
        train=f"data/tokenized/{CORPUS}/train.npy",
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        word_starts=f"data/tokenized/{CORPUS}/train_word_starts.npy",
        tokenizer=f"data/tokenized/{CORPUS}/tokenizer",
        code=fem_modules("pretraining", "tokenization", "distributed", "throughput", "masking", "collation",
                         "checkpointing", "modeling", "optimization", "settings", "cli", "validation", "train_log"),
    output:
        model=directory("results/{setting}/pretrain/{strategy}-s{seed}/model"),
        checkpoints=directory("results/{setting}/pretrain/{strategy}-s{seed}/checkpoints"),
        metrics="results/{setting}/pretrain/{strategy}-s{seed}/metrics.json",
        train_log="results/{setting}/pretrain/{strategy}-s{seed}/train_log.json",
        provenance="results/{setting}/pretrain/{strategy}-s{seed}/provenance.json",
    log:
        "logs/{setting}/pretrain/{strategy}-s{seed}.log",
    benchmark:
        "logs/benchmarks/{setting}/pretrain/{strategy}-s{seed}.tsv"
    threads: config["implementation"]["pretrain_threads"]
    resources:
        **rule_resources("pretrain"),
    params:
        # Only science settings: changing one reruns this job and everything downstream.
        settings=scratch_settings,
        data=f"data/tokenized/{CORPUS}",
    shell:
        "{LAUNCH[pretrain]} pretrain --data {params.data} --out results/{wildcards.setting}/pretrain/{wildcards.strategy}-s{wildcards.seed}"
        " --seed {wildcards.seed} {params.settings} --threads {threads}"
        # speed settings, kept out of params so changing them does not rerun finished jobs
        " {PRETRAIN_IMPLEMENTATION_FLAGS}"
        " 2>&1 | tee {log}"
