"""Every rule's settings, flags and caption inputs, built from the config in one place, with a
record of the config keys each rule reads (DESIGN §9).

The rule files (workflow/rules/*.smk) take their params from the builders here, and `fem dvc
generate` (fem/dvc_stages.py) writes each DVC stage's `params` from `keys_read`, which runs the
same builder on a RecordedConfig that notes the dotted key of every value it reads. So the params
of dvc.yaml are what the rules read, with nothing written twice. RULE_SETTINGS names each rule's
builder (None: the rule reads no science setting).

A rule's keys are those of its params (science settings, table options, captions) and of the
runs that the tables and data_overlap gather; the data folder of one job is its dependency.

Speed settings (implementation.*, resources.*, the torchrun launcher) are neither: they must
not rerun a finished job. `speed_flags`, `launcher` and `rule_resources` read the plain config,
their text goes to the rules as SpeedFlags, and a RecordedConfig refuses to read them.
"""

from __future__ import annotations

import copy
import inspect
import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fem.comparisons import default_comparisons, table4_strategies
from fem.config import TRAINED_TOKENIZER, tokenizer_source
from fem.errors import ConfigError
from fem.masking import resolve_segments
from fem.registry import parse_strategy_label
from fem.tables import captions

SPEED_SECTIONS = ("implementation", "resources")  # top-level config sections of speed settings


class RecordedConfig(Mapping):
    """A read-only view of a config mapping that records the dotted key of every value read.

    A nested mapping comes back as a RecordedConfig of its own (sharing the record), so only the
    leaves actually read are recorded; a mapping used whole (`plain`, or a flag value through
    `cli_flags`) is recorded as its own key, which `keys_read` expands to its leaves. Testing a
    key (`in`) or listing keys records nothing: an absent key can be no DVC param (DVC fails on
    a params key its file lacks), and a `.get` that misses records nothing either.
    """

    def __init__(self, data: Mapping, path: str = "", reads: set[str] | None = None) -> None:
        self._data, self._path = data, path
        self.reads: set[str] = set() if reads is None else reads

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        path = f"{self._path}.{key}" if self._path else str(key)
        if path.split(".")[0] in SPEED_SECTIONS:
            raise ConfigError(f"{path} is a speed setting, not a param: read it with fem.rule_settings.speed_flags")
        if isinstance(value, Mapping):
            return RecordedConfig(value, path, self.reads)
        self.reads.add(path)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def plain(self) -> dict:
        """The mapping as plain data, recorded whole."""
        self.reads.add(self._path)
        return copy.deepcopy(dict(self._data))


def plain(value: Any) -> Any:
    """A config value as plain data (a RecordedConfig mapping is recorded whole)."""
    return value.plain() if isinstance(value, RecordedConfig) else value


class SpeedFlags:
    """Command-line text of speed settings, passed to a rule as a param but kept out of
    Snakemake's params-change rerun trigger, so that changing a speed setting reruns no
    finished job: Snakemake 9 records only params whose value is of a builtin type
    (snakemake/persistence/__init__.py: PersistenceBase._serialize_param_builtin returns
    UNREPRESENTABLE for any other object, and `_params` leaves those out; a test pins this).
    The shell command gets str(self)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"SpeedFlags({self.text!r})"


def cli_flags(settings: Mapping[str, Any]) -> str:
    """{"mask_ratio": 0.15} -> "--mask-ratio 0.15"; values as JSON, which the CLI reads as YAML.

    Sorted, so reordering keys in a config file does not change the params (and rerun jobs).
    """
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(json.dumps(plain(value), sort_keys=True))}"
        for key, value in sorted(settings.items())
    )


def segments(config: Mapping) -> int:
    """K of the K-copy strategies (pretrain.segments, "auto" resolved from pretrain.mask_ratio)."""
    return resolve_segments(config["pretrain"]["mask_ratio"], config["pretrain"]["segments"])


def comparison_flags(comparisons: list[tuple[str, str]]) -> str:
    """[("fe", "random_k")] -> "fe:random_k" (--comparisons: A minus B)."""
    return " ".join(f"{a}:{b}" for a, b in comparisons)


# --- speed settings: plain config, never recorded ---------------------------------------------------------------

# implementation.<key> -> the `fem pretrain` flag (fem/settings.py PretrainImplementation). A key the
# config leaves out keeps the dataclass default (the GPU fast path is off).
PRETRAIN_IMPLEMENTATION_KEYS = {
    "pretrain_accumulation_steps": "accumulation_steps",
    "pretrain_resume_every": "resume_every",
    "live_metrics": "live_metrics",
    "pretrain_bf16": "bf16",
    "pretrain_compile": "compile",
    "pretrain_attention": "attention",
    "pretrain_fused_adamw": "fused_adamw",
    "pretrain_pin_memory": "pin_memory",
    "peak_tflops": "peak_tflops",
}


def speed_flags(config: Mapping, rule: str) -> SpeedFlags:
    """The speed flags of a rule's command: pre-training's implementation flags, fine-tuning's
    (DVCLive on or off), or the variance analysis' rows per vmap call."""
    implementation = config["implementation"]
    if rule == "variance":
        return SpeedFlags(str(implementation["variance_chunk_rows"]))
    if rule in ("finetune", "finetune_squad", "finetune_checkpoint"):
        return SpeedFlags(cli_flags({"live_metrics": implementation.get("live_metrics", True)}))
    chosen = {flag: implementation[key] for key, flag in PRETRAIN_IMPLEMENTATION_KEYS.items() if key in implementation}
    return SpeedFlags(cli_flags(chosen))


def rule_resources(config: Mapping, rule: str) -> dict[str, Any]:
    """Per-rule cluster resources from the config (resources.<rule name>: gpu, gpu_model,
    cpus_per_gpu, mem_mb, runtime in minutes). No `tasks`: the SLURM plugin would turn it
    into --ntasks-per-gpu and split a multi-GPU job into one task per GPU, while torchrun
    starts the processes itself inside one task. Several GPUs also get nodes=1: torchrun
    --standalone uses the GPUs of one node."""
    resources = dict(config.get("resources", {}).get(rule) or {})
    if resources.get("gpu", 1) > 1:
        resources["nodes"] = 1
    return resources


def launcher(config: Mapping, rule: str) -> SpeedFlags:
    """How a training rule starts fem: plain `fem` for one GPU (or the CPU), or torchrun with
    one data-parallel process per GPU when the config gives the rule several
    (resources.<rule name>.gpu: N). A speed setting: the number of GPUs changes no result."""
    gpus = int(rule_resources(config, rule).get("gpu") or 1)
    return SpeedFlags("fem" if gpus == 1 else f"torchrun --standalone --nproc_per_node {gpus} -m fem")


def mirror_flag(config: Mapping) -> str:
    """--mirror <folder> when the config names a hub mirror, else "" (the CLI reads $FEM_HUB_MIRROR).
    Where data comes from, not what it is: no download rule records it."""
    return f"--mirror {shlex.quote(config['hub_mirror'])}" if config["hub_mirror"] else ""


# --- data ---------------------------------------------------------------------------------------------------------


def train_tokenizer_settings(config: Mapping) -> dict[str, Any]:
    """rule train_tokenizer: the documents `fem tokenize` keeps for training (the same split, so
    no validation text is learned). The vocabulary size is the rule's wildcard."""
    corpus = config["corpus"]
    return {"validation_fraction": corpus["validation_fraction"], "max_documents": json.dumps(corpus["max_documents"])}


def tokenize_settings(config: Mapping, corpus: str) -> dict[str, Any]:
    """rule tokenize: the tokenizer (and the learned vocabulary it needs as input, [] if none),
    block size and split of `corpus`. task-<name> corpora (continual pre-training) use the
    continual model's tokenizer and the continual section's settings."""
    if corpus.startswith("task-"):
        continual = config["continual"]
        return {"learned_tokenizer": [], "tokenizer": continual["model"], "block_size": continual["block_size"],
                "validation_fraction": continual["validation_fraction"],
                "max_documents": json.dumps(continual["max_documents"])}  # fmt: skip
    source = tokenizer_source(config)
    learned = source if config["tokenizer"]["source"] == TRAINED_TOKENIZER else []
    return {"learned_tokenizer": learned, "tokenizer": source, "block_size": config["tokenizer"]["block_size"],
            "validation_fraction": config["corpus"]["validation_fraction"],
            "max_documents": json.dumps(config["corpus"]["max_documents"])}  # fmt: skip


def data_overlap_settings(config: Mapping) -> dict[str, Any]:
    """rule data_overlap: the pre-training corpus and the tasks fine-tuned from the models
    pre-trained on it (Tables 2-4), whose dev sets are checked against it."""
    tasks = set(config["finetune"]["tasks"]) | set(config["segment_counts"]["tasks"]) | {config["efficiency"]["task"]}
    return {"corpus": config["corpus"]["name"], "tasks": sorted(tasks),
            "max_documents": json.dumps(config["corpus"]["max_documents"])}  # fmt: skip


# --- training -----------------------------------------------------------------------------------------------------


def pretrain_flags(config: Mapping, strategy: str, setting: str = "scratch") -> str:
    """rule pretrain: the science flags of a from-scratch run: the pretrain and model keys,
    K from the strategy label ("fe-k4": K = 4, else pretrain.segments). Setting "objectives":
    Table 6's run of that name (fem/objective_settings.py)."""
    if setting == "objectives":
        from fem.objective_settings import objective_pretrain_flags  # it imports this module

        return objective_pretrain_flags(config, strategy)
    base, label_segments = parse_strategy_label(strategy)
    pretrain, model = config["pretrain"], config["model"]
    settings = {key: pretrain[key] for key in pretrain if key != "strategies"}
    if label_segments is not None:
        settings["segments"] = label_segments
    return cli_flags(settings | {key: model[key] for key in model} | {"strategy": base})


def continual_pretrain_settings(config: Mapping, strategy: str) -> dict[str, str]:
    """rule pretrain_continual: the model continued (init_from) and the science flags: the
    pretrain keys with continual.pretrain on top (a key given there is the only one read), no
    intermediate checkpoints, and no model shape: it is the continued model's."""
    pretrain, on_top = config["pretrain"], config["continual"]["pretrain"]
    settings = {key: pretrain[key] for key in pretrain if key not in ("strategies", "save_steps", *on_top)}
    settings |= {"save_steps": []} | {key: on_top[key] for key in on_top}
    flags = cli_flags(settings | {key: None for key in config["model"]} | {"strategy": strategy})
    return {"init_from": config["continual"]["model"], "flags": flags}


FINETUNE_NOT_FLAGS = ("tasks", "metrics", "average_exclude", "squad", "per_task")


def finetune_flags(config: Mapping, task: str, setting: str = "scratch") -> str:
    """rules finetune and finetune_checkpoint: the FinetuneSettings flags: the finetune keys,
    finetune.per_task.<task> on top, and for the continual setting continual.finetune on top
    of those (a key given on top is the only one read)."""
    finetune = config["finetune"]
    on_top = config["continual"]["finetune"] if setting == "continual" else {}
    per_task = (finetune.get("per_task") or {}).get(task, {})
    settings = {key: finetune[key] for key in finetune if key not in (*FINETUNE_NOT_FLAGS, *on_top)}
    settings |= {key: per_task[key] for key in per_task if key not in on_top}
    return cli_flags(settings | {key: on_top[key] for key in on_top})


def squad_flags(config: Mapping) -> str:
    """rule finetune_squad: the SquadSettings flags (finetune.squad)."""
    return cli_flags(config["finetune"]["squad"])


def variance_flags(config: Mapping) -> str:
    """rule variance: the science flags of the gradient-variance analysis (the variance keys
    but the checkpoints list, and the masking's p and K)."""
    variance, pretrain = config["variance"], config["pretrain"]
    settings = {key: variance[key] for key in variance if key != "checkpoints"}
    return cli_flags(settings | {"mask_ratio": pretrain["mask_ratio"], "segments": pretrain["segments"]})


# --- tables: the runs each table gathers, its options and its caption's inputs -----------------------------------


def _seeds(seeds: Mapping) -> dict[str, Any]:
    return {"pretrain_seeds": seeds["pretrain"], "finetune_seeds": seeds["finetune"]}


def table1_settings(config: Mapping) -> dict[str, Any]:
    """rule table1 (continual pre-training): tasks, strategies, seeds, comparisons, caption. A key
    continual.pretrain or continual.finetune leaves out is the general one, read only then."""
    continual = config["continual"]
    pretrain, finetune, seeds = continual["pretrain"], continual["finetune"], continual["seeds"]
    comparisons = default_comparisons(continual["strategies"])
    rates = finetune["learning_rates"] if "learning_rates" in finetune else config["finetune"]["learning_rates"]
    caption = captions.table1_caption(
        scale=config["scale"], model=continual["model"], steps=pretrain["steps"],
        rows_per_step=pretrain["rows_per_step"], block_size=continual["block_size"], segments=segments(config),
        learning_rates=rates, comparisons=comparisons, pretrain_seeds=len(seeds["pretrain"]),
        finetune_seeds=len(seeds["finetune"]),
        match=pretrain["match"] if "match" in pretrain else config["pretrain"]["match"],
    )  # fmt: skip
    return {"tasks": continual["tasks"], "strategies": continual["strategies"], **_seeds(seeds),
            "comparisons": comparison_flags(comparisons), "caption": caption}  # fmt: skip


def table2_settings(config: Mapping) -> dict[str, Any]:
    """rule table2 (pre-training from scratch, then GLUE / SQuAD): tasks, strategies, seeds,
    comparisons, the tasks left out of the average, caption."""
    pretrain, model, finetune, seeds = config["pretrain"], config["model"], config["finetune"], config["seeds"]
    tasks, comparisons = finetune["tasks"], default_comparisons(pretrain["strategies"])
    per_task = finetune.get("per_task") or {}
    caption = captions.table2_caption(
        scale=config["scale"], corpus=config["corpus"]["name"], layers=model["num_hidden_layers"],
        hidden_size=model["hidden_size"], steps=pretrain["steps"], rows_per_step=pretrain["rows_per_step"],
        mask_ratio=pretrain["mask_ratio"], segments=segments(config), match=pretrain["match"],
        max_train_examples=finetune["max_train_examples"], epochs=finetune["epochs"],
        learning_rates=finetune["learning_rates"],
        per_task={task: dict(values) for task, values in per_task.items() if task in tasks},
        average_exclude=finetune["average_exclude"], comparisons=comparisons,
        pretrain_seeds=len(seeds["pretrain"]), finetune_seeds=len(seeds["finetune"]),
    )  # fmt: skip
    return {"tasks": tasks, "strategies": pretrain["strategies"], **_seeds(seeds),
            "comparisons": comparison_flags(comparisons), "average_exclude": " ".join(finetune["average_exclude"]),
            "caption": caption}  # fmt: skip


def table3_settings(config: Mapping) -> dict[str, Any]:
    """rule table3 (efficiency): the task, strategies, seeds, the intermediate checkpoints'
    steps and whether the final model is a row, comparisons, caption."""
    efficiency, pretrain, seeds = config["efficiency"], config["pretrain"], config["seeds"]
    comparisons = default_comparisons(pretrain["strategies"])
    intermediate = [step for step in efficiency["steps"] if step != "final"]
    caption = captions.table3_caption(
        scale=config["scale"], steps=intermediate, final_step=pretrain["steps"], task=efficiency["task"],
        match=pretrain["match"], comparisons=comparisons, pretrain_seeds=len(seeds["pretrain"]),
        finetune_seeds=len(seeds["finetune"]),
    )  # fmt: skip
    steps = " ".join(str(pretrain["steps"] if step == "final" else step) for step in efficiency["steps"])
    return {"task": efficiency["task"], "strategies": pretrain["strategies"], **_seeds(seeds),
            "intermediate_steps": intermediate, "with_final": "final" in efficiency["steps"], "steps": steps,
            "total_steps": pretrain["steps"], "comparisons": comparison_flags(comparisons),
            "caption": caption}  # fmt: skip


def table4_settings(config: Mapping) -> dict[str, Any]:
    """rule table4 (number of segments): tasks, the strategy runs of every K, seeds, the K's,
    the tasks left out of the average, caption."""
    counts, pretrain, seeds, default_k = config["segment_counts"], config["pretrain"], config["seeds"], segments(config)
    caption = captions.table4_caption(
        scale=config["scale"], segment_counts=counts["segments"], segments=default_k,
        mask_ratio=pretrain["mask_ratio"], steps=pretrain["steps"], rows_per_step=pretrain["rows_per_step"],
        match=pretrain["match"], pretrain_seeds=len(seeds["pretrain"]), finetune_seeds=len(seeds["finetune"]),
    )  # fmt: skip
    return {"tasks": counts["tasks"], "strategies": table4_strategies(counts["segments"], default_k), **_seeds(seeds),
            "segments": " ".join(map(str, counts["segments"])), "default_segments": default_k,
            "average_exclude": " ".join(config["finetune"]["average_exclude"]), "caption": caption}  # fmt: skip


def table5_settings(config: Mapping) -> dict[str, Any]:
    """rule table5 (gradient variance): the (strategy, checkpoint) runs of the first pre-training
    seed (step 0, the initialisation shared by every strategy, only for the first), caption."""
    variance, pretrain, seed = config["variance"], config["pretrain"], config["seeds"]["pretrain"][0]
    strategies = pretrain["strategies"]
    runs = [(s, step) for s in strategies for step in variance["checkpoints"] if step != 0 or s == strategies[0]]
    caption = captions.table5_caption(
        scale=config["scale"], seed=seed, corpus=config["corpus"]["name"], parameters=variance["parameters"],
        projection_dim=variance["projection_dim"], hamming_sequences=variance["hamming_sequences"],
        pairs_per_intersection=variance["pairs_per_intersection"], segments=segments(config),
        mask_ratio=pretrain["mask_ratio"], replicates=variance["replicates"], bootstrap=variance["bootstrap"],
    )  # fmt: skip
    return {"seed": seed, "runs": runs, "caption": caption}


# --- the record --------------------------------------------------------------------------------------------------

# Each rule's builder; None: the rule reads no science setting (the downloads read only where from,
# hub_mirror; task_text and report read nothing). A rule missing here stops `fem dvc generate`.
RULE_SETTINGS: dict[str, Callable[..., Any] | None] = {
    "download_corpus": None,
    "download_task": None,
    "task_text": None,
    "report": None,
    "train_tokenizer": train_tokenizer_settings,
    "tokenize": tokenize_settings,
    "data_overlap": data_overlap_settings,
    "pretrain": pretrain_flags,
    "pretrain_continual": continual_pretrain_settings,
    "finetune": finetune_flags,
    "finetune_checkpoint": finetune_flags,
    "finetune_squad": squad_flags,
    "variance": variance_flags,
    "table1": table1_settings,
    "table2": table2_settings,
    "table3": table3_settings,
    "table4": table4_settings,
    "table5": table5_settings,
}


def keys_read(config: Mapping, rule: str, wildcards: Mapping[str, str]) -> list[str]:
    """The dotted config keys (leaves) a job of `rule` with `wildcards` reads: its builder run on
    a RecordedConfig, with the wildcards its signature names (e.g. task, setting)."""
    from fem.objective_settings import OBJECTIVE_RULE_SETTINGS  # Table 6's (it imports this module)

    builders = OBJECTIVE_RULE_SETTINGS | RULE_SETTINGS
    if rule not in builders:
        raise ConfigError(f"rule {rule!r} has no entry in fem.rule_settings.RULE_SETTINGS (its settings builder)")
    builder = builders[rule]
    if builder is None:
        return []
    recorded = RecordedConfig(config)
    names = [name for name in inspect.signature(builder).parameters if name != "config"]
    builder(recorded, **{name: wildcards[name] for name in names if name in wildcards})
    return sorted({leaf for key in recorded.reads for leaf in leaves(config, key)})


def leaves(config: Mapping, key: str) -> list[str]:
    """`key`, or its leaf keys when its value is a mapping (so that a config file that overrides
    one sub-key owns only that sub-key in dvc.yaml's params)."""
    value = config
    for part in key.split("."):
        value = value[part]
    if isinstance(value, Mapping):
        return [leaf for sub in value for leaf in leaves(config, f"{key}.{sub}")]
    return [key]
