# Entry points of the README's quick start. Everything runs inside .venv.
#   make table2   set up, then build results/table2.csv on the default (tiny) config
#   make table1 / table3 / table4 / table5   the same for the other paper tables
#   make table6   Table 6, the pre-training objectives (UniLMv2, XLNet-style, MPNet, MASS, LICHEE, KgPLM, salient spans) and the masking-rate schedule
#   make report   every table and figure, results/report.md and Snakemake's results/report.html
#   make plots    DVC's plots of every run's curves and the figures, offline: dvc_plots/index.html
#   make test     set up, then run the whole test suite (as CI does; the `cluster` tests need
#                 a SLURM cluster: `bash scripts/slurm/start_local_cluster.sh` starts one on localhost)
#   make test-local   the suite without the SLURM tests
#   make dvc-repro   build Table 2 through DVC (`dvc repro table2`), hashes into dvc.lock
#   make pull-table2   fetch Table 2 and its inputs from the DVC remote; Snakemake sees them up to date
#   make cluster-table2 [CONFIG=config/paper.yaml]   on a SLURM submit host: every job through
#                 Snakemake's SLURM executor, then one `dvc commit` and one `dvc push` (never DVC inside jobs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# torch is pinned and installed first, so no other requirement can pull another build.
# On this project's dev and CI machines pip finds a CPU build of 2.13.0 on local disk.
# Elsewhere PyPI's Linux wheel of torch is a multi-GB CUDA build: on a CPU-only Linux
# laptop, run `PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make setup`.
TORCH_SPEC ?= torch==2.13.0
export PATH := $(BIN):$(PATH)

# The cluster profile: set your account and partition in it (or point this at a copy).
SLURM_PROFILE ?= workflow/profiles/slurm

.PHONY: setup table1 table2 table3 table4 table5 table6 report plots dvc-yaml dvc-repro pull-table1 pull-table2 pull-table3 pull-table4 pull-table5 cluster-table2 test test-local test-fast lint clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[offline,dev]"
	touch $@

table1 table2 table3 table4 table5 table6: setup
	$(BIN)/snakemake results/$@.csv

report: setup  # every table and figure, results/report.md, then Snakemake's HTML report of them
	$(BIN)/snakemake results/report.md
	$(BIN)/snakemake --report results/report.html results/report.md

plots: setup  # `dvc plots show` with Vega inlined (fem/dvc_plots.py), so the page draws offline
	$(BIN)/fem dvc plots-template
	$(BIN)/dvc plots show

dvc-yaml: setup  # regenerate dvc.yaml from the Snakemake DAG (after changing rules or config)
	$(BIN)/fem dvc generate results/report.md

dvc-repro: setup
	$(BIN)/dvc repro table2

# Fetch a table and everything it needs from the DVC remote instead of recomputing it, checked
# against dvc.lock and marked up to date for Snakemake (a bare `dvc pull` is not: README, DVC).
pull-table1 pull-table2 pull-table3 pull-table4 pull-table5: setup
	$(BIN)/fem dvc pull results/$(@:pull-%=%).csv

# CONFIG=config/paper.yaml: paper scale; dvc.yaml is first regenerated for that config, so
# dvc.lock records the parameters the jobs really ran with.
cluster-table2: setup
	$(if $(CONFIG),$(BIN)/fem check-config config/config.yaml $(CONFIG))  # names a broken file; Snakemake would not
	$(if $(CONFIG),$(BIN)/fem dvc generate results/table2.csv --configfile $(CONFIG))
	$(BIN)/snakemake --profile $(SLURM_PROFILE) results/table2.csv $(if $(CONFIG),--configfile $(CONFIG))
	$(BIN)/dvc commit --force --with-deps table2
	$(BIN)/dvc push --with-deps table2

test: setup
	$(BIN)/python -m pytest

test-local: setup
	$(BIN)/python -m pytest -m "not cluster"

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check fem tests && $(BIN)/ruff format --check fem tests

clean-results:
	rm -rf results logs .snakemake
