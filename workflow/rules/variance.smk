# Gradient-variance analysis (DESIGN §6): per-mask gradients of pre-training checkpoints.
# One job per (strategy, checkpoint) of the first pre-training seed; the initialisation
# (step 0) is the same for every strategy of a seed, so only the first strategy's is run
# (the runs of Table 5: fem/rule_settings.py table5_settings).


rule variance:
    input:
        unpack(variance_inputs),
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        code=fem_modules("variance"),
    output:
        variance="results/{setting}/variance/{strategy}-s{seed}/step-{step}/variance.json",
        provenance="results/{setting}/variance/{strategy}-s{seed}/step-{step}/provenance.json",
    log:
        "logs/{setting}/variance/{strategy}-s{seed}-step-{step}.log",
    benchmark:
        "logs/benchmarks/{setting}/variance/{strategy}-s{seed}-step-{step}.tsv"
    threads: THREADS["variance_threads"]
    resources:
        **rule_resources(config, "variance"),
    params:
        # Science settings only; threads and chunk size are speed settings (not params).
        settings=variance_flags(config),
        checkpoint=checkpoint_folder,
        data=lambda w, input: os.path.dirname(input.validation),
        out=lambda w, output: os.path.dirname(output.variance),
        chunk_rows=speed_flags(config, "variance"),  # SpeedFlags: changing it reruns nothing
    shell:
        "fem variance --checkpoint {params.checkpoint}"
        " --data {params.data} --out {params.out}"
        " {params.settings}"
        " --threads {threads} --chunk-rows {params.chunk_rows}"
        " 2>&1 | tee {log}"
