# Shared by the steps in workflow/rules/*.smk: config validation, checks before any job starts, paths, the fem
# modules each step runs. What a step reads from the config (its settings, flags, captions)
# is built in fem/rule_settings.py, which also records those keys for dvc.yaml's params.
import json
import os
import sys

sys.path.insert(0, workflow.basedir)  # the fem package of this checkout, even if not installed

from fem.config import TRAINED_TOKENIZER, check_config, tokenizer_source
from fem.errors import ConfigError, DataSourceError
from fem.objective_settings import (
    coarse_vocab_settings,
    entities_settings,
    pretrain_curves_settings,
    run_objective,
    run_strategy,
    table6_settings,
)
from fem.provenance import job_environment
from fem.registry import ENTITY_STRATEGIES, task_names
from fem.rule_settings import (
    continual_pretrain_settings,
    data_overlap_settings,
    finetune_flags,
    launcher,
    mirror_flag,
    pretrain_flags,
    rule_resources,
    speed_flags,
    squad_flags,
    table1_settings,
    table2_settings,
    table3_settings,
    table4_settings,
    table5_settings,
    tokenize_settings,
    train_tokenizer_settings,
    variance_flags,
)


# Every job runs this checkout's fem package, whichever `fem` is first on PATH (the jobs
# inherit this process's environment; fem/provenance.py job_environment says how).
os.environ.update(job_environment(workflow.basedir, os.environ, sys.executable))

try:
    check_config(config)
except ConfigError as err:
    # One message naming each bad key, and no job starts.
    raise SystemExit(f"fem: {err}") from None


wildcard_constraints:
    setting="scratch|continual|objectives",
    # a run name (fem.registry.run_label): fe-k4 is fe with K = 4 (Table 4); pmlm.block, mpnet.fe and
    # random.decay are Table 6's objectives and masking-rate schedule
    strategy=r"([a-z]+\.)?[a-z_]+(-k\d+)?(\.decay)?",
    seed=r"\d+",
    ftseed=r"\d+",
    task="[a-z0-9_]+",
    corpus="[A-Za-z0-9_.-]+",
    vocab_size=r"\d+",
    step=r"\d+|final",


# The pre-training corpus: the folder of the data a pre-training or variance job reads (a
# dependency of the job, not a param).
CORPUS = config["corpus"]["name"]
COARSE_VOCAB = coarse_vocab_settings(config)["file"]  # LICHEE's coarse vocabulary (rule coarse_vocab)
ENTITIES = entities_settings(config)["folder"]  # the entity spans of the blocks (rule entities)
TOKENIZER_TRAINED = config["tokenizer"]["source"] == TRAINED_TOKENIZER  # learned by the train_tokenizer step
TOKENIZER_SOURCE = tokenizer_source(config)  # what the corpus is tokenized with (a folder when learned)
THREADS = config["implementation"]  # <step>_threads: speed settings, not params
CONTINUAL = config["continual"]


def tokenized_with(folder, source):
    """Whether data/tokenized/<folder> holds data tokenized with `source` (its meta.json)."""
    try:
        with open(f"data/tokenized/{folder}/meta.json") as meta:
            return json.load(meta).get("tokenizer_source") == source
    except (OSError, ValueError):
        return False


def check_against_data():
    """Before any job starts: the validation blocks the config asks for exist in the tokenized
    data already present, and the tokenizer and continual model of data still to be
    tokenized can be found (fem.tokenization.check_pretrained_source loads no model)."""
    from fem.config import tokenized_problems
    from fem.tokenization import check_pretrained_source

    problems = tokenized_problems(config)
    if problems:
        raise SystemExit("fem: the config asks for more data than there is:\n" + "\n".join(f"  - {p}" for p in problems))
    if os.environ.get("FEM_CHECK_SOURCES", "1") == "0":  # e.g. planning paper scale offline
        return
    sources = {"continual.model": (CONTINUAL["model"], [f"task-{task}" for task in CONTINUAL["tasks"]])}
    if not TOKENIZER_TRAINED:  # a learned vocabulary is made by the workflow itself
        sources["tokenizer.source"] = (TOKENIZER_SOURCE, [CORPUS])
    for key, (source, folders) in sources.items():
        if all(tokenized_with(folder, source) for folder in folders):
            continue
        try:
            check_pretrained_source(source)
        except DataSourceError as err:
            raise SystemExit(f"fem: {key}: {err}") from None


check_against_data()


def all_tasks():
    """Every task some configured table fine-tunes on."""
    return list(dict.fromkeys(config["finetune"]["tasks"] + CONTINUAL["tasks"] + config["segment_counts"]["tasks"]
                              + [config["efficiency"]["task"]] + config["objectives"]["tasks"]))  # fmt: skip


def check_task_sources():
    """Before any job starts: every configured task that is not downloaded yet must be
    findable in the hub mirror or on the hub, else stop with a message naming the hub id
    and the mirror path tried (fem.data.check_hub_dataset reads descriptions, not data)."""
    from fem.data import check_task_source
    from fem.registry import get_task

    if os.environ.get("FEM_CHECK_SOURCES", "1") == "0":  # e.g. planning paper scale offline
        return
    for name in all_tasks():
        if os.path.isdir(f"data/raw/tasks/{name}"):
            continue
        try:
            check_task_source(get_task(name), config["hub_mirror"])
        except DataSourceError as err:
            raise SystemExit(f"fem: task {name}: {err}") from None


check_task_sources()


# The fem/ modules each step runs: inputs of its jobs, so that editing one reruns them
# (Snakemake's code trigger sees only the shell command, not the Python it imports). Every
# command is reached through fem/cli.py and takes its shared flags from fem/cli_args.py.
CLI = ("cli", "cli_args", "cli_objectives")
PRETRAIN_CODE = ("pretraining", "train_step", "tokenization", "distributed", "throughput", "masking", "registry",
                 "collation", "checkpointing", "modeling", "optimization", "settings", "validation", "train_log",
                 "augmented", "block_masking", "compute_matching", "errors", "fragment_masking", "mass", "lichee",
                 "coarse_vocab", "objective_losses", "entities", "kgplm", "live_metrics", *CLI)  # fmt: skip
# finetuning/sweep imports both task modules, so every fine-tuning job runs both
FINETUNE_CODE = ("finetuning/__init__", "finetuning/cli", "finetuning/harness", "finetuning/glue",
                 "finetuning/squad", "finetuning/sweep", "checkpointing", "distributed", "metrics", "data", "registry",
                 "modeling", "optimization", "settings", "lichee", "live_metrics", *CLI)  # fmt: skip
TABLE_CODE = ("tables/__init__", "tables/cli", "tables/build", "tables/render", "tables/captions", *CLI)
SCORE_TABLE_CODE = ("tables/scores", "tables/row_statistics", "tables/intrinsic", "statistics", "comparisons",
                    "registry", *TABLE_CODE)  # fmt: skip
CODE = {
    "download_corpus": ("data", "registry", *CLI),
    "download_task": ("data", "registry", "duplicates", *CLI),
    "data_overlap": ("overlap", "duplicates", "data", "registry", "tokenization", *CLI),
    "train_tokenizer": ("wordpiece", "tokenization", "duplicates", *CLI),
    "tokenize": ("tokenization", "duplicates", *CLI),
    "task_text": ("data", "registry", *CLI),
    "pretrain": PRETRAIN_CODE,
    "pretrain_continual": PRETRAIN_CODE,
    "coarse_vocab": ("coarse_vocab", "lichee", "errors", *CLI),
    "entities": ("entities", "tokenization", "masking", "errors", *CLI),
    "finetune": FINETUNE_CODE,
    "finetune_squad": FINETUNE_CODE,
    "finetune_checkpoint": FINETUNE_CODE,
    "variance": ("variance", "mask_gradients", "masking", "block_masking", "registry", "tokenization", "checkpointing",
                 "settings", "lichee", *CLI),  # fmt: skip
    "table1": SCORE_TABLE_CODE,
    "table2": SCORE_TABLE_CODE,
    "table3": ("tables/efficiency", "tables/variance", "figures", *SCORE_TABLE_CODE),
    "table4": ("tables/segments", *SCORE_TABLE_CODE),
    "table5": ("tables/variance", "figures", *TABLE_CODE),
    "table6": ("tables/objectives", *SCORE_TABLE_CODE),
    "pretrain_curves": ("figures", "train_log", "live_metrics", "tables/cli", *CLI),
    "report": ("tables/report", *CLI),
}


def fem_modules(step):
    """The fem/ modules a step runs (CODE), as paths relative to the working directory."""
    return [os.path.relpath(os.path.join(workflow.basedir, "fem", f"{module}.py")) for module in CODE[step]]


def pretrain_run(wildcards):
    """results/<setting>/pretrain/<strategy>-s<seed>: a pre-training run of the wildcards."""
    return f"results/{wildcards.setting}/pretrain/{wildcards.strategy}-s{wildcards.seed}"


def finetune_checkpoint_dir(wildcards):
    """scratch (objectives): results/scratch (objectives)/pretrain/<run>/model; continual: the run
    continued on the task."""
    if wildcards.setting == "continual":
        return f"results/continual/pretrain/{wildcards.task}/{wildcards.strategy}-s{wildcards.seed}/model"
    return f"results/{wildcards.setting}/pretrain/{wildcards.strategy}-s{wildcards.seed}/model"


def variance_inputs(wildcards):
    """The final model, or the checkpoints folder (a directory output of pre-training: the
    step-N folder inside it is not a file Snakemake knows). Either holds the model's identity
    (checkpoint_metrics.json), which fem variance reads."""
    run = pretrain_run(wildcards)
    if wildcards.step == "final":
        return {"model": f"{run}/model"}
    return {"checkpoints": f"{run}/checkpoints"}


def checkpoint_folder(wildcards):
    """The model folder of a variance job: the final model or the step-N checkpoint."""
    run = pretrain_run(wildcards)
    return f"{run}/model" if wildcards.step == "final" else f"{run}/checkpoints/step-{wildcards.step}"
