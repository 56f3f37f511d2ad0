"""The augmented inputs of pmlm, plm and mpnet (fem/augmented.py): their attention masks against
the anchors' code, leakage checks on a real tiny BERT, and MPNet's MLM input mode."""

import numpy as np
import pytest
import torch

from fem.augmented import augmented_rows, factorization_steps
from fem.collation import MaskingSpec, mask_rows
from fem.modeling import attention_mask_4d, build_bert, masked_logits, sparse_mlm_loss

MASK, PAD = 4, 0
PROBE = torch.linspace(-1, 1, 32)  # a direction to differentiate a hidden state along (its sum is
# constant: the final LayerNorm's output sums to the sum of its bias at initialisation)
REPLACEMENT = {"mask": 0.8, "random": 0.1, "keep": 0.1}


def matrix(text: str) -> np.ndarray:
    """Rows of 0/1 characters (spaces and | ignored) as a bool matrix."""
    return np.array([[c == "1" for c in line if c in "01"] for line in text.strip().splitlines()])


def six_token_row(objective: str, steps: list[int]) -> np.ndarray:
    """The attention of one row of 6 tokens x1..x6 whose positions 5 and 6 (0-based 4, 5) are
    predicted at the given steps: bool [T, T]."""
    originals = np.array([[11, 12, 13, 14, 15, 16]])
    corrupted = np.array([[11, 12, 13, 14, MASK, MASK]])
    step = np.array([[-1, -1, -1, -1, *steps]])
    return augmented_rows(objective, originals, corrupted, step, MASK, PAD).attention[0]


# MPNet, pretraining/fairseq/models/masked_permutation_net.py make_query_and_content_mask with
# a = 6 tokens and b = 2 predicted (its figure has a = 7, b = 3), 1 = may attend. Columns: x1..x6,
# then (mpnet) the content stream's mask tokens m5 m6, then the queries q5 q6, which no row sees.
MPNET = matrix("""
    1111 00 11 00
    1111 00 11 00
    1111 00 11 00
    1111 00 11 00
    1111 10 01 00
    1111 11 00 00
    1111 00 11 00
    1111 00 11 00
    1111 00 11 00
    1111 10 01 00
""")
PLM = matrix("""
    1111 00 00
    1111 00 00
    1111 00 00
    1111 00 00
    1111 10 00
    1111 11 00
    1111 00 00
    1111 10 00
""")
# UniLMv2, s2s-ft/s2s_ft/modeling.py create_attention_mask: source = the corrupted row (its [M]s
# included), targets = the originals of x5 x6, pseudo = their [P]s. Two steps of one token:
UNILM_TWO_STEPS = matrix("""
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 10 00
    111111 11 00
    111111 00 10
    111111 10 01
""")
# and one block of two tokens (one step): the [P]s of a block see each other, no original.
UNILM_ONE_BLOCK = matrix("""
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 00 00
    111111 11 00
    111111 11 00
    111111 00 11
    111111 00 11
""")


@pytest.mark.parametrize(
    ("objective", "steps", "expected"),
    [
        ("mpnet", [0, 1], MPNET),
        ("plm", [0, 1], PLM),
        ("pmlm", [0, 1], UNILM_TWO_STEPS),
        ("pmlm", [0, 0], UNILM_ONE_BLOCK),
    ],
)
def test_six_token_attention_masks_equal_the_anchors_code(objective, steps, expected):
    assert np.array_equal(six_token_row(objective, steps), expected)


def spec(objective: str, strategy: str, segments: int = 4) -> MaskingSpec:
    return MaskingSpec(
        strategy, 7, 0.15, segments, REPLACEMENT, MASK, 60, (1, 2), objective=objective, pad_token_id=PAD
    )


@pytest.fixture(scope="module")
def sequences() -> np.ndarray:
    blocks = np.random.default_rng(0).integers(5, 60, (3, 24))
    blocks[:, 0], blocks[:, -1] = 1, 2  # [CLS] ... [SEP]
    return blocks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bert = build_bert(60, 32, 2, 2, 64)
    return bert.eval()


def rows_of(objective, strategy, blocks):
    return mask_rows(blocks, np.zeros(len(blocks), dtype=np.int64), np.arange(len(blocks)), spec(objective, strategy))


def hidden(model, rows, input_ids=None):
    """The encoder's last hidden states [R, T, H] and the token embeddings [R, T, H] it was fed
    (a leaf: gradients with respect to each token's embedding can be taken)."""
    ids = rows.input_ids if input_ids is None else input_ids
    embeddings = model.bert.embeddings.word_embeddings(ids).detach().requires_grad_()
    mask = attention_mask_4d(rows.attention, model.config._attn_implementation)
    states = model.bert(inputs_embeds=embeddings, position_ids=rows.position_ids, attention_mask=mask)
    return states.last_hidden_state, embeddings


@pytest.mark.parametrize("strategy", ["random", "block", "fe"])
def test_a_pseudo_token_has_zero_gradient_from_its_own_and_later_originals(model, sequences, strategy):
    rows = rows_of("pmlm", strategy, sequences)
    length = sequences.shape[1]
    m = (rows.input_ids.shape[1] - length) // 2  # [ row | originals (m) | [P] (m) ]
    position_ids = rows.position_ids
    for r in range(len(sequences)):
        predicted = np.flatnonzero(rows.masked[r, length + m :].numpy())  # the [P]s of row r
        for j in predicted[: min(6, len(predicted))]:
            states, embeddings = hidden(model, rows)
            (grad,) = torch.autograd.grad(states[r, length + m + j] @ PROBE, embeddings)
            steps = step_of_appended(rows, r, length, m)
            own_and_later = [length + i for i in range(m) if steps[i] >= steps[j] and steps[i] >= 0]
            assert position_ids[r, length + m + j] == position_ids[r, length + j]  # stands for its position
            assert own_and_later and all(torch.count_nonzero(grad[r, c]) == 0 for c in own_and_later)
            earlier = [length + i for i in range(m) if 0 <= steps[i] < steps[j]]
            assert all(torch.count_nonzero(grad[r, c]) > 0 for c in earlier)  # the path exists


def step_of_appended(rows, r, length, m) -> list[int]:
    """The factorization step of each appended original of row r (-1: padding), read back from
    the attention: an original of step s sees exactly the originals of steps <= s."""
    seen = rows.attention[r, length : length + m, length : length + m].sum(dim=1)
    valid = rows.masked[r, length + m :]
    order = {v: i for i, v in enumerate(sorted(set(seen[valid].tolist())))}
    return [order[int(seen[i])] if valid[i] else -1 for i in range(m)]


@pytest.mark.parametrize("strategy", ["random", "block", "fe"])
def test_in_pmlm_no_position_sees_an_original_of_a_later_step(model, sequences, strategy):
    rows = rows_of("pmlm", strategy, sequences)
    length = sequences.shape[1]
    m = (rows.input_ids.shape[1] - length) // 2
    for r in range(len(sequences)):
        steps = np.array(step_of_appended(rows, r, length, m))
        sees = rows.attention[r].numpy()
        assert not sees[:length, length:].any()  # the context sees no original and no [P]
        for j in np.flatnonzero(steps >= 0):
            later = length + np.flatnonzero(steps > steps[j])
            assert not sees[length + j, later].any() and not sees[length + m + j, later].any()
            assert not sees[length + m + j, length + j]  # a [P] never sees its own original
        # perturbing every original of the last step changes no output of an earlier [P]
        last = steps.max()
        changed = rows.input_ids.clone()
        changed[r, length + np.flatnonzero(steps == last)] += 1
        before, _ = hidden(model, rows)
        after, _ = hidden(model, rows, changed)
        earlier_p = length + m + np.flatnonzero((steps >= 0) & (steps < last))
        assert torch.equal(before[r, earlier_p], after[r, earlier_p])
        assert not torch.equal(before[r, length:], after[r, length:])  # the change did reach some token


@pytest.mark.parametrize("objective", ["plm", "mpnet"])
@pytest.mark.parametrize("strategy", ["random", "fe"])
def test_a_permuted_prediction_ignores_the_tokens_at_its_own_and_later_steps(model, sequences, objective, strategy):
    """Perturb the row's original tokens at permutation steps >= t: the prediction at step t
    stays; perturb those of step t - 1: it moves."""
    rows = rows_of(objective, strategy, sequences)
    before, _ = hidden(model, rows)
    for r in range(len(rows.input_ids)):
        queries = np.flatnonzero(rows.masked[r].numpy())  # one per step, in step order
        steps = np.full(sequences.shape[1], -1)
        steps[rows.position_ids[r, queries].numpy()] = np.arange(len(queries))  # row position -> step
        for t, q in enumerate(queries):
            changed = rows.input_ids.clone()
            at_or_after = np.flatnonzero(steps >= t)
            changed[r, at_or_after] = (changed[r, at_or_after] + 1) % 60
            after, _ = hidden(model, rows, changed)
            assert torch.equal(before[r, q], after[r, q]), (r, t)
            if t > 0:  # the token of the step before does reach it
                changed = rows.input_ids.clone()
                previous = np.flatnonzero(steps == t - 1)
                changed[r, previous] = (changed[r, previous] + 1) % 60
                moved, _ = hidden(model, rows, changed)
                assert not torch.equal(before[r, q], moved[r, q]), (r, t)


def test_mpnet_in_mlm_input_mode_gives_exactly_the_loss_of_mlm(model, sequences):
    """MPNet's --input-mode mlm (full attention, the row's predicted tokens corrupted in place)
    is BERT's masked LM: the same rows and exactly the same loss as objective mlm."""
    plain = rows_of("mlm", "random", sequences)
    steps = factorization_steps(plain.masked.numpy(), 7, np.zeros(3, np.int64), np.arange(3), np.zeros(3, np.int64))
    mlm_mode = augmented_rows("mlm", sequences, plain.input_ids.numpy(), steps, MASK, PAD)
    assert np.array_equal(mlm_mode.input_ids, plain.input_ids.numpy())
    assert np.array_equal(mlm_mode.predicted, plain.masked.numpy())
    assert np.array_equal(mlm_mode.targets, plain.targets.numpy())
    expected = sparse_mlm_loss(model, plain.input_ids, plain.masked, plain.targets)
    loss = sparse_mlm_loss(model, torch.from_numpy(mlm_mode.input_ids), torch.from_numpy(mlm_mode.predicted),
                           torch.from_numpy(mlm_mode.targets))  # fmt: skip
    assert torch.equal(loss, expected)
    # the augmented code path with positions 0..L-1 and a full attention mask: the same to rounding
    full = torch.ones(len(sequences), sequences.shape[1], sequences.shape[1], dtype=torch.bool)
    positions = torch.arange(sequences.shape[1]).expand(len(sequences), -1)
    explicit = sparse_mlm_loss(model, plain.input_ids, plain.masked, plain.targets, "mean", positions, full)
    assert torch.allclose(explicit, expected, atol=1e-6)


def test_the_4d_mask_reaches_sdpa_unchanged(model, sequences, monkeypatch):
    """transformers 5 passes a prepared 4-D mask through to torch's scaled_dot_product_attention."""
    rows = rows_of("mpnet", "random", sequences)
    seen = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(*args, **kwargs):
        seen.append(kwargs.get("attn_mask"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    assert model.config._attn_implementation == "sdpa"
    masked_logits(model, rows.input_ids, rows.masked, rows.position_ids, rows.attention)
    assert len(seen) == model.config.num_hidden_layers
    assert all(torch.equal(mask, rows.attention[:, None]) for mask in seen)


def test_eager_and_sdpa_attention_give_the_same_augmented_logits(sequences):
    torch.manual_seed(1)
    bert = build_bert(60, 32, 2, 2, 64).eval()
    rows = rows_of("pmlm", "block", sequences)
    sdpa = masked_logits(bert, rows.input_ids, rows.masked, rows.position_ids, rows.attention)
    bert.set_attn_implementation("eager")
    eager = masked_logits(bert, rows.input_ids, rows.masked, rows.position_ids, rows.attention)
    assert torch.allclose(sdpa, eager, atol=1e-5)


@pytest.mark.parametrize("objective", ["pmlm", "plm", "mpnet"])
def test_augmented_rows_are_a_function_of_seed_epoch_and_index(sequences, objective):
    """A sequence's augmented row is the same in any batch (up to the batch's padding)."""
    strategy = "block" if objective == "pmlm" else "random"
    together = rows_of(objective, strategy, sequences)
    alone = mask_rows(sequences[2:], np.zeros(1, dtype=np.int64), np.array([2]), spec(objective, strategy))
    length = sequences.shape[1]
    assert torch.equal(together.input_ids[2, :length], alone.input_ids[0, :length])
    assert torch.equal(together.targets[-len(alone.targets) :], alone.targets)
