# One file per paper table, built from the metrics of finished runs. Seconds of work each:
# on a cluster they run on the submit host instead of waiting in the queue. Each table's runs,
# options and caption come from fem/rule_settings.py (captions: fem/tables/captions.py).


localrules:
    table1,
    table2,
    table3,
    table4,
    table5,
    table6,
    pretrain_curves,
    report,


TABLE1 = table1_settings(config)
TABLE2 = table2_settings(config)
TABLE3 = table3_settings(config)
TABLE4 = table4_settings(config)
TABLE5 = table5_settings(config)
TABLE6 = table6_settings(config)


rule table2:
    input:
        metrics=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=TABLE2["tasks"],
            strategy=TABLE2["strategies"],
            seed=TABLE2["pretrain_seeds"],
            ftseed=TABLE2["finetune_seeds"],
        ),
        pretrain_metrics=expand(
            "results/scratch/pretrain/{strategy}-s{seed}/metrics.json",
            strategy=TABLE2["strategies"],
            seed=TABLE2["pretrain_seeds"],
        ),
        code=fem_modules("table2"),
    output:
        csv=report("results/table2.csv", caption="../report/table.rst", category="Tables", subcategory="Table 2",
                   labels={"table": "Table 2", "file": "CSV"}),
        md=report("results/table2.md", caption="../report/table.rst", category="Tables", subcategory="Table 2",
                  labels={"table": "Table 2", "file": "Markdown"}),
        provenance="results/table2.provenance.json",
    log:
        "logs/tables/table2.log",
    benchmark:
        "logs/benchmarks/tables/table2.tsv"
    params:
        tasks=" ".join(TABLE2["tasks"]),
        strategies=" ".join(TABLE2["strategies"]),
        comparisons=TABLE2["comparisons"],
        average_exclude=TABLE2["average_exclude"],
        caption=TABLE2["caption"],
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks}"
        " --strategies {params.strategies} --comparisons {params.comparisons}"
        " --average-exclude {params.average_exclude} --pretrain-metrics {input.pretrain_metrics}"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


rule table5:
    input:
        results=[
            f"results/scratch/variance/{strategy}-s{TABLE5['seed']}/step-{step}/variance.json"
            for strategy, step in TABLE5["runs"]
        ],
        code=fem_modules("table5"),
    output:
        csv=report("results/table5.csv", caption="../report/table.rst", category="Tables", subcategory="Table 5",
                   labels={"table": "Table 5", "file": "CSV"}),
        md=report("results/table5.md", caption="../report/table.rst", category="Tables", subcategory="Table 5",
                  labels={"table": "Table 5", "file": "Markdown"}),
        hamming_figure=report("results/figures/variance_vs_hamming.png", caption="../report/variance_vs_hamming.rst",
                              category="Figures", labels={"figure": "variance vs Hamming distance (Table 5)"}),
        estimator_figure=report("results/figures/estimator_variance.png", caption="../report/estimator_variance.rst",
                                category="Figures", labels={"figure": "estimator variance (Table 5)"}),
        provenance="results/table5.provenance.json",
    log:
        "logs/tables/table5.log",
    benchmark:
        "logs/benchmarks/tables/table5.tsv"
    params:
        caption=TABLE5["caption"],
    shell:
        "fem table5 --csv {output.csv} --md {output.md} --hamming-figure {output.hamming_figure}"
        " --estimator-figure {output.estimator_figure} --caption {params.caption:q} {input.results}"
        " 2>&1 | tee {log}"


rule table1:
    input:
        metrics=expand(
            "results/continual/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=TABLE1["tasks"],
            strategy=TABLE1["strategies"],
            seed=TABLE1["pretrain_seeds"],
            ftseed=TABLE1["finetune_seeds"],
        ),
        code=fem_modules("table1"),
    output:
        csv=report("results/table1.csv", caption="../report/table.rst", category="Tables", subcategory="Table 1",
                   labels={"table": "Table 1", "file": "CSV"}),
        md=report("results/table1.md", caption="../report/table.rst", category="Tables", subcategory="Table 1",
                  labels={"table": "Table 1", "file": "Markdown"}),
        provenance="results/table1.provenance.json",
    log:
        "logs/tables/table1.log",
    benchmark:
        "logs/benchmarks/tables/table1.tsv"
    params:
        tasks=" ".join(TABLE1["tasks"]),
        strategies=" ".join(TABLE1["strategies"]),
        comparisons=TABLE1["comparisons"],
        caption=TABLE1["caption"],
    shell:
        "fem score-table --csv {output.csv} --md {output.md} --tasks {params.tasks} --strategies {params.strategies}"
        " --comparisons {params.comparisons} --average-exclude --average-label average"
        " --title 'Table 1: continual pre-training, then fine-tuning on the task'"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


rule table3:
    input:
        intermediate=expand(
            "results/scratch/efficiency/{task}/{strategy}-s{seed}-step-{step}-f{ftseed}/metrics.json",
            task=TABLE3["task"],
            strategy=TABLE3["strategies"],
            seed=TABLE3["pretrain_seeds"],
            step=TABLE3["intermediate_steps"],
            ftseed=TABLE3["finetune_seeds"],
        ),
        final=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=TABLE3["task"],
            strategy=TABLE3["strategies"],
            seed=TABLE3["pretrain_seeds"],
            ftseed=TABLE3["finetune_seeds"],
        ) if TABLE3["with_final"] else [],
        train_logs=expand("results/scratch/pretrain/{strategy}-s{seed}/train_log.json",
                          strategy=TABLE3["strategies"], seed=TABLE3["pretrain_seeds"]),
        pretrain_metrics=expand("results/scratch/pretrain/{strategy}-s{seed}/metrics.json",
                                strategy=TABLE3["strategies"], seed=TABLE3["pretrain_seeds"]),
        code=fem_modules("table3"),
    output:
        csv=report("results/table3.csv", caption="../report/table.rst", category="Tables", subcategory="Table 3",
                   labels={"table": "Table 3", "file": "CSV"}),
        md=report("results/table3.md", caption="../report/table.rst", category="Tables", subcategory="Table 3",
                  labels={"table": "Table 3", "file": "Markdown"}),
        figure=report("results/figures/efficiency.png", caption="../report/efficiency.rst", category="Figures",
                      labels={"figure": "efficiency (Table 3)"}),
        provenance="results/table3.provenance.json",
    log:
        "logs/tables/table3.log",
    benchmark:
        "logs/benchmarks/tables/table3.tsv"
    params:
        task=TABLE3["task"],
        strategies=" ".join(TABLE3["strategies"]),
        comparisons=TABLE3["comparisons"],
        steps=TABLE3["steps"],
        total_steps=TABLE3["total_steps"],
        caption=TABLE3["caption"],
    shell:
        "fem table3 --csv {output.csv} --md {output.md} --figure {output.figure} --task {params.task}"
        " --strategies {params.strategies} --comparisons {params.comparisons} --steps {params.steps}"
        " --total-steps {params.total_steps} --caption {params.caption:q} {input.intermediate} {input.final}"
        " --train-logs {input.train_logs} --pretrain-metrics {input.pretrain_metrics} 2>&1 | tee {log}"


rule table4:
    input:
        metrics=expand(
            "results/scratch/finetune/{task}/{strategy}-s{seed}-f{ftseed}/metrics.json",
            task=TABLE4["tasks"],
            strategy=TABLE4["strategies"],
            seed=TABLE4["pretrain_seeds"],
            ftseed=TABLE4["finetune_seeds"],
        ),
        pretrain_metrics=expand("results/scratch/pretrain/{strategy}-s{seed}/metrics.json",
                                strategy=TABLE4["strategies"], seed=TABLE4["pretrain_seeds"]),
        code=fem_modules("table4"),
    output:
        csv=report("results/table4.csv", caption="../report/table.rst", category="Tables", subcategory="Table 4",
                   labels={"table": "Table 4", "file": "CSV"}),
        md=report("results/table4.md", caption="../report/table.rst", category="Tables", subcategory="Table 4",
                  labels={"table": "Table 4", "file": "Markdown"}),
        provenance="results/table4.provenance.json",
    log:
        "logs/tables/table4.log",
    benchmark:
        "logs/benchmarks/tables/table4.tsv"
    params:
        tasks=" ".join(TABLE4["tasks"]),
        segments=TABLE4["segments"],
        default_segments=TABLE4["default_segments"],
        average_exclude=TABLE4["average_exclude"],
        caption=TABLE4["caption"],
    shell:
        "fem table4 --csv {output.csv} --md {output.md} --tasks {params.tasks} --segments {params.segments}"
        " --default-segments {params.default_segments} --average-exclude {params.average_exclude}"
        " --pretrain-metrics {input.pretrain_metrics} --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


rule table6:
    # Objectives (fem/objective_settings.py): each run of objectives.runs against the control random,
    # each fe variant against its non-fe counterpart, at matched model FLOPs per step.
    input:
        metrics=expand(
            "results/objectives/finetune/{task}/{run}-s{seed}-f{ftseed}/metrics.json",
            task=TABLE6["tasks"],
            run=TABLE6["runs"],
            seed=TABLE6["pretrain_seeds"],
            ftseed=TABLE6["finetune_seeds"],
        ),
        pretrain_metrics=expand(
            "results/objectives/pretrain/{run}-s{seed}/metrics.json", run=TABLE6["runs"], seed=TABLE6["pretrain_seeds"]
        ),
        code=fem_modules("table6"),
    output:
        csv=report("results/table6.csv", caption="../report/table.rst", category="Tables", subcategory="Table 6",
                   labels={"table": "Table 6", "file": "CSV"}),
        md=report("results/table6.md", caption="../report/table.rst", category="Tables", subcategory="Table 6",
                  labels={"table": "Table 6", "file": "Markdown"}),
        provenance="results/table6.provenance.json",
    log:
        "logs/tables/table6.log",
    benchmark:
        "logs/benchmarks/tables/table6.tsv"
    params:
        tasks=" ".join(TABLE6["tasks"]),
        runs=" ".join(TABLE6["runs"]),
        control=TABLE6["control"],
        comparisons=TABLE6["comparisons"],
        default_segments=TABLE6["default_segments"],
        average_exclude=TABLE6["average_exclude"],
        caption=TABLE6["caption"],
    shell:
        "fem table6 --csv {output.csv} --md {output.md} --tasks {params.tasks} --runs {params.runs}"
        " --control {params.control} --comparisons {params.comparisons} --default-segments {params.default_segments}"
        " --average-exclude {params.average_exclude} --pretrain-metrics {input.pretrain_metrics}"
        " --caption {params.caption:q} {input.metrics} 2>&1 | tee {log}"


# The pre-training curves of a table's runs, one line per strategy (objective): mean and range
# over seeds. scratch: the runs of Tables 2 and 3 (they share them); objectives: Table 6's.
rule pretrain_curves:
    wildcard_constraints:
        setting="scratch|objectives",
    input:
        train_logs=lambda w: pretrain_curves_settings(config, w.setting)["train_logs"],
        code=fem_modules("pretrain_curves"),
    output:
        figure=report("results/figures/pretrain_curves_{setting}.png", caption="../report/pretrain_curves.rst",
                      category="Figures", labels={"figure": "pre-training curves ({setting})"}),
        provenance="results/figures/pretrain_curves_{setting}.provenance.json",
    log:
        "logs/pretrain_curves/{setting}.log",
    params:
        labels=lambda w: pretrain_curves_settings(config, w.setting)["labels"],
        title=lambda w: pretrain_curves_settings(config, w.setting)["title"],
    shell:
        "fem curves-figure --out {output.figure} --title {params.title:q} --labels {params.labels}"
        " --train-logs {input.train_logs} 2>&1 | tee {log}"


rule report:
    input:
        tables=expand("results/table{n}.md", n=[1, 2, 3, 4, 5, 6]),
        figures=["results/figures/efficiency.png", "results/figures/variance_vs_hamming.png",
                 "results/figures/estimator_variance.png", "results/figures/pretrain_curves_scratch.png",
                 "results/figures/pretrain_curves_objectives.png"],
        data_overlap="results/data/overlap.md",
        code=fem_modules("report"),
    output:
        report="results/report.md",
        provenance="results/report.provenance.json",
    log:
        "logs/tables/report.log",
    shell:
        "fem report --out {output.report} --tables {input.tables} --figures {input.figures} 2>&1 | tee {log}"
