"""The contrastive loss: InfoNCE over in-batch (and optional hard) negatives, gathered across processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gather_with_grad", "info_nce"]


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    temperature: float,
    margin: float = 0.0,
    symmetric: bool = False,
    negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE on cosine similarity; every other positive in the batch is a negative.

    The margin is subtracted from each positive's cosine (an additive-margin softmax), so a positive
    must beat the negatives by ``margin``. ``negatives`` (one hard negative per pair, mined with the base
    encoder) join every anchor's candidates, as in-batch negatives do; the symmetric term (positive ->
    anchors) stays over the pairs alone.

    Args:
        anchors, positives: ``(n, dim)``; row i of each is a pair.
        negatives: ``(n, dim)`` or None.

    Returns:
        The mean loss, a scalar.
    """
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    candidates = p if negatives is None else torch.cat([p, F.normalize(negatives, dim=-1)])
    cos = a @ candidates.T
    n = a.shape[0]
    cos = cos - margin * torch.eye(n, cos.shape[1], dtype=cos.dtype, device=cos.device)
    logits = cos / temperature
    labels = torch.arange(n, device=cos.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits[:, :n].T, labels)) / 2
    return loss


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All processes' rows in rank order; gradients flow back to each process's own rows."""
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)
