"""Turn packed blocks into masked training rows for one optimizer step.

What a step holds is set by `match` (the config's pretrain.match), for a step size of
`rows_per_step`:
- "rows" (compute matched, DESIGN §5): a step always has rows_per_step rows. The one-copy
  strategies (random, span, whole_word) fill them with rows_per_step distinct sequences; the
  K-copy strategies (random_k, fe, fe_contiguous, fe_span) with rows_per_step/K sequences.
- "sequences" (data matched): every strategy takes rows_per_step distinct sequences, so a
  K-copy strategy does K x rows_per_step rows, K times the compute of a one-copy strategy.
Either way a K-copy strategy repeats each sequence K times with its K masks, so all K
copies of a sequence land in the same step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fem.augmented import augmented_rows, factorization_steps
from fem.block_masking import BlockShape
from fem.masking import SpanShape, copies_per_sequence, corrupt, masked_count, resolve_segments, strategy_masks
from fem.registry import ENTITY_STRATEGIES
from fem.settings import PretrainSettings

# objectives whose model input is the corrupted row itself (mass adds a decoder: fem/mass.py; lichee
# fuses its embeddings: fem/lichee.py; kgplm reads it twice: fem/kgplm.py); fem.augmented's make longer rows
PLAIN_ROW_OBJECTIVES = ("mlm", "mass", "lichee", "kgplm")
MATCHES = ("rows", "sequences")  # what pretrain.match holds equal across strategies: rows or distinct sequences


@dataclass
class MaskedRows:
    """One step's model input. R rows of L tokens, M masked positions in total. An augmented
    objective (fem/augmented.py) adds position ids and an attention mask; mlm has neither."""

    input_ids: torch.Tensor  # int64 [R, L], corrupted
    masked: torch.Tensor  # bool [R, L], True where the loss is computed
    targets: torch.Tensor  # int64 [M], original ids at masked positions, row-major order
    sequences: int  # distinct sequences in the step
    position_ids: torch.Tensor | None = None  # int64 [R, L]; None: 0..L-1
    attention: torch.Tensor | None = None  # bool [R, L, L], True where token i may attend to j; None: all

    def _map(self, tensor_fn) -> MaskedRows:
        optional = [None if t is None else tensor_fn(t) for t in (self.position_ids, self.attention)]
        return MaskedRows(tensor_fn(self.input_ids), tensor_fn(self.masked), tensor_fn(self.targets), self.sequences,
                          *optional)  # fmt: skip

    def to(self, device: torch.device, non_blocking: bool = False) -> MaskedRows:
        """The same rows with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> MaskedRows:
        """The same rows in page-locked host memory, so `.to(cuda, non_blocking=True)` copies
        asynchronously (needs CUDA)."""
        return self._map(lambda t: t.pin_memory())

    def split(self, parts: int) -> list[MaskedRows]:
        """The rows cut into at most `parts` consecutive, non-empty micro-batches (for gradient
        accumulation). `sequences` is counted in the first part, so the parts add up to the whole."""
        counts = self.masked.sum(dim=1)
        out = []
        for chunk in torch.arange(len(self.input_ids)).tensor_split(parts):
            if len(chunk) == 0:  # more parts than rows
                continue
            lo, hi = int(chunk[0]), int(chunk[-1]) + 1
            first, last = int(counts[:lo].sum()), int(counts[:hi].sum())
            optional = [None if t is None else t[lo:hi] for t in (self.position_ids, self.attention)]
            out.append(MaskedRows(self.input_ids[lo:hi], self.masked[lo:hi], self.targets[first:last], 0, *optional))
        out[0].sequences = self.sequences
        return out


@dataclass(frozen=True)
class MaskingSpec:
    """Everything that decides a mask, apart from (epoch, sequence index)."""

    strategy: str  # one of fem.registry.STRATEGIES
    seed: int
    mask_ratio: float
    segments: int  # K
    replacement: dict[str, float]
    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    span: SpanShape = field(default_factory=SpanShape)
    block: BlockShape = field(default_factory=BlockShape)
    objective: str = "mlm"  # one of fem.registry.OBJECTIVES
    fragment_ratio: float = 0.5  # strategy fragment: share of a row's maskable tokens in its fragment (MASS)
    pad_token_id: int = 0  # pads augmented rows with fewer predictions than the longest

    @property
    def copies(self) -> int:
        """Rows per sequence: K for the multi-copy strategies, else 1; pmlm puts a sequence's K
        fully-explored groups in one row, as its K factorization steps."""
        return 1 if self.objective == "pmlm" else copies_per_sequence(self.strategy, self.segments)

    def sequences_per_step(self, rows: int) -> int:
        """Distinct sequences a step of `rows` rows takes under this strategy."""
        return rows // self.copies

    def step_size(self, rows_per_step: int, match: str) -> tuple[int, int]:
        """(distinct sequences, rows) of one optimizer step (all processes) under `match`
        (one of MATCHES; see the module docstring)."""
        if match == "rows":
            sequences = self.sequences_per_step(rows_per_step)
        elif match == "sequences":
            sequences = rows_per_step
        else:
            raise ValueError(f"unknown match {match!r}; expected one of {', '.join(MATCHES)}")
        return sequences, sequences * self.copies


def mask_rows(
    blocks: np.ndarray,
    epochs: np.ndarray,
    indices: np.ndarray,
    spec: MaskingSpec,
    word_starts: np.ndarray | None = None,
) -> MaskedRows:
    """Mask and corrupt `blocks` (int [S, L], sequence indices `indices`, epochs `epochs`).

    Returns S*C rows, sequence-major (the C copies of a sequence are adjacent); C = spec.copies.
    `word_starts` (bool [S, L]) is needed by whole_word; salient_span and fe_salient_span take
    the entity ids (int [S, L]) in its place. pmlm, plm and mpnet make augmented
    rows of T >= L tokens (fem/augmented.py).
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    sequences, length = blocks.shape
    epochs = np.broadcast_to(np.asarray(epochs, dtype=np.int64), (sequences,))
    maskable = ~np.isin(blocks, spec.special_ids)
    entities = spec.strategy in ENTITY_STRATEGIES  # then `word_starts` holds the entity ids (fem/entities.py)
    annotation = None if word_starts is None else np.asarray(word_starts)
    masks = strategy_masks(
        spec.strategy, spec.seed, epochs, indices, maskable, spec.mask_ratio, spec.segments, spec.span,
        None if annotation is None or entities else annotation.astype(bool), spec.block, spec.fragment_ratio,
        annotation if entities else None,
    )  # fmt: skip
    units = None
    if spec.objective == "pmlm":  # one row; its blocks or fully-explored groups are the factorization steps
        units = pmlm_units(spec, masks, epochs, indices, maskable)
        masks = masks.any(axis=1, keepdims=True)
    masks = masks.reshape(-1, length)
    copies = spec.copies
    if copies > 1:
        blocks, epochs, indices = (np.repeat(np.asarray(a), copies, axis=0) for a in (blocks, epochs, indices))
    copy_of_row = np.tile(np.arange(copies), sequences)
    corrupted = corrupt(
        blocks, masks, spec.seed, epochs, indices, copy_of_row,
        spec.replacement, spec.mask_token_id, spec.vocab_size,
    )  # fmt: skip
    if spec.objective in PLAIN_ROW_OBJECTIVES:
        return MaskedRows(torch.from_numpy(corrupted), torch.from_numpy(masks), torch.from_numpy(blocks[masks]),
                          sequences)  # fmt: skip
    steps = factorization_steps(masks, spec.seed, epochs, indices, copy_of_row, units)
    width = prediction_width(spec, length)
    rows = augmented_rows(spec.objective, blocks, corrupted, steps, spec.mask_token_id, spec.pad_token_id, width)
    return MaskedRows(
        torch.from_numpy(rows.input_ids), torch.from_numpy(rows.predicted), torch.from_numpy(rows.targets),
        sequences, torch.from_numpy(rows.position_ids), torch.from_numpy(rows.attention),
    )  # fmt: skip


def prediction_width(spec: MaskingSpec, length: int) -> int:
    """The most positions a row of `length` tokens can have predicted under `spec` (augmented
    rows are padded to it): round(p * L) for random, plus max_length - 1 for block (its last
    block may overshoot), ceil(L / K) for a fully-explored group, L for pmlm's K groups."""
    if spec.strategy == "fe":
        return length if spec.objective == "pmlm" else -(-length // spec.segments)
    budget = masked_count(length, spec.mask_ratio)
    return budget + spec.block.max_length - 1 if spec.strategy == "block" else budget


def pmlm_units(
    spec: MaskingSpec, masks: np.ndarray, epochs: np.ndarray, indices: np.ndarray, maskable: np.ndarray
) -> np.ndarray | None:
    """The factorization units of pmlm: int [S, L], the fully-explored group of each position
    (fe: masks [S, K, L]), or UniLMv2's block (block); None for random (one token per step)."""
    if spec.strategy == "fe":
        return np.argmax(masks, axis=1)
    if spec.strategy == "block":
        from fem.block_masking import block_ids  # the blocks strategy_masks drew, with their ids

        return block_ids(spec.seed, epochs, indices, maskable, spec.mask_ratio, spec.block)
    return None


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


def mask_ratio_at(step: int, steps: int, schedule: dict[str, float]) -> float:
    """p at optimizer step `step` (0-based) of `steps` under pretrain.mask_ratio_schedule:
    linear from schedule["start"] at the first step to schedule["end"] at the last (Ankner et
    al. 2024 decay 0.30 -> 0.15)."""
    return schedule["start"] + (schedule["end"] - schedule["start"]) * step / max(1, steps - 1)


def masking_spec(settings: PretrainSettings, meta: dict) -> MaskingSpec:
    """How a run masks its training rows: the strategy and masking keys of `settings`, the
    tokenizer's special ids from `meta` (the tokenized data's meta.json)."""
    return MaskingSpec(
        strategy=settings.strategy,
        seed=settings.seed,
        mask_ratio=settings.mask_ratio,
        segments=resolve_segments(settings.mask_ratio, settings.segments),
        replacement=settings.replacement,
        mask_token_id=meta["mask_token_id"],
        vocab_size=meta["vocab_size"],
        special_ids=tuple(meta["unmaskable_token_ids"]),
        span=SpanShape(settings.span["geometric_p"], int(settings.span["max_length"])),
        block=BlockShape(
            settings.block["span_probability"], int(settings.block["min_length"]), int(settings.block["max_length"])
        ),
        objective=settings.objective,
        fragment_ratio=settings.mass["fragment_ratio"],
        pad_token_id=meta["pad_token_id"],
    )
