"""Symmetric InfoNCE with cross-process negatives, for cosine and Lorentz geometry."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hysafe.geometry import euclidean, lorentz

from .distributed import gather_with_grad, world_info

__all__ = ["symmetric_info_nce", "euclidean_info_nce", "lorentz_info_nce"]

Similarity = Callable[[Tensor, Tensor], Tensor]


def symmetric_info_nce(
    a: Tensor, b: Tensor, *, similarity: Similarity, logit_scale: Tensor | float
) -> Tensor:
    """Mean of the a->b and b->a cross-entropies over ``logit_scale * similarity``.

    ``a, b: (B, D)``, row ``i`` of ``a`` matches row ``i`` of ``b``. When torch.distributed is
    initialised, the other side's negatives come from every rank (gradient-preserving gather)
    and the loss equals the single-process loss on the concatenated global batch.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"contrastive inputs must both be (B, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    rank, _ = world_info()
    all_a, all_b = gather_with_grad(a), gather_with_grad(b)
    labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]
    logits_ab = logit_scale * similarity(a, all_b)
    logits_ba = logit_scale * similarity(b, all_a)
    dtype = torch.promote_types(logits_ab.dtype, torch.float32)  # softmax in >= fp32 under autocast
    return 0.5 * (F.cross_entropy(logits_ab.to(dtype), labels) + F.cross_entropy(logits_ba.to(dtype), labels))


def euclidean_info_nce(a: Tensor, b: Tensor, *, logit_scale: Tensor | float) -> Tensor:
    """CLIP loss: cosine similarities of L2-normalised embeddings."""
    return symmetric_info_nce(a, b, similarity=euclidean.cosine_pairwise, logit_scale=logit_scale)


def lorentz_info_nce(a: Tensor, b: Tensor, *, curv: Tensor | float, logit_scale: Tensor | float) -> Tensor:
    """MERU/HySAC loss: negative geodesic distances as logits."""
    return symmetric_info_nce(
        a, b, similarity=lambda x, y: -lorentz.dist_pairwise(x, y, curv=curv), logit_scale=logit_scale
    )
