"""Safe-CLIP's cosine term and SafeR-CLIP's proximity-aware redirection term (cosine geometry)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hysafe.geometry import euclidean

__all__ = ["cosine_distance_loss", "redirection_loss"]


def cosine_distance_loss(x: Tensor, target: Tensor) -> Tensor:
    """Mean ``1 - cos(x_i, target_i)``. ``(B, D), (B, D) -> ()``."""
    return (1.0 - euclidean.cosine(x, target)).mean()


def redirection_loss(
    anchor: Tensor, negative: Tensor, positive: Tensor, *, scale: float | Tensor = 1.0
) -> Tensor:
    """SafeR-CLIP: mean ``softplus(scale * (cos(anchor, negative) - cos(anchor, positive)))``.

    Pulls each (unsafe) ``anchor`` toward its proximal safe ``positive`` and pushes it from its
    own unsafe pair ``negative`` (a targeted hard negative instead of batch negatives). The poster
    writes it without a temperature (``scale=1``): cosine gaps lie in [-2, 2], so the unscaled loss
    has about 1/100 of the gradient of the InfoNCE terms (scale 100) it is trained beside.
    """
    return F.softplus(
        scale * (euclidean.cosine(anchor, negative) - euclidean.cosine(anchor, positive))
    ).mean()
