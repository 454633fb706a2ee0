"""Entailment-cone loss in the Lorentz model."""

from __future__ import annotations

import torch
from torch import Tensor

from hysafe.geometry import lorentz

__all__ = ["entailment_loss"]


def entailment_loss(
    x: Tensor, y: Tensor, *, curv: Tensor | float, aperture_scale: float = 1.0, min_radius: float = 0.1
) -> Tensor:
    """"``x`` entails ``y``": mean over rows of ``max(0, phi(x, y) - aperture_scale * w(x))``.

    ``x`` (the more generic concept, nearer the root) and ``y`` are ``(B, D)`` space components.
    ``phi`` is the exterior angle at ``x`` (:func:`~hysafe.geometry.lorentz.exterior_angle`),
    ``w`` the cone half-aperture (:func:`~hysafe.geometry.lorentz.half_aperture`). The loss is
    zero exactly when every ``y`` lies inside the cone of its ``x``.
    """
    phi = lorentz.exterior_angle(x, y, curv=curv)
    aperture = lorentz.half_aperture(x, curv=curv, min_radius=min_radius)
    return torch.relu(phi - aperture_scale * aperture).mean()
