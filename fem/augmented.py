"""Augmented inputs: UniLMv2's pseudo-masked LM, XLNet's permuted LM and MPNet, as one pass of
a plain BertModel over a longer row with explicit position ids and a structured attention mask.

A row of L tokens with m predicted positions, put in a factorization order (step 0 first;
positions of one step are predicted together), becomes a row of T tokens:

  pmlm   [ corrupted row (L) | originals of the predicted positions (m) | [P] x m ]
  plm    [ original row (L)  | query placeholders [MASK] x m ]
  mpnet  [ original row (L)  | corrupted predicted tokens (m) | the same again, as queries (m) ]
  mlm    [ corrupted row (L) ]   (BERT's masked LM: no augmentation, full attention)

The appended tokens carry the position ids of the positions they stand for, in step order. The
attention mask says who sees whom (rows attend to columns):

  pmlm (UniLMv2, s2s-ft's create_attention_mask): the context (the corrupted row, [M]s included)
    sees only the context; the original of step s sees the context and the originals of steps
    <= s; a [P] of step s sees the context, the originals of steps < s and the [P]s of its own
    step -- never its own original or a later one. The loss covers the context's masked
    positions (autoencoding) and the [P]s (partially autoregressive).
  plm, mpnet (MPNet's make_query_and_content_mask; the content stream is the row [+ the m
    mask tokens], the query stream the last m tokens, which nobody attends to): a non-predicted
    token sees the non-predicted tokens (mpnet: and every appended mask token); the predicted
    original of step s sees those and the predicted originals of steps <= s (mpnet: and the
    mask tokens of steps > s); a query of step s sees the non-predicted tokens, the predicted
    originals of steps < s and (mpnet, "position compensation") the mask tokens of steps >= s.
    Predictions are made at the queries.

Since the query stream is never a key or value, this one pass equals MPNet's two-stream
attention, and with absolute positions the order of tokens in the row does not matter. Rows
with fewer predictions than the longest of the batch are padded: a pad attends only to itself
and nobody attends to it. No new parameters: the placeholders are the [MASK] embedding.

The factorization order is a pure function of (seed, epoch, sequence index, copy), like every
fem mask: units (blocks, fully-explored groups or single tokens) in a seeded random order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fem.masking import uniform_keys

AUGMENTED_OBJECTIVES = ("pmlm", "plm", "mpnet")  # the objectives whose rows this module builds

_STREAM_FACTOR_ORDER = 20  # fem.masking's streams are 1-7; block masking's below 20

# Token kinds of an augmented row (see the module docstring).
_PAD, _CONTEXT, _PREDICTED, _ORIGINAL, _PSEUDO, _MASK_TOKEN, _QUERY = -1, 0, 1, 2, 3, 4, 5


@dataclass
class AugmentedRows:
    """An augmented batch as numpy arrays: R rows of T tokens, M predictions in all."""

    input_ids: np.ndarray  # int64 [R, T]
    position_ids: np.ndarray | None  # int64 [R, T]; None: 0..T-1 (mlm)
    attention: np.ndarray | None  # bool [R, T, T], True where row token i may attend to token j; None: all
    predicted: np.ndarray  # bool [R, T], True where the loss is computed
    targets: np.ndarray  # int64 [M], the original tokens at `predicted`, row-major order


def factorization_steps(
    predicted: np.ndarray,
    seed: int,
    epochs: np.ndarray,
    indices: np.ndarray,
    copies: np.ndarray,
    units: np.ndarray | None = None,
) -> np.ndarray:
    """The step of each predicted position in its row's factorization order: int64 [R, L],
    0 first, -1 where not predicted.

    predicted: bool [R, L]; units: int [R, L], the unit (block or group id in 0..L-1) of each
    predicted position, whose positions share one step; None: every position is its own unit.
    Units come in a seeded random order: unit u of row r gets key uniform_keys(...)[r, u].
    """
    rows, length = predicted.shape
    unit = np.where(predicted, np.arange(length)[None, :] if units is None else units, length)
    keys = uniform_keys(seed, _STREAM_FACTOR_ORDER, epochs, indices, copies, length + 1)
    present = np.zeros((rows, length + 1), dtype=bool)
    np.put_along_axis(present, unit, True, axis=1)
    present[:, length] = False  # the "not predicted" unit
    order = np.argsort(np.where(present, keys, 2.0), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(length + 1), order.shape), axis=1)
    return np.where(predicted, np.take_along_axis(rank, unit, axis=1), -1)


def augmented_rows(
    objective: str,
    originals: np.ndarray,
    corrupted: np.ndarray,
    steps: np.ndarray,
    mask_token_id: int,
    pad_token_id: int,
    width: int | None = None,
) -> AugmentedRows:
    """The augmented rows of `objective` (module docstring). originals, corrupted: int [R, L]
    (the row before and after BERT's 80/10/10 corruption of its predicted positions); steps:
    int [R, L] from factorization_steps (-1: not predicted); width: m, the appended tokens per
    part (at least the most predictions of a row; None: exactly that), so T = L + 2m (plm: L + m).
    A fixed width makes every step of a run equally long, and its FLOPs a function of its size."""
    if objective not in ("mlm", *AUGMENTED_OBJECTIVES):  # the others train on plain rows (fem.collation)
        raise ValueError(
            f"objective {objective!r} has no augmented rows; expected one of {', '.join(AUGMENTED_OBJECTIVES)}"
        )
    originals, corrupted = np.asarray(originals, dtype=np.int64), np.asarray(corrupted, dtype=np.int64)
    predicted = steps >= 0
    if objective == "mlm":
        return AugmentedRows(corrupted, None, None, predicted, originals[predicted])
    rows, length = originals.shape
    # the predicted positions of each row in step order (ties: left to right), padded to the most
    width = max(int(predicted.sum(axis=1).max()), width or 0)
    order = np.argsort(np.where(predicted, steps * length + np.arange(length), np.iinfo(np.int64).max), axis=1)
    order = np.pad(order, ((0, 0), (0, max(0, width - length))))  # pmlm with fe on a short row: m may exceed L
    place = order[:, :width]  # [R, m]
    valid = np.take_along_axis(predicted, place, axis=1)
    step = np.where(valid, np.take_along_axis(steps, place, axis=1), -1)

    def gathered(values: np.ndarray, fill: int) -> np.ndarray:
        return np.where(valid, np.take_along_axis(values, place, axis=1), fill)

    placeholders = np.where(valid, mask_token_id, pad_token_id)
    row_steps = np.where(predicted, steps, -1)
    context_kind = np.where(predicted, _PREDICTED, _CONTEXT)
    if objective == "pmlm":
        tokens = [corrupted, gathered(originals, pad_token_id), placeholders]
        kinds = [np.full_like(originals, _CONTEXT), _kind(valid, _ORIGINAL), _kind(valid, _PSEUDO)]
        step_parts = [np.full_like(originals, -1), step, step]
        loss_at = [predicted, np.zeros_like(valid), valid]  # autoencoding at the [M]s, autoregressive at the [P]s
    elif objective == "plm":
        tokens = [originals, placeholders]
        kinds = [context_kind, _kind(valid, _QUERY)]
        step_parts = [row_steps, step]
        loss_at = [np.zeros_like(predicted), valid]
    else:  # mpnet
        masked_tokens = gathered(corrupted, pad_token_id)
        tokens = [originals, masked_tokens, masked_tokens]
        kinds = [context_kind, _kind(valid, _MASK_TOKEN), _kind(valid, _QUERY)]
        step_parts = [row_steps, step, step]
        loss_at = [np.zeros_like(predicted), np.zeros_like(valid), valid]
    label_parts = [originals] + [gathered(originals, pad_token_id)] * (len(tokens) - 1)
    positions = [np.broadcast_to(np.arange(length), (rows, length))] + [np.where(valid, place, 0)] * (len(tokens) - 1)
    kind, step_of = np.concatenate(kinds, axis=1), np.concatenate(step_parts, axis=1)
    loss_mask = np.concatenate(loss_at, axis=1)
    return AugmentedRows(
        input_ids=np.concatenate(tokens, axis=1),
        position_ids=np.concatenate(positions, axis=1).astype(np.int64),
        attention=attention_mask(objective, kind, step_of),
        predicted=loss_mask,
        targets=np.concatenate(label_parts, axis=1)[loss_mask],
    )


def _kind(valid: np.ndarray, kind: int) -> np.ndarray:
    return np.where(valid, kind, _PAD)


def attention_mask(objective: str, kind: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Who sees whom in an augmented row: bool [R, T, T], True where token i (row) may attend
    to token j (column). kind, step: int [R, T], each token's kind (_CONTEXT, ...) and step
    (-1 for context tokens)."""
    kr, kc = kind[:, :, None], kind[:, None, :]
    sr, sc = step[:, :, None], step[:, None, :]
    if objective == "pmlm":
        allow = (kc == _CONTEXT) & np.isin(kr, (_CONTEXT, _ORIGINAL, _PSEUDO))
        allow |= (kr == _ORIGINAL) & (kc == _ORIGINAL) & (sc <= sr)
        allow |= (kr == _PSEUDO) & (kc == _ORIGINAL) & (sc < sr)
        allow |= (kr == _PSEUDO) & (kc == _PSEUDO) & (sc == sr)
    else:  # plm, mpnet: content stream = context + predicted originals (+ mask tokens), then queries
        allow = (kc == _CONTEXT) & (kr != _PAD)
        allow |= (kr == _PREDICTED) & (kc == _PREDICTED) & (sc <= sr)
        allow |= (kr == _QUERY) & (kc == _PREDICTED) & (sc < sr)
        if objective == "mpnet":
            allow |= np.isin(kr, (_CONTEXT, _MASK_TOKEN)) & (kc == _MASK_TOKEN)
            allow |= (kr == _PREDICTED) & (kc == _MASK_TOKEN) & (sc > sr)
            allow |= (kr == _QUERY) & (kc == _MASK_TOKEN) & (sc >= sr)
    pad = kind == _PAD
    allow |= pad[:, :, None] & np.eye(kind.shape[1], dtype=bool)[None]  # a pad sees itself only
    return allow
