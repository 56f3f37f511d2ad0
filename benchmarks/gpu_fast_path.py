"""GPU fast path: BERT-base pre-training steps with the fast path off and on, in one process,
then (with two or more GPUs) the fast path under 2-process torchrun; with --hugging-face also
the Hugging Face reference (benchmarks/pretrain_throughput.py's Trainer recipe) with bf16 and
torch.compile, its dense LM head counted in its MFU.

  off: float32, eager attention, foreach AdamW, pageable host memory, no compilation
  on:  bf16 autocast, SDPA attention, fused AdamW, pinned host memory, torch.compile

Each run is `fem.pretraining.pretrain` on the same packed blocks (sequence length 128) and
seed. Throughput and model FLOPs utilisation are measured on the steps after the first
--warmup ones (compilation and allocator warm-up happen there), from the per-step wall
times in train_log.json. It prints one line per run and the on/off ratio:

    python benchmarks/gpu_fast_path.py                   # BERT-base, 40 steps of 280 rows
    python benchmarks/gpu_fast_path.py --size tiny --steps 6 --rows 14   # CPU smoke run
    python benchmarks/gpu_fast_path.py --config config/config.yaml config/one-gpu.yaml --only on
                                            # the model and step of a config (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from pretrain_throughput import packed_data  # noqa: E402
from transformers import BertConfig  # noqa: E402

from fem.pretraining import pretrain  # noqa: E402
from fem.settings import PretrainImplementation, PretrainSettings  # noqa: E402
from fem.throughput import mfu, peak_flops, training_flops  # noqa: E402

SHAPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
}
OFF = {"bf16": False, "compile": False, "attention": "eager", "fused_adamw": False, "pin_memory": False}
ON = {"bf16": True, "compile": True, "attention": "sdpa", "fused_adamw": True, "pin_memory": True}


def steady_state(out: Path, meta: dict, shape: dict, warmup: int, processes: int, peak: float | None):
    """(tokens/s, MFU) over the steps after `warmup`, from out/train_log.json."""
    log = json.loads((out / "train_log.json").read_text())
    length = meta["block_size"]
    config = BertConfig(vocab_size=meta["vocab_size"], **shape)
    steps = range(warmup, len(log["seconds"]))
    seconds = sum(log["seconds"][i] for i in steps)
    tokens = sum(log["rows"][i] * length for i in steps)
    flops = sum(training_flops(config, log["rows"][i], length, log["predictions"][i]) for i in steps)
    return tokens / seconds, mfu(flops, seconds, processes, peak)


def hugging_face_steady_state(data: Path, out: Path, settings: PretrainSettings, meta: dict, shape: dict,
                              warmup: int, peak: float | None):  # fmt: skip
    """(tokens/s, MFU) of the Hugging Face reference (pretrain_throughput.run_hugging_face) with bf16
    and torch.compile, timed between the ends of optimizer steps after `warmup` (collation included)."""
    import transformers
    from pretrain_throughput import run_hugging_face

    ends = []

    class StepEnds(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    class TimedTrainer(transformers.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, callbacks=[StepEnds()], **kwargs)

    with mock.patch.object(transformers, "Trainer", TimedTrainer):  # run_hugging_face imports it when called
        run_hugging_face(data, out, settings, 1, bf16=True, compile=True)
    steps, length = len(ends) - warmup, meta["block_size"]
    config = BertConfig(vocab_size=meta["vocab_size"], **shape)
    flops = steps * training_flops(config, settings.rows_per_step, length, settings.rows_per_step * length)  # dense
    seconds = ends[-1] - ends[warmup - 1]
    return steps * settings.rows_per_step * length / seconds, mfu(flops, seconds, 1, peak)


def config_shape(paths: list[str]) -> tuple[dict, dict]:
    """(model shape, pretrain keys) of config files merged in order (later keys win), e.g. one-gpu.yaml."""
    from fem.config import deep_update, load_yaml

    config: dict = {}
    for path in paths:
        deep_update(config, load_yaml(path))
    return {key: config["model"][key] for key in SHAPES["base"]}, config["pretrain"]


def torchrun_flags(settings: PretrainSettings, switches: dict) -> list[str]:
    values = settings.__dict__ | switches | {"resume_every": 0, "live_metrics": False}
    return [item for key, value in values.items() for item in ("--" + key.replace("_", "-"), json.dumps(value))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder written by `fem tokenize` (default: data/tokenized/bbc or build one)")
    parser.add_argument("--size", choices=sorted(SHAPES), default="base")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the measurement")
    parser.add_argument("--rows", type=int, default=280, help="rows per optimizer step (global batch)")
    parser.add_argument("--strategy", default="random", help="masking strategy (fe: 40 sequences x 7 copies)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="per-device peak (default: known GPUs)")
    parser.add_argument("--only", choices=["off", "on"], help="run the fast path off or on only")
    parser.add_argument("--hugging-face", action="store_true", help="also the Hugging Face reference, bf16 + compile")
    parser.add_argument("--config", nargs="+", help="config files: their model shape, rows and learning rate")
    parser.add_argument("--json", help="write {run: {tokens_per_second, mfu}} to this file")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(device, args.peak_tflops)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    shape, learning_rate = SHAPES[args.size], 1e-4
    if args.config:
        shape, pretrain_keys = config_shape(args.config)
        args.size = "+".join(Path(path).stem for path in args.config)  # printed as BERT-config+one-gpu
        learning_rate = pretrain_keys["learning_rate"]
        args.rows = args.rows if args.rows != parser.get_default("rows") else pretrain_keys["rows_per_step"]
    settings = PretrainSettings(
        strategy=args.strategy, seed=1, mask_ratio=0.15, segments="auto",
        replacement={"mask": 0.8, "random": 0.1, "keep": 0.1}, span={"geometric_p": 0.2, "max_length": 10},
        steps=args.steps, rows_per_step=args.rows, learning_rate=learning_rate, schedule="linear",
        warmup_steps=args.warmup, weight_decay=0.01, max_grad_norm=1.0, validation_blocks=8, validate_every=0,
        save_steps=[], log_every=10, dropout=0.1, **shape,
    )  # fmt: skip
    print(f"device {name} x {torch.cuda.device_count() if device.type == 'cuda' else 1}, peak "
          f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}; BERT-{args.size}, {args.steps} steps of "
          f"{args.rows} rows ({args.strategy}), measured after step {args.warmup}", flush=True)  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = packed_data(args.data, work)
        meta = json.loads((data / "meta.json").read_text())
        for label, switches in (("fast path off", OFF), ("fast path on", ON)):
            if args.only and label != f"fast path {args.only}":
                continue
            with open(work / f"{label}.log", "w") as log, contextlib.redirect_stdout(log):
                implementation = PretrainImplementation(resume_every=0, live_metrics=False, **switches)
                pretrain(data, work / label, settings, implementation)
            results[label] = steady_state(work / label, meta, shape, args.warmup, 1, peak)
        if device.type == "cuda" and torch.cuda.device_count() >= 2:
            out = work / "torchrun"
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            command = [*launcher, "-m", "fem", "pretrain", "--data", str(data), "--out", str(out)]
            command += torchrun_flags(settings, ON)
            done = subprocess.run(command, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            results["fast path on, 2 GPUs (torchrun)"] = steady_state(out, meta, shape, args.warmup, 2, peak)
        if args.hugging_face:
            results["Hugging Face, bf16 + compile"] = hugging_face_steady_state(
                data, work / "hf", settings, meta, shape, args.warmup, peak
            )
    for label, (tokens_per_second, utilisation) in results.items():
        shown = f"{utilisation:.1%}" if utilisation is not None else "n/a (unknown peak)"
        print(f"{label:<34} {tokens_per_second:14,.0f} tokens/s   MFU {shown}", flush=True)
    if args.json:
        runs = {label: {"tokens_per_second": tps, "mfu": share} for label, (tps, share) in results.items()}
        record = {"device": name, "size": args.size, "rows": args.rows, "runs": runs}
        Path(args.json).write_text(json.dumps(record) + "\n")
    if not args.only:
        ratio = results["fast path on"][0] / results["fast path off"][0]
        print(f"speed-up of the fast path (on / off, same device): {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
