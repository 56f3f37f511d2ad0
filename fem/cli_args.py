"""What every `fem` sub-command shares: flags read as YAML, a settings dataclass as flags, the
run labels of --label, and the provenance.json a command writes beside its outputs.

The command modules (fem/cli.py, fem/finetuning/cli.py, fem/tables/cli.py) import these; this
module imports none of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import yaml


def yaml_value(text: str):
    """A flag's value read as YAML: `0.15`, `auto`, `null`, `[1, 2]`, `{mask: 0.8}`."""
    return yaml.safe_load(text)


def add_settings(parser: argparse.ArgumentParser, settings_class, required: bool = True, exclude=()) -> None:
    """One --flag per field of a settings dataclass (but `exclude`): required, or defaulting
    to the field's default."""
    for field in dataclasses.fields(settings_class):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        if required:
            parser.add_argument(flag, type=yaml_value, required=True)
        else:
            parser.add_argument(flag, type=yaml_value, default=field.default, help=f"default {field.default}")


def settings_from(settings_class, args: argparse.Namespace, **values):
    """An instance of `settings_class` from the parsed flags of its fields (`values` win)."""
    fields = [f.name for f in dataclasses.fields(settings_class) if f.name not in values]
    return settings_class(**{name: getattr(args, name) for name in fields}, **values)


def record_provenance(out: Path, args: argparse.Namespace, inputs: list, outputs: list, start: float, **extra) -> None:
    """provenance.json at `out`; `extra`: write_provenance's sources / kept."""
    from fem.provenance import write_provenance

    parameters = {k: v for k, v in vars(args).items() if k not in ("handler", "settings_class")}
    write_provenance(out, sys.argv, parameters, inputs, outputs, time.perf_counter() - start, **extra)


def run_labels(args: argparse.Namespace) -> dict:
    """--label key=value flags as {key: value}, values read as YAML."""
    labels = dict(item.split("=", 1) for item in args.label)
    return {k: yaml_value(v) for k, v in labels.items()}
