"""Per-mask gradients: torch.func (vmap of grad) against a plain loop, in one process.

Both paths compute the gradient of the same BERT's masked-LM loss for the same rows (a
sequence and one of its fully-explored masks), for the same parameters (all but the word
embeddings, as `fem variance` by default), on the same machine and thread count:

  (a) vmap: fem.mask_gradients.MaskGradients, `chunk_rows` rows per batched call;
  (b) loop: fem.mask_gradients.loop_mask_gradients, one forward and backward per row.

It checks that the two agree, then prints both times and the ratio loop / vmap, for the
default config's model (2 layers, hidden 128) and for a smaller one (1 layer, hidden 32)
where per-operation overhead, not arithmetic, dominates.

    python benchmarks/variance_speed.py
    python benchmarks/variance_speed.py --rows 448 --chunk-rows 64 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from fem.mask_gradients import MaskGradients, gradient_parameter_names, loop_mask_gradients  # noqa: E402
from fem.masking import strategy_masks  # noqa: E402
from fem.modeling import build_bert  # noqa: E402

VOCAB, MASK_ID, LENGTH, K = 30522, 103, 128, 7
SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def rows(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` rows: count/K random sequences ([CLS] ... [SEP]), each with its K fe masks."""
    sequences_needed = -(-count // K)
    rng = np.random.default_rng(seed)
    sequences = rng.integers(1000, VOCAB, size=(sequences_needed, LENGTH))
    sequences[:, 0], sequences[:, -1] = 101, 102
    maskable = np.ones_like(sequences, dtype=bool)
    maskable[:, [0, -1]] = False
    masks = strategy_masks("fe", seed, 0, np.arange(sequences_needed), maskable, 0.15, K)
    return np.repeat(sequences, K, axis=0)[:count], masks.reshape(-1, LENGTH)[:count]


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(name: str, model_shape: dict, count: int, chunk_rows: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_bert(VOCAB, **model_shape).to(device)
    model.config._attn_implementation = "eager"  # vmap has no batching rule for the fused CPU kernel
    sequences, masks = rows(count)
    batched = MaskGradients(model, MASK_ID, projection_dim=None, chunk_rows=chunk_rows)
    names = gradient_parameter_names(model, "without_word_embeddings")
    batched(sequences[:chunk_rows], masks[:chunk_rows])  # warm-up (allocations, dispatch caches)
    loop_mask_gradients(model, MASK_ID, names, sequences[:2], masks[:2])
    synchronize(device)

    start = time.perf_counter()
    from_vmap = batched(sequences, masks)
    vmap_seconds = time.perf_counter() - start
    start = time.perf_counter()
    from_loop = loop_mask_gradients(model, MASK_ID, names, sequences, masks)
    loop_seconds = time.perf_counter() - start

    difference = np.abs(from_vmap - from_loop).max() / np.abs(from_loop).max()
    print(f"{name}: {batched.size:,} parameters, {count} rows of {LENGTH} tokens, {int(masks[0].sum())} masked each")
    print(f"  vmap of grad ({chunk_rows} rows per call): {vmap_seconds:8.2f} s  ({count / vmap_seconds:6.1f} rows/s)")
    print(f"  loop, one backward per row:       {loop_seconds:8.2f} s  ({count / loop_seconds:6.1f} rows/s)")
    print(f"  ratio loop / vmap: {loop_seconds / vmap_seconds:.2f}   (max relative difference {difference:.1e})")
    if difference > 1e-4:
        raise SystemExit(f"{name}: the two paths disagree (relative difference {difference:.1e})")
    return loop_seconds / vmap_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=224, help="per-mask gradients per path")
    parser.add_argument("--chunk-rows", type=int, default=32, help="rows per vmap call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["model"]
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device.type}")
    compare("default config model", default, args.rows, args.chunk_rows, device)
    compare("small model", SMALL, args.rows, args.chunk_rows, device)


if __name__ == "__main__":
    main()
