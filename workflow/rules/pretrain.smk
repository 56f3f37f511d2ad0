# Pre-train a BERT from scratch, one job per masking strategy and seed.


rule pretrain:
    input:
        train=f"data/tokenized/{CORPUS}/train.npy",
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        word_starts=f"data/tokenized/{CORPUS}/train_word_starts.npy",
        tokenizer=f"data/tokenized/{CORPUS}/tokenizer",
        code=fem_modules("pretraining", "masking", "collation", "checkpointing", "modeling", "optimization", "settings", "cli"),
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
    params:
        # Only science settings: changing one reruns this job and everything downstream.
        settings=cli_flags(
            {k: v for k, v in config["pretrain"].items() if k != "strategies"} | config["model"]
        ),
        data=f"data/tokenized/{CORPUS}",
    shell:
        "fem pretrain --data {params.data} --out results/{wildcards.setting}/pretrain/{wildcards.strategy}-s{wildcards.seed}"
        " --strategy {wildcards.strategy} --seed {wildcards.seed} {params.settings} --threads {threads}"
        # speed settings, kept out of params so changing them does not rerun finished jobs
        " {PRETRAIN_IMPLEMENTATION_FLAGS}"
        " 2>&1 | tee {log}"
