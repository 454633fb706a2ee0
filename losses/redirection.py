"""Safe-CLIP's cosine term and SafeR-CLIP's proximity-aware redirection term (cosine geometry)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hysafe.geometry import euclidean

__all__ = ["cosine_distance_loss", "redirection_loss"]


def cosine_distance_loss(x: Tensor, target: Tensor) -> Tensor:
    """Mean ``1 - cos(x_i, target_i)``. ``(B, D), (B, D) -> ()``."""
    return (1.0 - euclidean.cosine(x, target)).mean()


def redirection_loss(anchor: Tensor, negative: Tensor, positive: Tensor) -> Tensor:
    """SafeR-CLIP: mean ``softplus(cos(anchor, negative) - cos(anchor, positive))``.

    Pulls each (unsafe) ``anchor`` toward its proximal safe ``positive`` and pushes it from its
    own unsafe pair ``negative`` (a targeted hard negative instead of batch negatives).
    """
    return F.softplus(euclidean.cosine(anchor, negative) - euclidean.cosine(anchor, positive)).mean()
