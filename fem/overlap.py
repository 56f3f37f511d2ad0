"""results/data/overlap.json and .md: how clean each task's dev set is.

Per task and dev split: how many examples have an exact copy in the task's train split
(all text columns together, normalised: fem.duplicates.row_key), and how many have a text
(any one text column, normalised) that occurs verbatim, word for word, inside a document
of the pre-training corpus (fem.duplicates.occurs_in_documents). Official splits (GLUE)
stay as published, so these counts are what the tables' dev scores carry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from fem.duplicates import occurs_in_documents, row_key, with_copy_in


def dev_overlap(text_columns: list[str], train: dict, dev: dict, in_corpus: dict[str, list[bool]]) -> dict:
    """Counts of one dev split. `train`, `dev`: {column: list of texts} holding (at least)
    `text_columns`; `in_corpus`: {column: per dev example, whether that column's text occurs
    in the corpus} (occurs_in_documents). Returns {"examples", "with_copy_in_train",
    "with_text_in_corpus" (any column), "text_in_corpus_by_column": {column: n}}."""
    train_keys = [row_key(row) for row in zip(*(train[c] for c in text_columns), strict=True)]
    dev_keys = [row_key(row) for row in zip(*(dev[c] for c in text_columns), strict=True)]
    return {
        "examples": len(dev_keys),
        "with_copy_in_train": len(with_copy_in(dev_keys, train_keys)),
        "with_text_in_corpus": sum(map(any, zip(*(in_corpus[c] for c in text_columns), strict=True))),
        "text_in_corpus_by_column": {c: sum(in_corpus[c]) for c in text_columns},
    }


def overlap_report(corpus_dir: str | Path, task_dirs: dict[str, str | Path], max_documents: int | None) -> dict:
    """The report of the pre-training corpus saved at `corpus_dir` (its first
    `max_documents` documents, as tokenization reads it; None: all) against the dev splits
    of each task saved by `fem download task` at task_dirs[name]. Every folder is read
    (DataSourceError naming one that cannot be) before the search, one pass over the corpus
    for the texts of every task, starts."""
    from fem.registry import get_task
    from fem.tokenization import open_corpus

    corpus = open_corpus(Path(corpus_dir))
    n_documents = len(corpus) if max_documents is None else min(len(corpus), max_documents)
    loaded = {name: _task_splits(get_task(name), Path(folder)) for name, folder in task_dirs.items()}
    queries: list[str] = []
    places = {}  # (task, split, column) -> where its texts start in `queries`, and how many
    for name, (columns, splits) in loaded.items():
        for split, rows in splits.items():
            for column in columns if split != "train" else ():
                places[name, split, column] = len(queries), len(rows[column])
                queries += map(str, rows[column])
    found = occurs_in_documents(queries, _documents(corpus, n_documents))
    tasks = {}
    for name, (columns, splits) in loaded.items():
        tasks[name] = {}
        for split in (s for s in splits if s != "train"):
            slices = {c: places[name, split, c] for c in columns}
            in_corpus = {c: found[start : start + n] for c, (start, n) in slices.items()}
            tasks[name][split] = dev_overlap(columns, splits["train"], splits[split], in_corpus)
        print(f"{name}: {json.dumps(tasks[name])}", flush=True)
    return {"corpus": {"path": str(corpus_dir), "documents": n_documents, "max_documents": max_documents},
            "tasks": tasks}  # fmt: skip


def _documents(corpus, n_documents: int, batch: int = 1000) -> Iterator[str]:
    """The first `n_documents` texts of a corpus Dataset, read batch by batch, so that memory
    holds one batch of a corpus of any size."""
    for start in range(0, n_documents, batch):
        yield from corpus[start : min(start + batch, n_documents)]["text"]


def _task_splits(task, folder: Path) -> tuple[list[str], dict[str, dict]]:
    """(text columns, {split: {column: texts}}) of the train and dev splits of `task` saved at
    `folder`; DataSourceError naming the folder when it lacks one."""
    import datasets

    from fem.errors import DataSourceError

    columns = list(task.text_columns)
    try:
        saved = datasets.load_from_disk(str(folder))
        return columns, {s: saved[s].select_columns(columns).to_dict() for s in ("train", *task.eval_splits)}
    except (FileNotFoundError, KeyError, ValueError) as err:  # no folder, no split, no column
        raise DataSourceError(
            f"task {task.name}: {folder} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}); expected "
            f"the folder `fem download task {task.name}` writes, with splits train, {', '.join(task.eval_splits)}"
        ) from err


def overlap_markdown(report: dict) -> str:
    """The report as a Markdown table with its caption."""
    corpus = report["corpus"]
    lines = [
        "## Data overlap: dev sets against train and the pre-training corpus",
        "",
        f"Pre-training corpus: {corpus['path']} ({corpus['documents']} documents searched). 'copy in train': dev "
        "examples whose text columns together equal a training example's after whitespace and case "
        "normalisation (official splits are kept as published; bbc_news, split by fem, has these removed). "
        "'text in corpus': dev examples one of whose text columns, normalised, occurs word for word inside a "
        "pre-training document.",
        "",
        "| task | dev split | examples | copy in train | text in corpus | by column |",
        "|---|---|---:|---:|---:|---|",
    ]
    for task, splits in report["tasks"].items():
        for split, row in splits.items():
            share = row["with_text_in_corpus"] / row["examples"] if row["examples"] else 0.0
            columns = ", ".join(f"{c} {n}" for c, n in row["text_in_corpus_by_column"].items())
            lines.append(
                f"| {task} | {split} | {row['examples']} | {row['with_copy_in_train']} | "
                f"{row['with_text_in_corpus']} ({share:.1%}) | {columns} |"
            )
    return "\n".join(lines) + "\n"


def write_overlap(corpus_dir: str | Path, task_dirs: list[str | Path], max_documents: int | None,
                  json_path: str | Path, md_path: str | Path) -> list[str]:  # fmt: skip
    """overlap_report of the task folders (each named by its folder, the task's name under
    data/raw/tasks/) written as JSON and as Markdown (overlap_markdown, also printed); return
    both paths."""
    report = overlap_report(corpus_dir, {Path(d).name: d for d in task_dirs}, max_documents)
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    Path(md_path).write_text(overlap_markdown(report))
    print(overlap_markdown(report))
    return [str(json_path), str(md_path)]
