"""The InfoNCE loss against hand computations."""

from __future__ import annotations

import torch

from core.training.loss import info_nce


def test_info_nce_matches_a_hand_computation():
    torch.manual_seed(0)
    a, p = torch.randn(5, 7), torch.randn(5, 7)
    cos = torch.nn.functional.cosine_similarity(a[:, None], p[None], dim=-1)
    cos_m = cos - 0.1 * torch.eye(5)
    expected = -(torch.log_softmax(cos_m / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, margin=0.1), expected, atol=1e-6)
    backward = -(torch.log_softmax(cos_m.T / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, 0.1, symmetric=True), (expected + backward) / 2, atol=1e-6)
    # A margin makes the task harder: the loss rises.
    assert info_nce(a, p, 0.2, margin=0.3) > info_nce(a, p, 0.2)


def test_hard_negatives_join_each_anchors_candidates():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 7)
    candidates = torch.cat([p, n])
    cos = torch.nn.functional.cosine_similarity(a[:, None], candidates[None], dim=-1)
    cos_m = cos - 0.1 * torch.eye(5, 10)
    expected = -(torch.log_softmax(cos_m / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, margin=0.1, negatives=n), expected, atol=1e-6)
    backward = -(torch.log_softmax(cos_m[:, :5].T / 0.2, dim=1).diagonal()).mean()
    both = info_nce(a, p, 0.2, 0.1, symmetric=True, negatives=n)
    assert torch.allclose(both, (expected + backward) / 2, atol=1e-6)
    # A negative equal to its anchor is the hardest there is: the loss rises over random ones.
    assert info_nce(a, p, 0.2, negatives=a) > info_nce(a, p, 0.2, negatives=n)
