import numpy as np
import pytest
import torch

from fem.collation import MaskingSpec, mask_rows
from fem.masking import STRATEGIES
from fem.modeling import build_bert, sparse_mlm_loss


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sparse_loss_equals_the_dense_head_loss(strategy):
    torch.manual_seed(0)
    model = build_bert(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model.eval()
    blocks = np.random.default_rng(0).integers(5, 500, size=(3, 24))
    blocks[:, 0], blocks[:, -1] = 1, 2
    spec = MaskingSpec(strategy, 0, 0.15, 7, {"mask": 0.8, "random": 0.1, "keep": 0.1}, 3, 500, (0, 1, 2, 3))
    word_starts = np.random.default_rng(1).random((3, 24)) < 0.6
    rows = mask_rows(blocks, np.zeros(3, dtype=np.int64), np.arange(3), spec, word_starts)
    labels = torch.full_like(rows.input_ids, -100)
    labels[rows.masked] = rows.targets
    with torch.no_grad():
        dense = model(input_ids=rows.input_ids, labels=labels).loss
        sparse = sparse_mlm_loss(model, rows.input_ids, rows.masked, rows.targets)
    assert abs(dense.item() - sparse.item()) < 1e-5
