# Helpers shared by the rule files: config validation, paths, CLI flags.
import json
import os
import shlex
import sys

sys.path.insert(0, workflow.basedir)  # the fem package of this checkout, even if not installed

from fem.config import TRAINED_TOKENIZER, check_config, tokenizer_source
from fem.errors import ConfigError, DataSourceError
from fem.masking import resolve_segments
from fem.provenance import job_environment


# Every job runs this checkout's fem package, whichever `fem` is first on PATH (the jobs
# inherit this process's environment; fem/provenance.py job_environment says how).
os.environ.update(job_environment(workflow.basedir, os.environ, sys.executable))

try:
    check_config(config)
except ConfigError as err:
    # One message naming each bad key, and no job starts.
    raise SystemExit(f"fem: {err}") from None


wildcard_constraints:
    setting="scratch|continual",
    strategy=r"[a-z_]+(-k\d+)?",  # fe-k4: fe with K = 4 segments (Table 4)
    seed=r"\d+",
    ftseed=r"\d+",
    task="[a-z0-9_]+",
    corpus="[A-Za-z0-9_.-]+",
    vocab_size=r"\d+",
    step=r"\d+|final",


PRETRAIN_SEEDS = config["seeds"]["pretrain"]
FINETUNE_SEEDS = config["seeds"]["finetune"]
STRATEGIES = config["pretrain"]["strategies"]
TASKS = config["finetune"]["tasks"]
CORPUS = config["corpus"]["name"]
TOKENIZER_TRAINED = config["tokenizer"]["source"] == TRAINED_TOKENIZER  # learned by rule train_tokenizer
TOKENIZER_SOURCE = tokenizer_source(config)  # what the corpus is tokenized with (a folder when learned)
IMPLEMENTATION = config["implementation"]
VARIANCE_CHUNK_ROWS = config["implementation"]["variance_chunk_rows"]  # speed only: not a param
SEGMENTS = resolve_segments(config["pretrain"]["mask_ratio"], config["pretrain"]["segments"])


GLUE_TASKS = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]
# Single-text classification tasks of Table 1 (fem.data: Don't Stop Pretraining, BBC News)
CLASSIFICATION_TASKS = ["chemprot", "rct", "citation_intent", "sciie", "hyperpartisan", "agnews", "helpfulness",
                        "imdb", "bbc_news"]  # fmt: skip
CONTINUAL = config["continual"]
CONTINUAL_TASKS = CONTINUAL["tasks"]


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
    sources = {"continual.model": (CONTINUAL["model"], [f"task-{task}" for task in CONTINUAL_TASKS])}
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


def pretrain_strategy(strategy):
    """The pre-training strategy and K of a strategy wildcard: "fe-k4" -> ("fe", 4) (Table 4),
    anything else -> (strategy, pretrain.segments)."""
    base, _, segments = strategy.partition("-k")
    return base, int(segments) if segments else config["pretrain"]["segments"]


def rule_resources(rule_name):
    """Per-rule cluster resources from the config (resources.<rule>: gpu, gpu_model,
    cpus_per_gpu, mem_mb, runtime in minutes). No `tasks`: the SLURM plugin would turn it
    into --ntasks-per-gpu and split a multi-GPU job into one task per GPU, while torchrun
    starts the processes itself inside one task. Several GPUs also get nodes=1: torchrun
    --standalone uses the GPUs of one node."""
    resources = dict(config.get("resources", {}).get(rule_name) or {})
    if resources.get("gpu", 1) > 1:
        resources["nodes"] = 1
    return resources


def launcher(rule_name):
    """How a training rule starts fem: plain `fem` for one GPU (or the CPU), or torchrun with
    one data-parallel process per GPU when the config gives the rule several
    (resources.<rule>.gpu: N). Not a param: the number of GPUs is a speed setting."""
    gpus = int(rule_resources(rule_name).get("gpu") or 1)
    return "fem" if gpus == 1 else f"torchrun --standalone --nproc_per_node {gpus} -m fem"


LAUNCH = {name: launcher(name) for name in ("pretrain", "pretrain_continual", "finetune", "finetune_squad")}


def glue_settings(task):
    """The finetune keys that are FinetuneSettings flags (learning_rates included), with
    finetune.per_task[task] on top."""
    not_flags = ("tasks", "metrics", "average_exclude", "squad", "per_task")
    settings = {k: v for k, v in config["finetune"].items() if k not in not_flags}
    return settings | (config["finetune"].get("per_task") or {}).get(task, {})


def all_tasks():
    """Every task some configured table fine-tunes on."""
    return list(dict.fromkeys(TASKS + CONTINUAL_TASKS + config["segment_counts"]["tasks"]
                              + [config["efficiency"]["task"]]))  # fmt: skip


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


def fem_modules(*modules):
    """The fem/ modules a rule runs, as inputs: editing one reruns the rule (Snakemake's
    code trigger only sees the rule's own shell command, not the Python it imports)."""
    return [os.path.relpath(os.path.join(workflow.basedir, "fem", f"{m}.py")) for m in modules]


def cli_flags(settings):
    """{"mask_ratio": 0.15} -> "--mask-ratio 0.15"; values as JSON, which the CLI reads as YAML.

    Sorted, so reordering keys in a config file does not change the params (and rerun jobs).
    """
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(json.dumps(value, sort_keys=True))}"
        for key, value in sorted(settings.items())
    )


# Speed settings of pre-training (fem/settings.py PretrainImplementation): flags of the shell
# command but not params, so changing one reruns nothing. A key the config leaves out keeps
# the dataclass default (the GPU fast path is off).
PRETRAIN_IMPLEMENTATION_KEYS = {
    "pretrain_accumulation_steps": "accumulation_steps",
    "pretrain_resume_every": "resume_every",
    "pretrain_bf16": "bf16",
    "pretrain_compile": "compile",
    "pretrain_attention": "attention",
    "pretrain_fused_adamw": "fused_adamw",
    "pretrain_pin_memory": "pin_memory",
    "peak_tflops": "peak_tflops",
}
PRETRAIN_IMPLEMENTATION_FLAGS = cli_flags(
    {flag: IMPLEMENTATION[key] for key, flag in PRETRAIN_IMPLEMENTATION_KEYS.items() if key in IMPLEMENTATION}
)


def task_metric_flags(wildcards):
    """No flag: `fem finetune` scores a task with its registry metrics (finetune.metrics is gone)."""
    return ""


def mirror_flag():
    """--mirror <folder> when the config names a hub mirror; else the CLI reads $FEM_HUB_MIRROR."""
    return f"--mirror {shlex.quote(config['hub_mirror'])}" if config["hub_mirror"] else ""
