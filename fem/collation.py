"""Turn packed blocks into masked training rows for one optimizer step.

Compute is matched between strategies (DESIGN §5): a step always has `rows` rows.
`random` fills them with `rows` distinct sequences (one mask each); `fe` with rows/K
sequences, each repeated K times with its K disjoint masks, so all K copies of a sequence
land in the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fem.masking import corrupt, fully_explored_masks, random_masks


@dataclass
class MaskedRows:
    """One step's model input. R rows of L tokens, M masked positions in total."""

    input_ids: torch.Tensor  # int64 [R, L], corrupted
    masked: torch.Tensor  # bool [R, L], True where the loss is computed
    targets: torch.Tensor  # int64 [M], original ids at masked positions, row-major order
    sequences: int  # distinct sequences in the step

    def to(self, device: torch.device) -> MaskedRows:
        """The same rows with every tensor on `device`."""
        return MaskedRows(self.input_ids.to(device), self.masked.to(device), self.targets.to(device), self.sequences)


@dataclass(frozen=True)
class MaskingSpec:
    """Everything that decides a mask, apart from (epoch, sequence index)."""

    strategy: str  # "random" | "fe"
    seed: int
    mask_ratio: float
    segments: int  # K
    replacement: dict[str, float]
    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]

    def sequences_per_step(self, rows: int) -> int:
        """Distinct sequences a step of `rows` rows takes under this strategy."""
        return rows // self.segments if self.strategy == "fe" else rows


def mask_rows(blocks: np.ndarray, epochs: np.ndarray, indices: np.ndarray, spec: MaskingSpec) -> MaskedRows:
    """Mask and corrupt `blocks` (int [S, L], sequence indices `indices`, epochs `epochs`).

    Returns S rows for `random` and S*K rows (sequence-major: the K copies of a sequence
    are adjacent) for `fe`.
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    sequences = len(blocks)
    maskable = ~np.isin(blocks, spec.special_ids)
    if spec.strategy == "random":
        masks = random_masks(spec.seed, epochs, indices, maskable, spec.mask_ratio)
        copies = np.zeros(len(indices), dtype=np.int64)
    elif spec.strategy == "fe":
        k = spec.segments
        masks = fully_explored_masks(spec.seed, epochs, indices, maskable, k).reshape(-1, blocks.shape[1])
        blocks, epochs, indices = (np.repeat(a, k, axis=0) for a in (blocks, epochs, indices))
        copies = np.tile(np.arange(k), len(masks) // k)
    else:
        raise ValueError(f"unknown masking strategy {spec.strategy!r}; expected random or fe")
    corrupted = corrupt(
        blocks, masks, spec.seed, epochs, indices, copies,
        spec.replacement, spec.mask_token_id, spec.vocab_size,
    )  # fmt: skip
    return MaskedRows(
        input_ids=torch.from_numpy(corrupted),
        masked=torch.from_numpy(masks),
        targets=torch.from_numpy(blocks[masks]),
        sequences=sequences,
    )
