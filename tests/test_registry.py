"""fem/registry.py is the one owner of the corpora, tasks and strategies: the config schema's
name lists equal its lists, the config checks hold no list of their own, every task's metrics
and trivial baseline are computable, and run names ("fe-k4") parse back."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fem.config import SCHEMA_PATH, check_config, load_yaml
from fem.errors import ConfigError
from fem.estimate import TASK_SIZES
from fem.metrics import METRICS, constant_metrics, squad_trivial_metrics
from fem.registry import (
    CORPORA,
    MULTI_COPY_STRATEGIES,
    STRATEGIES,
    TASKS,
    parse_strategy_label,
    strategy_label,
    task_names,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = load_yaml(SCHEMA_PATH)
REGISTRY_LISTS = {"tasks": list(TASKS), "strategies": list(STRATEGIES), "corpora": list(CORPORA)}


def schema_nodes(node: Any, path: str = "") -> list[tuple[str, dict]]:
    """Every mapping in the schema with its path ("properties.corpus.properties.name")."""
    if isinstance(node, list):
        return [found for i, child in enumerate(node) for found in schema_nodes(child, f"{path}[{i}]")]
    if not isinstance(node, dict):
        return []
    return [(path, node)] + [found for key, child in node.items()
                             for found in schema_nodes(child, f"{path}.{key}" if path else key)]  # fmt: skip


def folded(text: str) -> str:
    return " ".join(str(text).split())


@pytest.mark.parametrize(
    "path, registry",
    [("$defs.task", "tasks"), ("$defs.strategy", "strategies"), ("properties.corpus.properties.name", "corpora")],
)
def test_schema_enum_equals_the_registry(path, registry):
    node = SCHEMA
    for key in path.split("."):
        node = node[key]
    assert node["enum"] == REGISTRY_LISTS[registry]


def test_no_other_schema_enum_names_tasks_strategies_or_corpora():
    """A second, hand-written list of registry names (an inline strategy enum) would drift: every
    enum naming any of them is exactly one registry list."""
    names = {name for names in REGISTRY_LISTS.values() for name in names}
    drifting = [path for path, node in schema_nodes(SCHEMA)
                if names & set(node.get("enum") or []) and node["enum"] not in REGISTRY_LISTS.values()]  # fmt: skip
    assert drifting == []


def test_strategy_lists_of_the_schema_are_the_registrys():
    for section in ("pretrain", "continual"):
        assert SCHEMA["properties"][section]["properties"]["strategies"]["items"] == {"$ref": "#/$defs/strategy"}


def test_the_schema_configures_no_metric():
    """A task's metrics are Task.metrics, not a config key (finetune.metrics is gone)."""
    metrics = {m for task in TASKS.values() for m in task.metrics}
    assert [path for path, node in schema_nodes(SCHEMA) if metrics & set(node.get("enum") or [])] == []
    assert "metrics" not in SCHEMA["properties"]["finetune"]["properties"]
    assert "metrics" not in SCHEMA["properties"]["finetune"]["required"]


def test_schema_descriptions_list_the_registry_names():
    """The descriptions that spell out names for the reader (shown in error messages) list them
    as the registry does."""
    finetune_tasks = folded(SCHEMA["properties"]["finetune"]["properties"]["tasks"]["description"])
    assert f"GLUE ({', '.join(task_names('glue'))})" in finetune_tasks
    assert f"SQuAD ({', '.join(task_names('squad'))})" in finetune_tasks
    strategies = folded(SCHEMA["properties"]["pretrain"]["properties"]["strategies"]["description"])
    assert ", ".join(STRATEGIES) in strategies


def test_config_checks_hold_no_registry_names():
    """fem/config.py (and fem/config_objectives.py) name no task, strategy or corpus in their code: any such knowledge comes
    from fem.registry. Docstrings and config keys (finetune["squad"], a section) aside."""
    tree = ast.parse((ROOT / "fem" / "config.py").read_text() + (ROOT / "fem" / "config_objectives.py").read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)}  # fmt: skip
    keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    keys |= {id(arg) for node in ast.walk(tree)  # key("block"): the config key a value comes from
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "key" for arg in node.args}  # fmt: skip
    names = {name for names in REGISTRY_LISTS.values() for name in names}
    literals = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings | keys]  # fmt: skip
    assert sorted(set(literals) & names) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_multiple_of_k_check_follows_the_registrys_k_copy_strategies(strategy):
    config = copy.deepcopy(load_yaml(ROOT / "config" / "config.yaml"))
    config["pretrain"].update(strategies=[strategy], rows_per_step=50)  # K = 7 does not divide 50
    with pytest.raises(ConfigError) as raised:  # (segment_counts' K values do not divide it either)
        check_config(config)
    named = "pretrain.rows_per_step: 50 is not a multiple of K = 7" in str(raised.value)
    assert named == (strategy in MULTI_COPY_STRATEGIES)


def test_every_configured_task_is_registered():
    for name in ("config/config.yaml", "tests/configs/micro.yaml"):
        config = load_yaml(ROOT / name)
        tasks = [*config["finetune"]["tasks"], *config["continual"]["tasks"], *config["segment_counts"]["tasks"],
                 config["efficiency"]["task"]]  # fmt: skip
        assert set(tasks) <= set(TASKS), name


def test_every_task_metric_is_computed():
    for task in TASKS.values():
        computable = {"exact_match", "f1"} if task.is_qa else set(METRICS)
        assert task.metrics and set(task.metrics) <= computable, task.name


def test_kinds_partition_the_tasks():
    assert sorted(task_names("glue") + task_names("squad") + task_names("classification")) == sorted(TASKS)


def test_every_glue_and_squad_task_has_a_published_size_for_the_estimate():
    assert list(TASK_SIZES) == task_names("glue") + task_names("squad")


@pytest.mark.parametrize("name", list(TASKS))
def test_trivial_baseline_is_described_by_kind_and_computed_as_described(name):
    task = TASKS[name]
    baseline = task.trivial_baseline
    gold = {"q1": ["Paris"], "q2": []}  # one answerable question, one without an answer
    if task.is_qa and task.unanswerable:
        assert '"no answer"' in baseline
        assert squad_trivial_metrics(gold, task.unanswerable)["exact_match"] == 0.5  # right on q2 only
    elif task.is_qa:
        assert "exact match and F1 are 0" in baseline
        assert squad_trivial_metrics(gold, task.unanswerable) == {"exact_match": 0.0, "f1": 0.0}
    elif task.is_regression:
        assert "constant" in baseline and "correlation 0" in baseline
        assert constant_metrics(task.metrics, 2.5, np.array([0.0, 1.0, 4.0])) == dict.fromkeys(task.metrics, 0.0)
    else:
        assert baseline == "the majority class of the training set for every example"


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("segments", [2, 4, 7, 14])
def test_strategy_label_parses_back(strategy, segments):
    default = 7
    label = strategy_label(strategy, segments, default)
    parsed, parsed_segments = parse_strategy_label(label)
    assert parsed == strategy
    if strategy in MULTI_COPY_STRATEGIES and segments != default:
        assert label == f"{strategy}-k{segments}" and parsed_segments == segments
    else:  # the default K, or a strategy with one copy: the plain name, K from pretrain.segments
        assert label == strategy and parsed_segments is None
