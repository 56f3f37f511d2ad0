"""`fem finetune` (GLUE and the classification tasks of Table 1) and `fem finetune-squad`
(SQuAD v1.1 and v2.0): the flags, then one call of fem.finetuning.sweep.sweep_learning_rates,
then provenance.json of the declared outputs. fem/cli.py registers them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fem.cli_args import add_settings, record_provenance, run_labels, settings_from, yaml_value
from fem.errors import ConfigError
from fem.settings import FinetuneSettings, SquadSettings


def add_finetune_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of `fem finetune` and `fem finetune-squad`: the same flags, and one flag
    per field of their settings class (but the learning rate: --learning-rates sweeps it)."""
    for name, settings_class, what in [
        ("finetune", FinetuneSettings, "a GLUE task"),
        ("finetune-squad", SquadSettings, "SQuAD v1.1 or v2.0"),
    ]:
        p = sub.add_parser(name, help=f"fine-tune a checkpoint on {what}")
        p.add_argument("--task", required=True, help="a task of fem/registry.py; its metrics are the registry's")
        p.add_argument("--task-dir", required=True, help="folder written by `fem download task`")
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--label", action="append", default=[], help="key=value stored under 'run' in metrics.json")
        p.add_argument("--learning-rates", type=yaml_value, required=True, help="a list; several: best on dev")
        live = "true or false: DVCLive appends to <out>/curves while the run trains (a speed setting)"
        p.add_argument("--live-metrics", type=yaml_value, default=True, help=live)
        add_settings(p, settings_class, exclude=("learning_rate",))
        p.set_defaults(handler=cmd_finetune, settings_class=settings_class)


def cmd_finetune(args: argparse.Namespace) -> None:
    """`fem finetune` and `fem finetune-squad`; also under `torchrun --nproc_per_node N -m fem`
    (every rank trains its share, rank 0 writes). The sweep/ folder of a learning-rate sweep
    is kept for reading, not declared: neither Snakemake nor DVC tracks it."""
    from fem.checkpointing import require_checkpoint
    from fem.distributed import close_world, init_world
    from fem.finetuning import glue, squad
    from fem.finetuning.sweep import sweep_learning_rates
    from fem.registry import get_task

    start = time.perf_counter()
    require_checkpoint(args.checkpoint)  # a missing one names its run and step, before any work
    world = init_world()
    task = get_task(args.task)
    is_squad = args.settings_class is SquadSettings
    if task.is_qa != is_squad:
        right = "fem finetune-squad" if task.is_qa else "fem finetune"
        raise ConfigError(f"task {args.task} is {'' if task.is_qa else 'not '}extractive QA: use `{right}`")
    if not isinstance(args.learning_rates, list) or not args.learning_rates:
        raise ConfigError(f"--learning-rates: {args.learning_rates!r}; expected a non-empty list such as [2e-5, 3e-5]")
    if not isinstance(args.live_metrics, bool):
        raise ConfigError(f"--live-metrics: {args.live_metrics!r}; expected true or false")
    settings = settings_from(args.settings_class, args, learning_rate=args.learning_rates[0])  # the sweep sets it
    sweep_learning_rates(task, args.task_dir, args.checkpoint, args.out, settings, args.learning_rates,
                         threads=args.threads, run_labels=run_labels(args), world=world,
                         live_metrics=args.live_metrics)  # fmt: skip
    if world.is_main:
        out = Path(args.out)
        outputs = [out / name for name in (squad.OUTPUTS if is_squad else glue.OUTPUTS)]
        record_provenance(out / "provenance.json", args, [args.task_dir, args.checkpoint], outputs, start,
                          kept=[out / "sweep"])  # fmt: skip
    close_world(world)
