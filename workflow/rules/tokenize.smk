# Tokenize the corpus and pack it into fixed-length blocks (memory-mappable .npy files), with
# a WordPiece vocabulary learned on the corpus first when tokenizer.source is `trained`.


rule train_tokenizer:
    input:
        corpus="data/raw/corpus/{corpus}",
        code=fem_modules("train_tokenizer"),
    output:
        directory("data/tokenizers/{corpus}-wordpiece{vocab_size}"),
    log:
        "logs/train_tokenizer/{corpus}-wordpiece{vocab_size}.log",
    benchmark:
        "logs/benchmarks/train_tokenizer/{corpus}-wordpiece{vocab_size}.tsv"
    params:
        # the documents `fem tokenize` keeps for training: the same split, so no validation text is learned
        validation_fraction=train_tokenizer_settings(config)["validation_fraction"],
        max_documents=train_tokenizer_settings(config)["max_documents"],
    shell:
        "fem train-tokenizer --corpus-dir {input.corpus} --out {output} --vocab-size {wildcards.vocab_size}"
        " --validation-fraction {params.validation_fraction} --max-documents {params.max_documents}"
        " 2>&1 | tee {log}"


rule tokenize:
    input:
        corpus="data/raw/corpus/{corpus}",
        learned_tokenizer=lambda w: tokenize_settings(config, w.corpus)["learned_tokenizer"],
        code=fem_modules("tokenize"),
    output:
        train="data/tokenized/{corpus}/train.npy",
        validation="data/tokenized/{corpus}/validation.npy",
        train_word_starts="data/tokenized/{corpus}/train_word_starts.npy",
        validation_word_starts="data/tokenized/{corpus}/validation_word_starts.npy",
        meta="data/tokenized/{corpus}/meta.json",
        tokenizer=directory("data/tokenized/{corpus}/tokenizer"),
        provenance="data/tokenized/{corpus}/provenance.json",
    log:
        "logs/tokenize/{corpus}.log",
    benchmark:
        "logs/benchmarks/tokenize/{corpus}.tsv"
    resources:
        **rule_resources(config, "tokenize"),
    params:
        # task-<name> corpora (continual pre-training) use the pretrained model's tokenizer
        tokenizer=lambda w: tokenize_settings(config, w.corpus)["tokenizer"],
        block_size=lambda w: tokenize_settings(config, w.corpus)["block_size"],
        validation_fraction=lambda w: tokenize_settings(config, w.corpus)["validation_fraction"],
        max_documents=lambda w: tokenize_settings(config, w.corpus)["max_documents"],
        out=lambda w, output: os.path.dirname(output.meta),
    shell:
        "fem tokenize --corpus-dir {input.corpus} --out {params.out}"
        " --tokenizer {params.tokenizer:q} --block-size {params.block_size}"
        " --validation-fraction {params.validation_fraction} --max-documents {params.max_documents}"
        " 2>&1 | tee {log}"
