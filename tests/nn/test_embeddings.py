from __future__ import annotations

import pytest
import torch

from scvi_gen.nn._embeddings import ConditionEmbedding, TimeEmbedding, sinusoidal_features


def test_sinusoidal_features_shape_and_range():
    feats = sinusoidal_features(torch.rand(7, 1), 16)
    assert feats.shape == (7, 16)
    assert feats.abs().max() <= 1.0


def test_sinusoidal_features_need_an_even_width():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_features(torch.rand(3), 5)


def test_time_embedding_distinguishes_times_and_accepts_a_scalar():
    emb = TimeEmbedding(8)
    out = emb(torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 8)
    assert not torch.allclose(out[0], out[1])
    assert emb(torch.tensor(0.5)).shape == (1, 8)


def test_condition_embedding_has_a_null_index_per_attribute():
    emb = ConditionEmbedding([3, 2], dim=4)
    assert emb.null_index.tolist() == [3, 2]
    null = emb.null_codes(5)
    assert null.shape == (5, 2) and (null == emb.null_index).all()
    codes = torch.tensor([[0, 1], [2, 0]])
    assert emb(codes).shape == (2, 4)
    assert not torch.allclose(emb(codes), emb(emb.null_codes(2)))


def test_condition_embedding_adds_continuous_inputs():
    emb = ConditionEmbedding([2], dim=4, n_continuous=1)
    codes = torch.tensor([[1], [1]])
    out = emb(codes, torch.tensor([[0.0], [1.0]]))
    assert not torch.allclose(out[0], out[1])


def test_condition_embedding_without_attributes_uses_continuous_only():
    emb = ConditionEmbedding([], dim=4, n_continuous=2)
    assert emb(torch.zeros(3, 0, dtype=torch.long), torch.randn(3, 2)).shape == (3, 4)
