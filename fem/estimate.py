"""FLOP-based estimate of what building Table 2 costs on a GPU, before running it.

Counts the model's matmul FLOPs (fem/throughput.py: forward + backward = 3 x forward, the
LM head only at the masked positions) of every pre-training run and every fine-tuning job
that Table 2 needs, and turns them into GPU-hours at an assumed model FLOPs utilisation
(MFU) of a GPU's dense bf16 peak:

    GPU-hours = FLOPs / (peak TFLOP/s x 1e12 x MFU) / 3600

Nothing here is measured: the MFU is an assumption until `benchmarks/pretrain_throughput.py`
(or a first run's metrics.json, which records tokens/s and MFU) measures it on the GPU.
Not counted: model loading, tokenization of the task data, checkpoint writing, the classifier
head (2 d^2 per example, under 1% of an encoder pass) and any job's start-up time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fem.masking import copies_per_sequence, resolve_segments
from fem.registry import get_task
from fem.throughput import PEAK_TFLOPS_BF16, encoder_forward_flops, head_forward_flops, training_flops

# Published split sizes (examples), (train, dev): GLUE from the dataset card of nyu-mll/glue on
# the Hugging Face hub (the GLUE paper's Table 1: Wang et al., 2019; MNLI dev = matched 9,815 +
# mismatched 9,832), SQuAD from rajpurkar/squad and rajpurkar/squad_v2. The five tasks of the
# offline mirror are checked against their parquet files in tests/test_one_gpu.py; that every
# GLUE and SQuAD task of fem/registry.py has one, in tests/test_registry.py.
TASK_SIZES: dict[str, tuple[int, int]] = {
    "cola": (8_551, 1_043),
    "sst2": (67_349, 872),
    "mrpc": (3_668, 408),
    "qqp": (363_846, 40_430),
    "stsb": (5_749, 1_500),
    "mnli": (392_702, 19_647),
    "qnli": (104_743, 5_463),
    "rte": (2_490, 277),
    "wnli": (635, 71),
    # SQuAD: questions; a context longer than max_length gives several windows (about 1% more
    # features than questions at 384 / 128), counted as one each
    "squad": (87_599, 10_570),
    "squad_v2": (130_319, 11_873),
}

DEFAULT_PEAK_TFLOPS = PEAK_TFLOPS_BF16["H100"]  # = the H200's: the same dense bf16 peak
# Pre-training runs the GPU fast path (bf16 autocast, torch.compile, fused AdamW): 40% is the
# assumption of the README's paper-scale estimate, not a measurement.
DEFAULT_MFU = 0.40
# Fine-tuning (fem/finetuning/harness.py) runs in float32 without autocast, and PyTorch does not use
# TF32 for matmuls by default: the H100's / H200's float32 peak, 67 TFLOP/s, is 6.8% of its
# bf16 peak. Assumed: about half of that float32 peak is reached (batches of 32, short rows).
DEFAULT_FINETUNE_MFU = 0.03


@dataclass(frozen=True)
class ModelShape:
    """A BERT encoder's shape (the attribute names of transformers' BertConfig, so that
    fem.throughput.training_flops reads it as it reads a model's config)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    vocab_size: int


@dataclass(frozen=True)
class Stage:
    """One line of the estimate: `runs` jobs of one kind, together."""

    name: str
    runs: int
    tokens: float  # training tokens of all runs (fine-tuning: padded to max_length, an upper bound)
    flops: float  # model FLOPs of all runs, evaluation included
    mfu: float  # assumed model FLOPs utilisation, a share of `peak_tflops`
    peak_tflops: float  # per-GPU dense bf16 peak, TFLOP/s

    @property
    def gpu_hours(self) -> float:
        return gpu_hours(self.flops, self.peak_tflops, self.mfu)


def gpu_hours(flops: float, peak_tflops: float, mfu: float) -> float:
    """Hours one GPU of `peak_tflops` TFLOP/s needs for `flops` FLOPs at utilisation `mfu`."""
    if not (peak_tflops > 0 and 0 < mfu <= 1):
        raise ValueError(f"expected peak_tflops > 0 and mfu in (0, 1], got {peak_tflops} and {mfu}")
    return flops / (peak_tflops * 1e12 * mfu) / 3600


def pretraining_stage(
    name: str,
    shape: ModelShape,
    runs: int,
    steps: int,
    rows_per_step: int,
    block_size: int,
    mask_ratio: float,
    validation_blocks: int = 0,
    validations: int = 0,
    mfu: float = DEFAULT_MFU,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
) -> Stage:
    """`runs` pre-training runs of `steps` steps of `rows_per_step` rows of `block_size` tokens,
    the LM head at mask_ratio x (block_size - 2) positions per row ([CLS] and [SEP] are never
    masked; fe's K copies of a row predict the same number in all), plus `validations` forward
    passes over `validation_blocks` blocks per run."""
    predictions = mask_ratio * (block_size - 2)  # per row
    rows = steps * rows_per_step
    train = training_flops(shape, rows, block_size, predictions * rows)
    validation = validations * (
        encoder_forward_flops(
            shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers, validation_blocks, block_size
        )
        + head_forward_flops(shape.hidden_size, shape.vocab_size, predictions * validation_blocks)
    )
    return Stage(name, runs, runs * rows * block_size, runs * (train + validation), mfu, peak_tflops)


def finetuning_stage(
    name: str,
    shape: ModelShape,
    runs: int,
    train_examples: int,
    epochs: int,
    length: int,
    eval_examples: int,
    learning_rates: int = 1,
    mfu: float = DEFAULT_FINETUNE_MFU,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
) -> Stage:
    """`runs` fine-tuning jobs, each training once per learning rate for `epochs` epochs over
    `train_examples` examples and then predicting `eval_examples` dev examples, every example
    counted at `length` tokens (max_length: fem pads a batch to its longest example, so this
    is an upper bound)."""
    train = training_flops(shape, epochs * train_examples, length, 0)  # no LM head: a classifier
    evaluation = encoder_forward_flops(
        shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers, eval_examples, length
    )
    per_rate = train + evaluation
    tokens = runs * learning_rates * epochs * train_examples * length
    return Stage(name, runs, tokens, runs * learning_rates * per_rate, mfu, peak_tflops)


def table2_stages(
    config: dict[str, Any],
    vocab_size: int,
    mfu: float = DEFAULT_MFU,
    finetune_mfu: float = DEFAULT_FINETUNE_MFU,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
) -> list[Stage]:
    """The stages of Table 2 under a merged, checked config (the CLI's edge hands it over):
    one per pre-training strategy (pretrain seeds runs each; with pretrain.match: sequences a
    K-copy strategy does K x the rows) and one per fine-tuning task (strategies x pretrain
    seeds x finetune seeds jobs). ValueError for a task without a published size."""
    pre, model, finetune = config["pretrain"], config["model"], config["finetune"]
    shape = ModelShape(model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"], vocab_size)
    seeds, finetune_seeds = len(config["seeds"]["pretrain"]), len(config["seeds"]["finetune"])
    block_size = config["tokenizer"]["block_size"]
    segments = resolve_segments(pre["mask_ratio"], pre["segments"])
    validated = set(range(0, pre["steps"] + 1, pre["validate_every"] or pre["steps"]))
    validations = len(validated | set(pre["save_steps"]) | {pre["steps"]})
    stages = []
    for strategy in pre["strategies"]:
        rows = pre["rows_per_step"]
        if pre.get("match", "rows") == "sequences":
            rows *= copies_per_sequence(strategy, segments)
        stages.append(pretraining_stage(
            f"pretrain {strategy}", shape, seeds, pre["steps"], rows, block_size, pre["mask_ratio"],
            pre["validation_blocks"], validations, mfu, peak_tflops,
        ))  # fmt: skip
    jobs = len(pre["strategies"]) * seeds * finetune_seeds
    for task in finetune["tasks"]:
        if task not in TASK_SIZES:
            raise ValueError(f"finetune.tasks: no published size for {task!r}; known: {', '.join(TASK_SIZES)}")
        train, dev = TASK_SIZES[task]
        keys = finetune["squad"] if get_task(task).is_qa else finetune
        if keys["max_train_examples"] is not None:
            train = min(train, keys["max_train_examples"])
        if keys["max_eval_examples"] is not None:
            dev = min(dev, keys["max_eval_examples"])
        stages.append(finetuning_stage(
            f"finetune {task}", shape, jobs, train, keys["epochs"], keys["max_length"], dev,
            len(keys["learning_rates"]), finetune_mfu, peak_tflops,
        ))  # fmt: skip
    return stages


def format_table(stages: list[Stage]) -> str:
    """A Markdown table: one row per stage and a total."""
    lines = ["| stage | runs | tokens | FLOPs | MFU | GPU-hours |", "|---|---:|---:|---:|---:|---:|"]
    for s in stages:
        lines.append(f"| {s.name} | {s.runs} | {s.tokens:.3g} | {s.flops:.3g} | {s.mfu:.0%} | {s.gpu_hours:.2f} |")
    runs, tokens = sum(s.runs for s in stages), sum(s.tokens for s in stages)
    flops, hours = sum(s.flops for s in stages), sum(s.gpu_hours for s in stages)
    lines.append(f"| **total** | {runs} | {tokens:.3g} | {flops:.3g} | | **{hours:.2f}** |")
    return "\n".join(lines)
