"""The pre-training loop: a plain loop you can read top to bottom.

Data order and masks are pure functions of (seed, epoch, sequence index): step s takes
sequences s*S .. s*S+S-1 of an endless stream in which epoch e is a seeded permutation of
all training blocks. Model initialisation and dropout use torch's global seed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fem.collation import MaskingSpec, mask_rows
from fem.masking import resolve_segments
from fem.modeling import build_bert, default_device, sparse_mlm_loss
from fem.optimization import linear_schedule, param_groups
from fem.settings import PretrainSettings

VALIDATION_SEED = 12345  # the fixed masks every strategy is evaluated on
VALIDATION_BATCH = 64  # blocks per forward pass during validation


def sequence_schedule(
    step: int, per_step: int, n_blocks: int, seed: int, cache: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, block indices) of the `per_step` sequences of optimizer step `step`.

    Sequence number c = step * per_step + j of the endless stream is block
    permutation_e[c % n_blocks] of epoch e = c // n_blocks, where permutation_e is seeded by
    (seed, e). `cache` keeps the permutations of the epochs in use between calls.
    """
    counter = step * per_step + np.arange(per_step)
    epochs, positions = counter // n_blocks, counter % n_blocks
    needed = {int(e) for e in np.unique(epochs)}
    for epoch in set(cache) - needed:
        del cache[epoch]
    for epoch in needed - set(cache):
        cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    indices = np.empty(per_step, dtype=np.int64)
    for epoch in needed:
        in_epoch = epochs == epoch
        indices[in_epoch] = cache[epoch][positions[in_epoch]]
    return epochs, indices


@torch.no_grad()
def validation_loss(model, blocks: np.ndarray, mask_ratio: float, special_ids, meta: dict) -> float:
    """Mean MLM loss (nats per masked token) over fixed masks of `blocks` (int [N, L]): a
    random masking at `mask_ratio` with VALIDATION_SEED and 80/10/10 corruption, identical
    for every strategy, so the numbers compare across runs."""
    spec = MaskingSpec(
        "random", VALIDATION_SEED, mask_ratio, 1, {"mask": 0.8, "random": 0.1, "keep": 0.1},
        meta["mask_token_id"], meta["vocab_size"], tuple(special_ids),
    )  # fmt: skip
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(blocks), VALIDATION_BATCH):
        idx = np.arange(start, min(start + VALIDATION_BATCH, len(blocks)))
        rows = mask_rows(blocks[idx], np.zeros(len(idx), dtype=np.int64), idx, spec).to(device)
        loss = sparse_mlm_loss(model, rows.input_ids, rows.masked, rows.targets)
        total += loss.item() * len(rows.targets)
        count += len(rows.targets)
    model.train()
    return total / count


def pretrain(data_dir: str | Path, out_dir: str | Path, settings: PretrainSettings, threads: int = 1) -> dict:
    """Pre-train a BERT from scratch on the packed blocks in `data_dir`.

    Writes out_dir/model (save_pretrained, with the tokenizer), out_dir/train_log.json
    (loss per step) and out_dir/metrics.json; returns the metrics.
    """
    torch.set_num_threads(threads)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    train = np.load(data_dir / "train.npy", mmap_mode="r")
    validation = np.load(data_dir / "validation.npy", mmap_mode="r")[: settings.validation_blocks]
    block_size = train.shape[1]
    special = tuple(meta["unmaskable_token_ids"])
    spec = MaskingSpec(
        strategy=settings.strategy,
        seed=settings.seed,
        mask_ratio=settings.mask_ratio,
        segments=resolve_segments(settings.mask_ratio, settings.segments),
        replacement=settings.replacement,
        mask_token_id=meta["mask_token_id"],
        vocab_size=meta["vocab_size"],
        special_ids=special,
    )
    per_step = spec.sequences_per_step(settings.rows_per_step)

    torch.manual_seed(settings.seed)
    model = build_bert(
        vocab_size=meta["vocab_size"],
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=max(512, block_size),
        pad_token_id=meta["pad_token_id"],
    )
    device = default_device()
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay),
        lr=settings.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_schedule(s, settings.warmup_steps, settings.steps)
    )
    print(
        f"pretrain {settings.strategy} seed {settings.seed}: {len(train)} train blocks of {block_size}, "
        f"K={spec.segments}, per step {per_step} sequences / {settings.rows_per_step} rows, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, device {device}",
        flush=True,
    )
    initial_loss = validation_loss(model, validation, settings.mask_ratio, special, meta)

    log = {"step": [], "loss": [], "lr": [], "sequences": [], "rows": [], "predictions": []}
    epoch_cache: dict = {}
    start = last = time.perf_counter()
    for step in range(settings.steps):
        epochs, indices = sequence_schedule(step, per_step, len(train), settings.seed, epoch_cache)
        rows = mask_rows(train[indices], epochs, indices, spec).to(device)
        loss = sparse_mlm_loss(model, rows.input_ids, rows.masked, rows.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        optimizer.step()
        scheduler.step()

        log["step"].append(step + 1)
        log["loss"].append(loss.item())
        log["lr"].append(lr)
        log["sequences"].append(rows.sequences)
        log["rows"].append(len(rows.input_ids))
        log["predictions"].append(len(rows.targets))
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            now = time.perf_counter()
            steps_done = (step % settings.log_every) + 1
            tokens_per_s = steps_done * rows.input_ids.numel() / (now - last)
            eta = (now - start) / (step + 1) * (settings.steps - step - 1)
            print(
                f"step {step + 1}/{settings.steps} loss {np.mean(log['loss'][-steps_done:]):.4f} "
                f"lr {log['lr'][-1]:.2e} seq/rows/preds {rows.sequences}/{len(rows.input_ids)}/"
                f"{len(rows.targets)} tokens/s {tokens_per_s:,.0f} eta {eta:.0f}s",
                flush=True,
            )
            last = now
    wall = time.perf_counter() - start
    final_loss = validation_loss(model, validation, settings.mask_ratio, special, meta)
    print(f"validation MLM loss {initial_loss:.4f} -> {final_loss:.4f} ({wall:.1f}s)", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir / "model"))
    if (data_dir / "tokenizer").is_dir():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(data_dir / "tokenizer")).save_pretrained(str(out_dir / "model"))
    (out_dir / "train_log.json").write_text(json.dumps(log) + "\n")
    tokens = settings.steps * settings.rows_per_step * block_size
    metrics = {
        "strategy": settings.strategy,
        "seed": settings.seed,
        "segments": spec.segments,
        "validation_mlm_loss": final_loss,
        "validation_mlm_loss_init": initial_loss,
        "validation_blocks": len(validation),
        "validation_perplexity": math.exp(final_loss),
        "final_train_loss": float(np.mean(log["loss"][-settings.log_every :])),
        "train_tokens": tokens,
        # rows are matched across strategies; predictions differ slightly by design
        # (random: round(p*n) per row; fe: n/K per row, with K = round(1/p))
        "predictions_per_step": float(np.mean(log["predictions"])),
        "wall_seconds": wall,
        "tokens_per_second": tokens / wall,
        "settings": asdict(settings),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
