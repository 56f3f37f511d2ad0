"""Config validation: the JSON schema plus the cross-key rules a schema cannot express.

The Snakefile calls `check_config` before any job is planned, so a bad config stops the
run with one message naming each offending key and what is allowed. This module must stay
cheap to import (no torch): it runs on every `snakemake` invocation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fem.config_objectives import entities_problems, objectives_problems
from fem.errors import ConfigError
from fem.masking import copies_per_sequence, resolve_segments
from fem.registry import MULTI_COPY_STRATEGIES, combination_problem

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


# JSON Schema counts 1.0 as an integer; a config's `steps: 300.0` or `seeds: [1.0]` is a
# mistake we want named, so "integer" means a Python int here (and never a bool).
_STRICT_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error naming the file (and the line of a syntax
    error) when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: not valid YAML ({problem})") from err
    if data is None:
        raise ConfigError(f"config file {path} is empty; expected a mapping of keys (as config/config.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def deep_update(base: dict, new: dict) -> None:
    """Merge `new` into `base` key by key (nested mappings merged, other values replaced), as
    Snakemake merges several config files."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value


def check_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> None:
    """Raise ConfigError listing every problem in `config`; return None when it is valid."""
    schema = load_yaml(schema_path)
    validator = _STRICT_VALIDATOR(schema)
    problems = [
        _describe(error, schema) for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]
    if not problems:  # cross-key rules only make sense on a well-typed config
        problems = _cross_key_problems(config)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid config ({len(problems)} problem(s)):\n{lines}")


def tokenized_problems(config: dict[str, Any], root: str | Path = ".") -> list[str]:
    """Keys asking for more validation blocks than the tokenized data already under
    `root`/data/tokenized holds (data of other settings, to be tokenized again, is skipped;
    data not there yet is checked when the job starts: fem.tokenization.load_blocks)."""
    pre, continual = config["pretrain"], config["continual"]
    scratch_wanted = {"pretrain.validation_blocks": pre["validation_blocks"],
                      "variance.sequences": config["variance"]["sequences"]}  # fmt: skip
    corpus = config["corpus"]
    runs = [(corpus["name"], tokenizer_source(config), config["tokenizer"]["block_size"],
             corpus["validation_fraction"], corpus["max_documents"], scratch_wanted,
             "corpus.validation_fraction")]  # fmt: skip
    continual_wanted = {continual_key(config)("validation_blocks"): continual_pretrain(config)["validation_blocks"]}
    runs += [(f"task-{task}", continual["model"], continual["block_size"], continual["validation_fraction"],
              continual["max_documents"], continual_wanted, "continual.validation_fraction")
             for task in continual["tasks"]]  # fmt: skip
    problems = []
    for folder, source, block_size, fraction, max_documents, asked, fraction_key in runs:
        path = Path(root) / "data" / "tokenized" / folder / "meta.json"
        try:
            meta = json.loads(path.read_text())
            settings = meta["tokenizer_source"], meta["block_size"], meta["validation_fraction"], meta["max_documents"]
            blocks = meta["splits"]["validation"]["blocks"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not tokenized yet, or damaged (the job names the file)
        if settings != (source, block_size, fraction, max_documents):
            continue
        problems += [
            f"{key}: {count} is more than the {blocks} validation blocks of {path.parent}; expected at most "
            f"{blocks} (or hold out more documents: {fraction_key})"
            for key, count in asked.items()
            if count > blocks
        ]
    return problems


def _key_name(path: list[Any]) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "<top level>"


def _subschema(schema: dict, path: list[Any]) -> dict:
    """The schema node that describes the value at `path` (following $ref and items)."""
    node = schema
    for part in path:
        node = _deref(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:  # a free key of a mapping (finetune.per_task.<task>)
            extra = node.get("additionalProperties")
            node = extra if isinstance(extra, dict) else {}
    return _deref(schema, node)


def _deref(schema: dict, node: dict) -> dict:
    """`node` with its $ref target merged in: the node's own keys win, but the properties of
    both count (pretrain = the shared pretrain_keys + strategies and save_steps)."""
    if "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        target = _deref(schema, target)
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        merged["properties"] = target.get("properties", {}) | node.get("properties", {})
        return merged
    return node


def _allowed(schema: dict, path: list[Any]) -> str:
    node = _subschema(schema, path)
    if "description" in node:
        return " ".join(str(node["description"]).split())
    parent = _subschema(schema, path[:-1]) if path else {}
    if "enum" in node:
        return "one of " + ", ".join(map(str, node["enum"]))
    return " ".join(str(parent.get("description", "see workflow/schemas/config.schema.yaml")).split())


# Keys an older config may still set, and why they went (named instead of a bare "unknown key").
REMOVED_KEYS = {
    "finetune.metrics": "removed: a task's metrics are its entry's in fem/registry.py (Task.metrics); delete the key",
}


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    path = list(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_subschema(schema, path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        names = [_key_name([*path, key]) for key in unknown]
        return "; ".join(
            f"{name}: {REMOVED_KEYS.get(name, 'unknown key')}; allowed keys here: {', '.join(allowed)}"
            for name in names
        )
    if error.validator == "required":
        missing = error.message.split("'")[1]
        key = [*path, missing]
        return f"{_key_name(key)}: missing; expected {_allowed(schema, key)}"
    if error.validator == "enum":
        return f"{_key_name(path)}: {error.instance!r} is not allowed; expected one of " + ", ".join(
            map(str, error.validator_value)
        )
    return f"{_key_name(path)}: {error.instance!r} is not allowed; expected {_allowed(schema, path)}"


def _cross_key_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    pre, model, continual = config["pretrain"], config["model"], config["continual"]
    if model["hidden_size"] % model["num_attention_heads"]:
        problems.append(
            f"model.num_attention_heads: {model['num_attention_heads']} does not divide "
            f"model.hidden_size = {model['hidden_size']}"
        )
    accumulation = config["implementation"]["pretrain_accumulation_steps"]
    segments = resolve_segments(pre["mask_ratio"], pre["segments"])
    problems += _pretrain_problems(pre, _scratch_key, "tokenizer.block_size", config["tokenizer"]["block_size"],
                                   "pretrain.strategies", pre["strategies"], accumulation)  # fmt: skip
    late = [s for s in pre["save_steps"] if s >= pre["steps"]]
    if late:
        problems.append(
            f"pretrain.save_steps: {late} not below pretrain.steps = {pre['steps']} (the final model is always saved)"
        )
    merged = continual_pretrain(config)  # a continual run's pretrain keys, checked by the same rules
    problems += _pretrain_problems(merged, continual_key(config), "continual.block_size", continual["block_size"],
                                   "continual.strategies", continual["strategies"], accumulation)  # fmt: skip
    problems = list(dict.fromkeys(problems))  # a pretrain key both kinds of run inherit: named once
    continual_k = resolve_segments(merged["mask_ratio"], merged["segments"])
    problems += _process_problems(config, segments, merged, continual_k)
    problems += _finetune_problems(config["finetune"])
    problems += _variance_problems(config["variance"], pre, segments)
    problems += _table_problems(config)
    problems += objectives_problems(config, segments) + entities_problems(config)
    problems += _tokenizer_problems(config["tokenizer"])
    return problems


TRAINED_TOKENIZER = "trained"  # tokenizer.source: a WordPiece vocabulary learned on the corpus (fem/wordpiece.py)


def tokenizer_source(config: dict[str, Any]) -> str:
    """The tokenizer the pre-training corpus is tokenized with: tokenizer.source as given, or
    for `trained` the folder the train_tokenizer rule writes for this corpus and vocabulary size."""
    tokenizer = config["tokenizer"]
    if tokenizer["source"] == TRAINED_TOKENIZER:
        return f"data/tokenizers/{config['corpus']['name']}-wordpiece{tokenizer['vocab_size']}"
    return tokenizer["source"]


def _tokenizer_problems(tokenizer: dict[str, Any]) -> list[str]:
    # (with another source vocab_size is not read: a config layered on one that learns its
    # vocabulary, e.g. config/paper.yaml, names a tokenizer and leaves the size behind)
    if tokenizer["source"] == TRAINED_TOKENIZER and tokenizer.get("vocab_size") is None:
        return ["tokenizer.vocab_size: missing; expected an integer >= 64 (tokenizer.source is `trained`)"]
    return []


def continual_pretrain(config: dict[str, Any]) -> dict[str, Any]:
    """The pretrain keys of a continual run: pretrain, with continual.pretrain on top."""
    return config["pretrain"] | config["continual"]["pretrain"]


def _scratch_key(key: str) -> str:
    return f"pretrain.{key}"


def continual_key(config: dict[str, Any]) -> Callable[[str], str]:
    """The config key a continual run's pretrain value comes from: continual.pretrain.<key>
    when overridden there, else pretrain.<key>."""
    overrides = config["continual"]["pretrain"]
    return lambda key: f"continual.pretrain.{key}" if key in overrides else f"pretrain.{key}"


def _pretrain_problems(
    pre: dict[str, Any],
    key: Callable[[str], str],
    block_key: str,
    block_size: int,
    strategies_key: str,
    strategies: list[str],
    accumulation: int,
) -> list[str]:
    """The cross-key rules of one kind of pre-training run (from scratch, or continual):
    `pre` its merged pretrain keys, `key(name)` the config key a value comes from."""
    problems = []
    total = sum(pre["replacement"].values())
    if abs(total - 1.0) > 1e-6:
        problems.append(f"{key('replacement')}: mask + random + keep = {total:g}; expected them to sum to 1")
    if pre["warmup_steps"] > pre["steps"]:
        problems.append(f"{key('warmup_steps')}: {pre['warmup_steps']} exceeds {key('steps')} = {pre['steps']}")
    if pre["block"]["min_length"] > pre["block"]["max_length"]:
        problems.append(
            f"{key('block')}.min_length: {pre['block']['min_length']} exceeds {key('block')}.max_length = "
            f"{pre['block']['max_length']}; expected min_length <= max_length"
        )
    segments = resolve_segments(pre["mask_ratio"], pre["segments"])
    if segments > block_size - 2:
        problems.append(
            f"{key('segments')}: K = {segments} exceeds the {block_size - 2} maskable positions of a "
            f"block ({block_key} - 2)"
        )
    multi_copy = [s for s in strategies if s in MULTI_COPY_STRATEGIES]
    if multi_copy and pre["match"] == "rows" and pre["rows_per_step"] % segments:  # sequences: any count works
        problems.append(
            f"{key('rows_per_step')}: {pre['rows_per_step']} is not a multiple of K = {segments} "
            f"(each sequence of {', '.join(multi_copy)} in {strategies_key} contributes K rows to a step, "
            f"{key('match')}: rows)"
        )
    problems += [
        f"{strategies_key}: {problem} ({key('objective')}, {key('mask_ratio_schedule')})"
        for strategy in strategies
        if (problem := combination_problem(pre["objective"], strategy, pre["mask_ratio_schedule"] is not None))
    ]
    if accumulation > pre["rows_per_step"]:
        problems.append(
            f"implementation.pretrain_accumulation_steps: {accumulation} exceeds {key('rows_per_step')} = "
            f"{pre['rows_per_step']} (each micro-batch needs at least one row)"
        )
    return problems


def _process_problems(config: dict[str, Any], segments: int, continual: dict[str, Any], continual_k: int) -> list[str]:
    """Under torchrun (resources.<rule>.gpu > 1) every process needs at least one sequence of
    each step: at most rows_per_step / K processes under match rows, K the most copies per
    sequence of any run, or rows_per_step under match sequences. One process always runs
    (fewer rows than K is a rows_per_step problem, named apart)."""
    resources, pre = config.get("resources") or {}, config["pretrain"]
    scratch_copies = [copies_per_sequence(s, segments) for s in pre["strategies"]]
    continual_copies = [copies_per_sequence(s, continual_k) for s in config["continual"]["strategies"]]
    scratch_most = max(*scratch_copies, *config["segment_counts"]["segments"])  # Table 4's fe-k<K> runs too
    continual_most = max(continual_copies)
    runs = {  # (rows_per_step, K); under match sequences every strategy takes rows_per_step sequences
        "pretrain": (pre["rows_per_step"], scratch_most if pre["match"] == "rows" else 1),
        "pretrain_continual": (continual["rows_per_step"], continual_most if continual["match"] == "rows" else 1),
    }
    problems = []
    for rule in ("tokenize", "variance"):  # no torchrun: a second GPU would sit idle
        if (resources.get(rule) or {}).get("gpu", 1) > 1:
            problems.append(f"resources.{rule}.gpu: {resources[rule]['gpu']}; {rule} runs on one GPU at most")
    for rule, (rows, k) in runs.items():
        gpus = (resources.get(rule) or {}).get("gpu", 1)
        if gpus > max(1, rows // k):
            per_rows = f" ({rows} rows / K = {k})" if k > 1 else ""
            problems.append(
                f"resources.{rule}.gpu: {gpus} processes but only {rows // k} sequences per step{per_rows}; "
                f"expected at most {max(1, rows // k)} GPUs"
            )
    return problems


def _variance_problems(variance: dict[str, Any], pre: dict[str, Any], segments: int) -> list[str]:
    problems = []
    unsaved = [c for c in variance["checkpoints"] if c != "final" and c not in pre["save_steps"]]
    if unsaved:
        problems.append(
            f"variance.checkpoints: steps {unsaved} are not in pretrain.save_steps = {pre['save_steps']}; "
            "expected saved steps (0 = initialisation) or final"
        )
    if variance["hamming_sequences"] > variance["sequences"]:
        problems.append(
            f"variance.hamming_sequences: {variance['hamming_sequences']} exceeds variance.sequences = "
            f"{variance['sequences']}"
        )
    if variance["sequences"] < segments:
        problems.append(f"variance.sequences: {variance['sequences']} is below K = {segments} (random_kseq draws K)")
    return problems


def _table_problems(config: dict[str, Any]) -> list[str]:
    """Tables 3 and 4: steps are saved, K divides the rows."""
    problems = []
    pre = config["pretrain"]
    unsaved = [s for s in config["efficiency"]["steps"] if s != "final" and s not in pre["save_steps"]]
    if unsaved:
        problems.append(f"efficiency.steps: {unsaved} are not in pretrain.save_steps = {pre['save_steps']}")
    wrong = [k for k in config["segment_counts"]["segments"] if pre["rows_per_step"] % k]
    if wrong and pre["match"] == "rows":  # under match sequences every K takes rows_per_step sequences
        problems.append(
            f"segment_counts.segments: {wrong} do not divide pretrain.rows_per_step = {pre['rows_per_step']} "
            "(compute matching needs rows/K whole sequences per step)"
        )
    return problems


def _finetune_problems(finetune: dict[str, Any]) -> list[str]:
    # (a task's metrics are not configured: they are its registry entry's, fem.registry.get_task(name).metrics)
    squad = finetune["squad"]
    if squad["doc_stride"] >= squad["max_length"]:
        return [
            f"finetune.squad.doc_stride: {squad['doc_stride']} must be below finetune.squad.max_length = "
            f"{squad['max_length']}"
        ]
    return []
