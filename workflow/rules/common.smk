# Helpers shared by the rule files: config validation, paths, CLI flags.
import json
import os
import shlex
import sys

sys.path.insert(0, workflow.basedir)  # the fem package of this checkout, even if not installed

from fem.config import ConfigError, check_config
from fem.masking import resolve_segments

try:
    check_config(config)
except ConfigError as err:
    # One message naming each bad key, and no job starts.
    raise SystemExit(f"fem: {err}") from None


wildcard_constraints:
    setting="scratch",
    strategy="[a-z_]+",
    seed=r"\d+",
    ftseed=r"\d+",
    task="[a-z0-9_]+",
    corpus="[A-Za-z0-9_.-]+",
    step=r"\d+|final",


PRETRAIN_SEEDS = config["seeds"]["pretrain"]
FINETUNE_SEEDS = config["seeds"]["finetune"]
STRATEGIES = config["pretrain"]["strategies"]
TASKS = config["finetune"]["tasks"]
CORPUS = config["corpus"]["name"]
PRETRAIN_IMPLEMENTATION_FLAGS = (
    f"--accumulation-steps {config['implementation']['pretrain_accumulation_steps']}"
    f" --resume-every {config['implementation']['pretrain_resume_every']}"
)
VARIANCE_CHUNK_ROWS = config["implementation"]["variance_chunk_rows"]  # speed only: not a param
SEGMENTS = resolve_segments(config["pretrain"]["mask_ratio"], config["pretrain"]["segments"])


GLUE_TASKS = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]


def glue_settings():
    """The finetune keys that are FinetuneSettings flags (learning_rates included)."""
    per_task = ("tasks", "metrics", "average_exclude", "squad")
    return {k: v for k, v in config["finetune"].items() if k not in per_task}


def check_task_sources():
    """Before any job starts: every configured task that is not downloaded yet must be
    findable in the hub mirror or on the hub, else stop with a message naming the hub id
    and the mirror path tried (fem.data.check_hub_dataset reads descriptions, not data)."""
    from fem.data import DataSourceError, check_hub_dataset, get_task

    for name in TASKS:
        if os.path.isdir(f"data/raw/tasks/{name}"):
            continue
        task = get_task(name)
        try:
            check_hub_dataset(task.hub_id, task.hub_config, config["hub_mirror"])
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


def mirror_flag():
    """--mirror <folder> when the config names a hub mirror; else the CLI reads $FEM_HUB_MIRROR."""
    return f"--mirror {shlex.quote(config['hub_mirror'])}" if config["hub_mirror"] else ""
