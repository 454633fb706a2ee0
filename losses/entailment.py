"""Entailment-cone loss in the Lorentz model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from hysafe.geometry import lorentz

from .distributed import gather_detached

__all__ = ["ConeConfig", "entailment_loss"]


@dataclass(frozen=True)
class ConeConfig:
    """Entailment-cone settings of an objective: the cone at ``x`` has half-aperture
    ``aperture_scale * asin(2 K / (sqrt(c) |x|))``, saturated at pi/2 inside ``sqrt(c)|x| <= 2K``
    (:func:`hysafe.geometry.lorentz.half_aperture`).

    ``K`` is either absolute (``min_radius``, the papers' 0.1) or, by default, *relative to the
    embeddings the loss sees*: ``2K = radius_ratio * median(sqrt(c)|x|)`` over the batch's generic
    side (detached; the global batch across processes), so a typical cone has half-aperture
    ``asin(radius_ratio)`` at any scale. An absolute K rewards shrinking every embedding into the saturated
    zone near the root, where each cone is a half-space and the loss is met without any safety ordering
    (docs/worlds.md); the relative K leaves the loss invariant to a global rescaling, so it never pays to
    collapse.
    """

    aperture_scale: float = field(default=1.0, metadata={"help": "entailment-cone aperture multiplier"})
    min_radius: float | None = field(
        default=None,
        metadata={
            "help": "absolute entailment-cone K (the papers' 0.1); default: relative, see --radius-ratio"
        },
    )
    radius_ratio: float = field(
        default=0.2,
        metadata={
            "help": "relative K: sin of a typical cone's half-aperture (2K = "
            "ratio x batch median of sqrt(c)|x|)"
        },
    )

    def __post_init__(self):
        if not self.aperture_scale > 0:
            raise ValueError(f"cone aperture_scale must be > 0, got {self.aperture_scale}")
        if self.min_radius is not None and not self.min_radius > 0:
            raise ValueError(f"cone min_radius (K) must be > 0, got {self.min_radius}")
        if not 0 < self.radius_ratio < 1:
            raise ValueError(f"cone radius_ratio must be in (0, 1), got {self.radius_ratio}")

    def radius(self, x: Tensor, curv: Tensor | float) -> Tensor | float:
        """``K`` for cones at the points ``x`` (``(B, D)`` space components)."""
        if self.min_radius is not None:
            return self.min_radius
        sqrt_c = torch.as_tensor(curv, dtype=torch.float32, device=x.device).detach().sqrt()
        # the global batch's median
        norms = gather_detached(torch.linalg.vector_norm(x.detach().float(), dim=-1))
        return 0.5 * self.radius_ratio * sqrt_c * norms.median()


def entailment_loss(
    x: Tensor,
    y: Tensor,
    *,
    curv: Tensor | float,
    aperture_scale: float = 1.0,
    min_radius: Tensor | float = 0.1,
) -> Tensor:
    """ "``x`` entails ``y``": mean over rows of ``max(0, phi(x, y) - aperture_scale * w(x))``.

    ``x`` (the more generic concept, nearer the root) and ``y`` are ``(B, D)`` space components.
    ``phi`` is the exterior angle at ``x`` (:func:`~hysafe.geometry.lorentz.exterior_angle`),
    ``w`` the cone half-aperture (:func:`~hysafe.geometry.lorentz.half_aperture`). The loss is
    zero exactly when every ``y`` lies inside the cone of its ``x``.
    """
    phi = lorentz.exterior_angle(x, y, curv=curv)
    aperture = lorentz.half_aperture(x, curv=curv, min_radius=min_radius)
    return torch.relu(phi - aperture_scale * aperture).mean()
