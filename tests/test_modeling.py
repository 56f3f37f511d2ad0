import numpy as np
import pytest
import torch

from fem.collation import MaskingSpec, mask_rows
from fem.modeling import build_bert, sparse_mlm_loss
from fem.registry import STRATEGIES


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


def test_sparse_loss_and_pretrained_loading_work_for_roberta_as_for_bert(tmp_path):
    """Table 1 continues RoBERTa-base at paper scale: its head is `lm_head`, not `cls`."""
    import torch.nn.functional as F
    from transformers import RobertaConfig, RobertaForMaskedLM

    from fem.modeling import load_pretrained_mlm, mlm_parts, sparse_mlm_loss

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=70, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1)  # fmt: skip
    RobertaForMaskedLM(config).save_pretrained(str(tmp_path / "roberta"))
    model = load_pretrained_mlm(str(tmp_path / "roberta"), vocab_size=70).eval()
    assert mlm_parts(model)[1] is model.lm_head
    input_ids = torch.randint(3, 70, (2, 16))
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, [2, 5, 9]] = True
    targets = torch.randint(3, 70, (6,))
    dense = F.cross_entropy(model(input_ids=input_ids).logits[masked], targets)
    assert torch.allclose(sparse_mlm_loss(model, input_ids, masked, targets), dense, atol=1e-5)
    with pytest.raises(ValueError, match="70 token embeddings but the tokenized data has a vocabulary of 100"):
        load_pretrained_mlm(str(tmp_path / "roberta"), vocab_size=100)
