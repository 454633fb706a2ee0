"""Entailment-cone loss in the Lorentz model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from hysafe.geometry import lorentz

__all__ = ["ConeConfig", "entailment_loss"]


@dataclass(frozen=True)
class ConeConfig:
    """Entailment-cone settings of an objective: the cone at ``x`` has half-aperture
    ``aperture_scale * asin(2 K / (sqrt(c) |x|))`` with ``K = min_radius``, saturated near the root
    (:func:`hysafe.geometry.lorentz.half_aperture`)."""

    aperture_scale: float = field(default=1.0, metadata={"help": "entailment-cone aperture multiplier"})
    min_radius: float = field(default=0.1, metadata={"help": "entailment-cone K: radius near the root where cone apertures saturate"})

    def __post_init__(self):
        if not self.aperture_scale > 0:
            raise ValueError(f"cone aperture_scale must be > 0, got {self.aperture_scale}")
        if not self.min_radius > 0:
            raise ValueError(f"cone min_radius (K) must be > 0, got {self.min_radius}")


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
