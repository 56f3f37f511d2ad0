# fem: reproduce "Improving Self-supervised Pre-training via a Fully-Explored Masked
# Language Model" (arXiv 2010.06040). This file only wires things together: the config,
# its validation (in common.smk, before any job is planned) and one rule file per stage.
#
#   snakemake results/table2.csv                  # default config: tiny scale, CPU (any of tables 1-5);
#                                                 # profiles/default sets cores and rerun-incomplete
#   snakemake results/report.md                   # every table and figure
#   snakemake --report results/report.html        # the same as one HTML page, after the run
#   snakemake results/table2.csv --configfile config/paper.yaml --profile workflow/profiles/slurm

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)  # this checkout's fem package (common.smk's jobs run it too)
from fem.config import load_yaml
from fem.errors import ConfigError

if Path("config/config.yaml").exists():
    try:  # Snakemake's own message for a broken config file does not name the file
        load_yaml("config/config.yaml")
    except ConfigError as err:
        raise SystemExit(f"fem: {err}") from None


configfile: "config/config.yaml"


# `snakemake --report results/report.html`: every table and figure with its caption
# (workflow/report/*.rst) and the provenance of each file, as one HTML page
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# A killed run leaves Snakemake's lock behind; it is removed only when neither that run nor
# any of its jobs is alive (fem/stale_lock.py), so that the same command simply resumes.
if workflow.is_main_process:
    from fem.stale_lock import claim_workdir

    lock_message = claim_workdir(Path.cwd())
    if lock_message:
        print(lock_message, file=sys.stderr)


include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/continual.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/variance.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        "results/report.md",
