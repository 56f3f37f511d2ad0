"""Per-mask gradients of a BERT's masked-LM loss, batched with torch.func.

For a sequence x and a mask M (a set of positions), g(x, M) is the gradient of the mean
cross-entropy over M of the model's predictions when every position of M is replaced by
[MASK]. The 80/10/10 corruption is left out on purpose: the only randomness is then which
positions are masked, the quantity the paper's theory is about.

`vmap(grad(row_loss))` computes the gradients of many (x, M) rows in one batched call.
Rows mask different numbers of positions (fe groups are floor or ceil of n/K), so each
row's positions are padded to the chunk's largest count with weight 0 (static shapes).

Memory stays bounded in two ways:
  parameters       "without_word_embeddings" (default): every parameter but the word
                   embedding matrix, which is tied to the output layer and has 30522 x H
                   entries, mostly zero per mask; or "all".
  projection_dim   a fixed, seeded count sketch (Charikar et al., 2002) to that many
                   dimensions: coordinate i goes to bucket h(i) with sign s(i). It is a
                   linear map whose inner products are unbiased for the original ones, so
                   covariances of projected gradients estimate those of the full ones.
                   None keeps the full gradient of `parameters`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from fem.masking import resolve_segments
from fem.modeling import sparse_mlm_loss
from fem.settings import VarianceSettings
from fem.tokenization import load_blocks, load_meta
from fem.variance import analyse

PARAMETER_SUBSETS = ("without_word_embeddings", "all")
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
TIED_DECODER = "predictions.decoder.weight"  # inside model.cls


def gradient_parameter_names(model: torch.nn.Module, subset: str) -> list[str]:
    """Names of the parameters whose gradient is taken, in model order."""
    if subset not in PARAMETER_SUBSETS:
        raise ValueError(f"unknown parameter subset {subset!r}; expected one of {', '.join(PARAMETER_SUBSETS)}")
    names = [name for name, _ in model.named_parameters()]  # tied weights are listed once
    return names if subset == "all" else [name for name in names if name != WORD_EMBEDDINGS]


class CountSketch:
    """A fixed random linear map R^size_in -> R^size_out: out[h(i)] += s(i) * x[i]."""

    def __init__(self, size_in: int, size_out: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.size_out = size_out
        self.bucket = torch.randint(size_out, (size_in,), generator=generator)
        self.sign = torch.randint(0, 2, (size_in,), generator=generator).to(torch.float32) * 2 - 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [R, size_in] -> float [R, size_out], on x's device."""
        out = torch.zeros(x.shape[0], self.size_out, dtype=x.dtype, device=x.device)
        return out.index_add_(1, self.bucket.to(x.device), x * self.sign.to(x.device, x.dtype))


class MaskGradients:
    """g(x, M) for a BertForMaskedLM, as a callable (sequences, masks) -> gradients.

    The model is put in eval mode (no dropout: masks are the only randomness).
    """

    def __init__(
        self,
        model,
        mask_token_id: int,
        parameters: str = "without_word_embeddings",
        projection_dim: int | None = 4096,
        projection_seed: int = 0,
        chunk_rows: int = 32,
    ):
        self.model = model.eval()
        self.mask_token_id = mask_token_id
        self.chunk_rows = chunk_rows
        self.names = gradient_parameter_names(model, parameters)
        everything = dict(model.named_parameters()) | dict(model.named_buffers())
        self.trained = {name: everything[name].detach() for name in self.names}
        self.fixed = {name: value.detach() for name, value in everything.items() if name not in self.trained}
        self.size = sum(value.numel() for value in self.trained.values())
        self.sketch = CountSketch(self.size, projection_dim, projection_seed) if projection_dim else None
        self.dimension = projection_dim or self.size
        self.device = next(iter(self.trained.values())).device  # rows go where the model is (CPU or GPU)
        self._row_gradients = vmap(grad(self._row_loss), in_dims=(None, 0, 0, 0, 0))

    def _row_loss(self, trained, input_ids, positions, targets, weights):
        """Weighted cross-entropy of one row: input_ids [L], positions/targets/weights [P]."""
        values = trained | self.fixed
        encoder = {k.removeprefix("bert."): v for k, v in values.items() if k.startswith("bert.")}
        head = {k.removeprefix("cls."): v for k, v in values.items() if k.startswith("cls.")}
        head[TIED_DECODER] = values[WORD_EMBEDDINGS]  # the output layer is the embedding matrix
        hidden = functional_call(self.model.bert, encoder, (input_ids[None],)).last_hidden_state[0]
        logits = functional_call(self.model.cls, head, (hidden.index_select(0, positions),))  # [P, V]
        return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()

    @torch.no_grad()
    def __call__(self, sequences: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Gradients of R rows: sequences int [R, L], masks bool [R, L] (at least one True
        per row) -> float64 [R, D], D = projection_dim or the size of the parameter subset."""
        sequences, masks = np.asarray(sequences, dtype=np.int64), np.asarray(masks, dtype=bool)
        counts = masks.sum(axis=1)
        if (counts == 0).any():
            raise ValueError("every row needs at least one masked position")
        out = np.empty((len(sequences), self.dimension))
        for start in range(0, len(sequences), self.chunk_rows):
            rows = slice(start, start + self.chunk_rows)
            out[rows] = self._chunk(sequences[rows], masks[rows], counts[rows])
        return out

    def _chunk(self, sequences: np.ndarray, masks: np.ndarray, counts: np.ndarray) -> np.ndarray:
        width = int(counts.max())
        # Each row's masked positions in order, padded with position 0 at weight 0.
        order = np.argsort(~masks, axis=1, kind="stable")[:, :width]
        valid = np.arange(width)[None, :] < counts[:, None]
        positions = np.where(valid, order, 0)
        targets = np.take_along_axis(sequences, positions, axis=1)
        weights = valid / counts[:, None]
        corrupted = np.where(masks, self.mask_token_id, sequences)
        with torch.enable_grad():
            rows = (corrupted, positions, targets, weights.astype(np.float32))
            grads = self._row_gradients(self.trained, *(torch.from_numpy(a).to(self.device) for a in rows))
        flat = torch.cat([grads[name].reshape(len(sequences), -1) for name in self.names], dim=1)
        if self.sketch is not None:
            flat = self.sketch(flat)
        return flat.double().cpu().numpy()


def loop_mask_gradients(model, mask_token_id: int, names: list[str], sequences: np.ndarray, masks: np.ndarray):
    """The plain reference: one forward and backward per row, gradients of `names` only.
    Returns float64 [R, D] in the layout of MaskGradients without projection."""
    model.eval()
    parameters = dict(model.named_parameters())
    wanted = [parameters[name] for name in names]
    device = wanted[0].device
    out = []
    for sequence, mask in zip(np.asarray(sequences, dtype=np.int64), np.asarray(masks, dtype=bool), strict=True):
        input_ids = torch.from_numpy(np.where(mask, mask_token_id, sequence))[None].to(device)
        masked, targets = torch.from_numpy(mask)[None].to(device), torch.from_numpy(sequence[mask]).to(device)
        loss = sparse_mlm_loss(model, input_ids, masked, targets)
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, wanted)]).double().cpu().numpy())
    return np.stack(out)


def analyse_checkpoint(
    checkpoint: str | Path, data_dir: str | Path, settings: VarianceSettings, threads: int = 1, chunk_rows: int = 32
) -> dict:
    """fem.variance.analyse on a saved BertForMaskedLM and the held-out blocks of `data_dir`
    (written by `fem tokenize`): the first `settings.sequences` rows of validation.npy."""
    from transformers import AutoModelForMaskedLM

    torch.set_num_threads(threads)
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    validation = load_blocks(data_dir, "validation", meta, settings.sequences, "variance.sequences")
    pool = np.asarray(validation[: settings.sequences], dtype=np.int64)
    maskable = ~np.isin(pool, meta["unmaskable_token_ids"])
    # Eager attention: vmap has no batching rule for the fused CPU attention kernel.
    from fem.lichee import register as register_model_classes

    register_model_classes()  # a LICHEE model loads as one (fem/lichee.py)
    model = AutoModelForMaskedLM.from_pretrained(str(checkpoint), attn_implementation="eager", use_safetensors=True)
    gradients = MaskGradients(
        model, meta["mask_token_id"], settings.parameters, settings.projection_dim, settings.seed, chunk_rows
    )
    print(f"{checkpoint}: gradients of {gradients.size:,} parameters ({settings.parameters})"
          f"{f', count-sketched to {gradients.dimension}' if gradients.sketch else ''}", flush=True)  # fmt: skip
    result = analyse(
        gradients, pool, maskable, settings.mask_ratio, resolve_segments(settings.mask_ratio, settings.segments),
        settings.hamming_sequences, settings.pairs_per_intersection, settings.replicates, settings.bootstrap,
        settings.seed, progress=lambda line: print(line, flush=True),
    )  # fmt: skip
    result["gradient_size"], result["dimension"] = gradients.size, gradients.dimension
    result["parameters"] = settings.parameters
    return result


def write_checkpoint_analysis(
    checkpoint: str | Path, data_dir: str | Path, settings: VarianceSettings, out: str | Path, threads: int = 1,
    chunk_rows: int = 32,
) -> dict:  # fmt: skip
    """analyse_checkpoint, with the checkpoint's identity (fem.checkpointing.checkpoint_identity:
    strategy, seed, step, final, validation loss) under "run", written to out/variance.json."""
    from fem.checkpointing import checkpoint_identity

    run = checkpoint_identity(checkpoint)  # a folder without its identity stops here, before any work
    result = {"run": run} | analyse_checkpoint(checkpoint, data_dir, settings, threads, chunk_rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variance.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
