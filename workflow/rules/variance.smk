# Gradient-variance analysis (DESIGN §6): per-mask gradients of pre-training checkpoints.
# One job per (strategy, checkpoint) of the first pre-training seed; the initialisation
# (step 0) is the same for every strategy of a seed, so only the first strategy's is run.

VARIANCE_SEED = PRETRAIN_SEEDS[0]


VARIANCE_RUNS = [
    (strategy, step)
    for strategy in STRATEGIES
    for step in config["variance"]["checkpoints"]
    if step != 0 or strategy == STRATEGIES[0]
]


def pretrain_run(wildcards):
    return f"results/{wildcards.setting}/pretrain/{wildcards.strategy}-s{wildcards.seed}"


def variance_inputs(wildcards):
    """The final model and its run's metrics.json, or the checkpoints folder (a directory
    output of pretrain: the step-N folder inside it is not a file Snakemake knows)."""
    run = pretrain_run(wildcards)
    if wildcards.step == "final":
        return {"model": f"{run}/model", "metrics": f"{run}/metrics.json"}
    return {"checkpoints": f"{run}/checkpoints"}


def checkpoint_folder(wildcards):
    run = pretrain_run(wildcards)
    return f"{run}/model" if wildcards.step == "final" else f"{run}/checkpoints/step-{wildcards.step}"


rule variance:
    input:
        unpack(variance_inputs),
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        code=fem_modules("variance", "mask_gradients", "masking", "tokenization", "checkpointing", "settings", "cli"),
    output:
        variance="results/{setting}/variance/{strategy}-s{seed}/step-{step}/variance.json",
        provenance="results/{setting}/variance/{strategy}-s{seed}/step-{step}/provenance.json",
    log:
        "logs/{setting}/variance/{strategy}-s{seed}-step-{step}.log",
    benchmark:
        "logs/benchmarks/{setting}/variance/{strategy}-s{seed}-step-{step}.tsv"
    threads: config["implementation"]["variance_threads"]
    resources:
        **rule_resources("variance"),
    params:
        # Science settings only; threads and chunk size are speed settings (not params).
        settings=cli_flags(
            {k: v for k, v in config["variance"].items() if k != "checkpoints"}
            | {"mask_ratio": config["pretrain"]["mask_ratio"], "segments": config["pretrain"]["segments"]}
        ),
        checkpoint=checkpoint_folder,
        data=f"data/tokenized/{CORPUS}",
    shell:
        "fem variance --checkpoint {params.checkpoint}"
        " --data {params.data} --out results/{wildcards.setting}/variance/{wildcards.strategy}-s{wildcards.seed}/step-{wildcards.step}"
        " {params.settings}"
        " --threads {threads} --chunk-rows {VARIANCE_CHUNK_ROWS}"
        " 2>&1 | tee {log}"
