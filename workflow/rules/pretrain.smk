# Pre-train a BERT from scratch, one job per masking strategy and seed ("fe-k4": fe with
# K = 4, for Table 4), and per Table 6 run and seed (setting "objectives": results/objectives/
# pretrain/<run name>-s<seed>, e.g. pmlm.block-s1; fem/objective_settings.py builds its flags).


rule pretrain:
    wildcard_constraints:
        setting="scratch|objectives",
    input:
        train=f"data/tokenized/{CORPUS}/train.npy",
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        word_starts=f"data/tokenized/{CORPUS}/train_word_starts.npy",
        tokenizer=f"data/tokenized/{CORPUS}/tokenizer",
        # objective lichee: the coarse vocabulary (rule coarse_vocab); no file for the others
        coarse_vocab=lambda w: [COARSE_VOCAB] if run_objective(config, w.strategy, w.setting) == "lichee" else [],
        # strategies salient_span, fe_salient_span: the entity spans of the blocks (rule entities)
        entities=lambda w: [ENTITIES] if run_strategy(w.strategy) in ENTITY_STRATEGIES else [],
        code=fem_modules("pretrain"),
    output:
        model=directory("results/{setting}/pretrain/{strategy}-s{seed}/model"),
        checkpoints=directory("results/{setting}/pretrain/{strategy}-s{seed}/checkpoints"),
        curves=directory("results/{setting}/pretrain/{strategy}-s{seed}/curves"),  # for `dvc plots` (fem/live_metrics.py)
        metrics="results/{setting}/pretrain/{strategy}-s{seed}/metrics.json",
        train_log="results/{setting}/pretrain/{strategy}-s{seed}/train_log.json",
        provenance="results/{setting}/pretrain/{strategy}-s{seed}/provenance.json",
    log:
        "logs/{setting}/pretrain/{strategy}-s{seed}.log",
    benchmark:
        "logs/benchmarks/{setting}/pretrain/{strategy}-s{seed}.tsv"
    threads: THREADS["pretrain_threads"]
    resources:
        **rule_resources(config, "pretrain"),
    params:
        # Science settings: changing one reruns this job and everything downstream.
        settings=lambda w: pretrain_flags(config, w.strategy, w.setting),
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output.metrics),
        coarse_vocab=lambda w, input: f"--coarse-vocab {input.coarse_vocab}" if input.coarse_vocab else "",
        entities=lambda w, input: f"--entities {input.entities}" if input.entities else "",
        # Speed settings (SpeedFlags): changing one reruns nothing.
        launch=launcher(config, "pretrain"),
        speed=speed_flags(config, "pretrain"),
    shell:
        "{params.launch} pretrain --data {params.data} --out {params.out}"
        " --seed {wildcards.seed} {params.settings} {params.coarse_vocab} {params.entities}"
        " --threads {threads} {params.speed}"
        " 2>&1 | tee {log}"


# LICHEE's coarse vocabulary (fem/coarse_vocab.py): the most frequent multi-piece words of the
# pre-training corpus, read by every pre-training run with objective lichee.
rule coarse_vocab:
    input:
        train=f"data/tokenized/{CORPUS}/train.npy",
        tokenizer=f"data/tokenized/{CORPUS}/tokenizer",
        code=fem_modules("coarse_vocab"),
    output:
        vocab=COARSE_VOCAB,
        provenance=os.path.join(os.path.dirname(COARSE_VOCAB), "provenance.json"),
    log:
        f"logs/coarse_vocab/{os.path.basename(os.path.dirname(COARSE_VOCAB))}.log",
    params:
        size=coarse_vocab_settings(config)["size"],
        max_pieces=coarse_vocab_settings(config)["max_pieces"],
        data=lambda w, input: os.path.dirname(input.train),
    shell:
        "fem coarse-vocab --data {params.data} --out {output.vocab} --size {params.size}"
        " --max-pieces {params.max_pieces} 2>&1 | tee {log}"


# Named-entity spans of the corpus's blocks (fem/entities.py, spaCy): the salient_span strategy's.
rule entities:
    input:
        corpus=f"data/raw/corpus/{CORPUS}",
        train=f"data/tokenized/{CORPUS}/train.npy",
        validation=f"data/tokenized/{CORPUS}/validation.npy",
        meta=f"data/tokenized/{CORPUS}/meta.json",
        tokenizer=f"data/tokenized/{CORPUS}/tokenizer",
        code=fem_modules("entities"),
    output:
        entities=directory(ENTITIES),
    log:
        f"logs/entities/{CORPUS}.log",
    params:
        spacy_model=entities_settings(config)["spacy_model"],
        data=lambda w, input: os.path.dirname(input.train),
    shell:
        "fem entities --corpus-dir {input.corpus} --data {params.data} --out {output.entities}"
        " --spacy-model {params.spacy_model} 2>&1 | tee {log}"
