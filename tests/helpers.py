"""Helpers shared by the test modules: no test module imports another (issue 16).

Masks (test_masks.py, test_corruption.py, test_collation.py): masks are checked in "slot"
coordinates computed here independently of fem/masking.py: slot j of a row is its j-th
maskable column, so specials anywhere in the row are skipped. Then: a tiny checkpoint, the
environment of a workflow shell, a planted pickle payload, a hub-mirror folder, tiny
pre-training settings and their CLI, SQuAD-format data. Fixtures stay in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from hypothesis import settings
from hypothesis import strategies as st

from fem.collation import MaskingSpec
from fem.config import deep_update
from fem.masking import (
    STRATEGIES,
    SpanShape,
    group_sizes,
    strategy_masks,
)
from fem.registry import ENTITY_STRATEGIES
from fem.settings import PretrainSettings

PROPERTY = settings(max_examples=40, deadline=None, database=None)
REPLACEMENT = {"mask": 0.8, "random": 0.1, "keep": 0.1}
SPECIAL_IDS = (0, 101, 102, 103)  # [PAD], [CLS], [SEP], [MASK]
DEFAULT_SPAN = SpanShape()
RANDOM_STRATEGIES = tuple(s for s in STRATEGIES if s != "fe_contiguous")  # fe_contiguous has no randomness


# --- masks ------------------------------------------------------------------------------


def maskable_rows(batch: int, length: int) -> np.ndarray:
    maskable = np.ones((batch, length), dtype=bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    return maskable


def slot_view(masks: np.ndarray, maskable: np.ndarray) -> list[np.ndarray]:
    """Row b's masks [C, L] restricted to its maskable columns, in order: bool [C, n_b]."""
    return [masks[b][:, np.flatnonzero(maskable[b])] for b in range(len(maskable))]


def run_lengths(row: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of True in a 1-d bool array."""
    steps = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return np.flatnonzero(steps == -1) - np.flatnonzero(steps == 1)


def word_ids(word_starts: np.ndarray, maskable: np.ndarray) -> np.ndarray:
    """Word of each slot of one row: a word is a word-start slot plus the following non-start
    slots (specials skipped); the first slot always starts a word."""
    starts = word_starts[np.flatnonzero(maskable)].copy()
    if len(starts):
        starts[0] = True
    return np.cumsum(starts) - 1


def assert_partition(masks: np.ndarray, maskable: np.ndarray, segments: int) -> list[np.ndarray]:
    """The K masks of every row are disjoint, cover each maskable column exactly once, never
    touch a special column and have exactly the sizes of `group_sizes`. Returns slot views."""
    assert masks.shape == (*maskable.shape[:1], segments, maskable.shape[1])
    assert np.array_equal(masks.sum(axis=1), maskable.astype(int))
    assert not (masks & ~maskable[:, None, :]).any()
    assert np.array_equal(masks.sum(axis=2), group_sizes(maskable.sum(axis=1), segments))
    return slot_view(masks, maskable)


@dataclass
class Batch:
    maskable: np.ndarray  # bool [B, L]
    word_starts: np.ndarray  # bool [B, L]
    indices: np.ndarray  # distinct sequence indices [B]
    epochs: np.ndarray  # int [B], one epoch per row
    seed: int

    @property
    def n(self) -> np.ndarray:
        return self.maskable.sum(axis=1)

    def masks(self, strategy: str, mask_ratio: float = 0.15, segments: int = 4, span: SpanShape = DEFAULT_SPAN):
        return strategy_masks(
            strategy, self.seed, self.epochs, self.indices, self.maskable, mask_ratio, segments, span, self.word_starts,
            entities=self.entities if strategy in ENTITY_STRATEGIES else None,
        )  # fmt: skip

    @property
    def entities(self) -> np.ndarray:
        """Entity spans for the entity strategies: every other word of `word_starts` (int [B, L], -1 outside)."""
        word = np.cumsum(self.word_starts, axis=1)
        return np.where(word % 2 == 1, word, -1)


@st.composite
def batches(draw, max_rows: int = 6, min_length: int = 1, max_length: int = 48) -> Batch:
    """Rows with specials at random places, [CLS]/[SEP] ends or not, and right padding of a
    different length per row, so rows have different n (0 included)."""
    rows = draw(st.integers(1, max_rows))
    length = draw(st.integers(min_length, max_length))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    maskable = rng.random((rows, length)) >= draw(st.sampled_from([0.0, 0.05, 0.2, 0.5]))
    if draw(st.booleans()):
        maskable[:, 0] = maskable[:, -1] = False
    if draw(st.booleans()):
        maskable &= np.arange(length)[None, :] < rng.integers(0, length + 1, rows)[:, None]
    word_starts = rng.random((rows, length)) < draw(st.sampled_from([0.2, 0.5, 0.9, 1.0]))
    indices = rng.choice(10**6, size=rows, replace=False)
    epochs = rng.integers(0, 5, rows)
    return Batch(maskable, word_starts, indices, epochs, draw(st.integers(0, 2**31)))


span_shapes = st.builds(SpanShape, geometric_p=st.sampled_from([0.1, 0.2, 0.5, 0.9]), max_length=st.integers(1, 10))
ratios = st.floats(0.01, 1.0)
segment_counts = st.integers(1, 9)


def spec(strategy: str, replacement: dict[str, float] = REPLACEMENT, seed: int = 1, segments: int = 7) -> MaskingSpec:
    return MaskingSpec(strategy, seed, 0.15, segments, replacement, 103, 30522, SPECIAL_IDS)


def fixed_batch() -> Batch:
    rng = np.random.default_rng(0)
    maskable = maskable_rows(8, 64)
    maskable[:, [20, 41]] = False
    return Batch(maskable, rng.random((8, 64)) < 0.6, np.arange(100, 108), np.zeros(8, dtype=np.int64), 5)


# --- workflow environment and fixtures' helpers ---------------------------------------------------


def save_tiny_checkpoint(path: Path, tokenizer, dropout: float | None = None) -> Path:
    """A tiny randomly initialised BERT (1 layer, hidden 32, seed 0) saved like a pre-training
    checkpoint, with `tokenizer`; `dropout` None keeps BERT's 0.1."""
    import torch

    from fem.modeling import build_bert

    torch.manual_seed(0)
    build_bert(len(tokenizer), 32, 1, 2, 64, dropout=dropout).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


class CreatesAFile:
    """A pickle payload: unpickling it creates the file `path` (what a planted file would do
    with code; tests check that fem never unpickles what it reads)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def workflow_env(mirror: Path) -> dict[str, str]:
    """The environment of a shell with the project's environment activated (its scripts first
    on PATH, as `source .venv/bin/activate` does) and the hub mirror set."""
    return os.environ | {
        "FEM_HUB_MIRROR": str(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


# --- hub mirror -----------------------------------------------------------------------------------


def write_hub_mirror(root, hub_id: str, config: str, splits: dict[str, dict]) -> None:
    """A folder laid out like a hub dataset repository: <config>/<split>-*.parquet + README."""
    repo = root / hub_id
    (repo / config).mkdir(parents=True)
    for split, columns in splits.items():
        pd.DataFrame(columns).to_parquet(repo / config / f"{split}-00000-of-00001.parquet")
    readme = {"configs": [{"config_name": config,
                           "data_files": [{"split": s, "path": f"{config}/{s}-*"} for s in splits]}]}  # fmt: skip
    (repo / "README.md").write_text("---\n" + json.dumps(readme) + "\n---\n")


# --- pre-training runs ----------------------------------------------------------------------------


def pretrain_settings(strategy: str, **overrides) -> PretrainSettings:
    """Settings of a tiny pre-training run (1 layer, hidden 32, 4 steps of 14 rows), `overrides` on top."""
    values = dict(
        strategy=strategy, seed=3, mask_ratio=0.15, segments="auto",
        replacement={"mask": 0.8, "random": 0.1, "keep": 0.1}, span={"geometric_p": 0.2, "max_length": 10},
        steps=4, rows_per_step=14, learning_rate=1e-3, schedule="linear", warmup_steps=1, weight_decay=0.01,
        max_grad_norm=1.0, validation_blocks=8, validate_every=0, save_steps=[], log_every=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, dropout=0.1,
    )  # fmt: skip
    return PretrainSettings(**(values | overrides))


def cli_args(packed, out, values: PretrainSettings, **implementation) -> list[str]:
    args = [sys.executable, "-m", "fem", "pretrain", "--data", str(packed), "--out", str(out)]
    for key, value in {**values.__dict__, **implementation}.items():
        args += ["--" + key.replace("_", "-"), json.dumps(value)]
    return args


# --- SQuAD-format data ----------------------------------------------------------------------------


CONTEXTS = [
    "Marie Lindqvist founded the Aurora Glassworks in 1887 in the town of Karlshamn. The factory made blue "
    "bottles for pharmacies and closed in 1931 after a fire.",
    "The Vessel River rises in the Tarn Hills and flows east for 212 kilometres before it reaches the sea at "
    "Port Amsel. Its largest tributary is the Orla.",
    "Professor Ida Venn discovered the comet in March 1962 with a small telescope on the roof of the Hollis "
    "Observatory. The comet returns every 76 years.",
    "The recipe needs three eggs, two cups of flour and a pinch of salt. Bake the cake at 180 degrees for "
    "forty minutes, then let it cool on a rack.",
]
TRAIN_QA = [
    (0, "Who founded the Aurora Glassworks?", "Marie Lindqvist"),
    (0, "When was the glassworks founded?", "1887"),
    (0, "In which town was the glassworks?", "Karlshamn"),
    (0, "What did the factory make?", "blue bottles"),
    (0, "For whom were the bottles made?", "pharmacies"),
    (0, "When did the factory close?", "1931"),
    (1, "Where does the Vessel River rise?", "the Tarn Hills"),
    (1, "In which direction does the river flow?", "east"),
    (1, "How long is the river?", "212 kilometres"),
    (1, "Where does the river reach the sea?", "Port Amsel"),
    (1, "What is the largest tributary?", "the Orla"),
    (1, "Which river rises in the Tarn Hills?", "The Vessel River"),
    (2, "Who discovered the comet?", "Professor Ida Venn"),
    (2, "When was the comet discovered?", "March 1962"),
    (2, "What instrument was used?", "a small telescope"),
    (2, "Which observatory had the telescope on its roof?", "the Hollis Observatory"),
    (2, "How often does the comet return?", "every 76 years"),
    (2, "In which year was the comet found?", "1962"),
    (3, "How many eggs does the recipe need?", "three"),
    (3, "How much flour is needed?", "two cups"),
    (3, "How much salt is needed?", "a pinch"),
    (3, "At what temperature is the cake baked?", "180 degrees"),
    (3, "How long is the cake baked?", "forty minutes"),
    (3, "Where does the cake cool?", "on a rack"),
]
DEV_QA = [
    (0, "Who started the glassworks?", ["Marie Lindqvist", "Lindqvist"]),
    (0, "What colour were the bottles?", ["blue"]),
    (0, "Why did the factory close?", ["a fire", "after a fire"]),
    (1, "How far does the river flow?", ["212 kilometres", "212"]),
    (1, "Which port lies at the mouth of the river?", ["Port Amsel"]),
    (1, "Name the main tributary.", ["the Orla", "Orla"]),
    (2, "Who found the comet?", ["Ida Venn", "Professor Ida Venn"]),
    (2, "In which month was the comet found?", ["March"]),
    (2, "Where was the telescope?", ["on the roof of the Hollis Observatory"]),
    (3, "How many cups of flour are needed?", ["two"]),
    (3, "How many minutes does the cake bake?", ["forty"]),
    (3, "What is the cake left on to cool?", ["a rack"]),
]
UNANSWERABLE_QA = [
    (0, "Who bought the glassworks in 1950?"),
    (1, "How deep is the Vessel River?"),
    (2, "Who named the comet?"),
    (3, "How much sugar does the recipe need?"),
]


def rows(qa, prefix: str) -> dict:
    """SQuAD-format columns for (context index, question, answer text(s)) triples."""
    columns = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for i, (c, question, *answer) in enumerate(qa):
        texts = answer[0] if answer and isinstance(answer[0], list) else answer
        context = CONTEXTS[c]
        columns["id"].append(f"{prefix}{i}")
        columns["title"].append(f"context {c}")
        columns["context"].append(context)
        columns["question"].append(question)
        columns["answers"].append({"text": texts, "answer_start": [context.index(t) for t in texts]})
    return columns


# --- copies of the workflow, and running it ---------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ("Snakefile", "profiles", "workflow", "config", "fem")  # what a copy of the repository holds


def snakemake(workdir: Path, *args: str, mirror: Path) -> str:
    """`snakemake --cores 2 args --configfile micro.yaml` in `workdir` with the hub mirror; its
    output, asserting it succeeded."""
    env = os.environ | {
        "FEM_HUB_MIRROR": str(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        # --configfile takes several values, so it goes after the targets
        [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "micro.yaml"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    return output


def snakemake_report(workdir: Path, *targets: str, mirror: Path) -> dict[str, dict]:
    """`snakemake --report report.html targets` in `workdir`: {file: {"caption", "mime_type",
    "rule"}} of every file the page holds, read from the results it embeds."""
    snakemake(workdir, "--report", "report.html", *targets, mirror=mirror)
    page = (workdir / "report.html").read_text()
    entry = re.compile(r'"(results/[^"]+)": \{"name": "[^"]*", "filename": "[^"]*", "labels": \{[^}]*\}, '
                       r'"size": "[^"]*", "caption": "((?:[^"\\]|\\.)*)", "mime_type": "([^"]+)", '
                       r'"job_properties": \{"rule": "(\w+)"')  # fmt: skip
    return {m[1]: {"caption": m[2], "mime_type": m[3], "rule": m[4]} for m in entry.finditer(page)}


def planned(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: count}."""
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows if rule != "total"}


def copy_workflow(work: Path, extra: tuple[str, ...] = ("tests/configs",), micro: bool = True) -> Path:
    """A copy of the repository's workflow (WORKFLOW, plus `extra` paths) in `work`; with
    `micro`, tests/configs/micro.yaml also as work/micro.yaml, the config the end-to-end tests
    run (`snakemake` below passes it)."""
    for name in (*WORKFLOW, *extra):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, work / name)
    if micro:
        shutil.copy(ROOT / "tests" / "configs" / "micro.yaml", work / "micro.yaml")
    return work


def change_config(work: Path, overrides: dict) -> None:
    """Merge `overrides` into the copy's micro.yaml, key by key (as a second config file would)."""
    config = yaml.safe_load((work / "micro.yaml").read_text())
    deep_update(config, overrides)
    (work / "micro.yaml").write_text(yaml.safe_dump(config))


def run(command: list[str], cwd: Path, env: dict) -> str:
    """Run `command` in `cwd`; its output, asserting it succeeded."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}: {(done.stdout + done.stderr)[-3000:]}"
    return done.stdout + done.stderr
