"""Entailment-cone loss in the Lorentz model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from hysafe.geometry import lorentz

from .distributed import gather_with_grad

__all__ = ["ConeConfig", "cone_aperture", "entailment_loss", "mean_norm"]


@dataclass(frozen=True)
class ConeConfig:
    """Entailment-cone settings of an objective: the cone at ``x`` has half-aperture
    ``aperture_scale * asin(2 K / (sqrt(c) |x|))``, saturated at pi/2 inside ``sqrt(c)|x| <= 2K``
    (:func:`hysafe.geometry.lorentz.half_aperture`).

    ``radius`` picks the rule. ``"absolute"`` (the default, as published): ``K = min_radius``, the
    papers' 0.1. ``"relative"`` (hysafe's option): ``K`` *relative to the embeddings the loss sees*,
    ``2K = radius_ratio * sqrt(c) * mean(|x|)`` over the global batch's generic side
    (:func:`cone_aperture`), so a cone at the mean norm has half-aperture ``asin(radius_ratio)`` at
    any scale and curvature; an absolute K rewards shrinking every embedding into the saturated zone
    near the root, where each cone is a half-space (docs/worlds.md). The relative rule was the
    default until v0.4; under the validation-world protocol (docs/worlds.md) the papers' absolute K
    passed more checks, so the published rule is the default again.

    With the relative K the *aperture* is invariant to a global rescaling and independent of the
    curvature, and the mean carries its gradient, so autograd sees the loss's true dependence on scale.
    The loss as a whole is not scale-free: the exterior angle is a hyperbolic quantity, scale-free
    only near the root (the Euclidean limit); tests/test_cone_radius.py measures the derivative along
    a global rescaling against finite differences.
    """

    aperture_scale: float = field(default=1.0, metadata={"help": "entailment-cone aperture multiplier"})
    radius: str = field(
        default="absolute",
        metadata={
            "help": "entailment-cone K: 'absolute' (min_radius, the papers') or 'relative' (radius_ratio)",
            "choices": ("absolute", "relative"),
        },
    )
    min_radius: float = field(default=0.1, metadata={"help": "absolute entailment-cone K (the papers' 0.1)"})
    radius_ratio: float = field(
        default=0.2,
        metadata={
            "help": "relative K: sin of the half-aperture of a cone at the batch's mean norm "
            "(2K = ratio x sqrt(c) x mean |x|)"
        },
    )

    def __post_init__(self):
        if not self.aperture_scale > 0:
            raise ValueError(f"cone aperture_scale must be > 0, got {self.aperture_scale}")
        if self.radius not in ("absolute", "relative"):
            raise ValueError(f"cone radius must be 'absolute' or 'relative', got {self.radius!r}")
        if not self.min_radius > 0:
            raise ValueError(f"cone min_radius (K) must be > 0, got {self.min_radius}")
        if not 0 < self.radius_ratio < 1:
            raise ValueError(f"cone radius_ratio must be in (0, 1), got {self.radius_ratio}")

    def loss_options(self) -> dict:
        """Keyword arguments of :func:`entailment_loss` for these settings."""
        relative = self.radius == "relative"
        return {
            "aperture_scale": self.aperture_scale,
            "min_radius": None if relative else self.min_radius,
            "radius_ratio": self.radius_ratio if relative else None,
        }


def mean_norm(x: Tensor) -> Tensor:
    """Mean Euclidean norm of the rows of ``x`` over the global batch (every process), a 0-d tensor
    whose gradient reaches every row (:func:`~hysafe.losses.distributed.gather_with_grad`)."""
    return gather_with_grad(torch.linalg.vector_norm(x, dim=-1)).mean()


def cone_aperture(
    x: Tensor,
    *,
    curv: Tensor | float,
    min_radius: Tensor | float | None = 0.1,
    radius_ratio: float | None = None,
) -> Tensor:
    """Half-aperture of the cone at each row of ``x``: absolute ``K = min_radius``, or, with
    ``radius_ratio``, relative to the global batch's :func:`mean_norm` (then ``min_radius`` must be
    None and the curvature plays no part)."""
    if radius_ratio is None:
        if min_radius is None:
            raise ValueError("cone aperture needs min_radius (absolute K) or radius_ratio (relative K)")
        return lorentz.half_aperture(x, curv=curv, min_radius=min_radius)
    if min_radius is not None:
        raise ValueError("cone aperture takes min_radius (absolute K) or radius_ratio (relative K), not both")
    return lorentz.relative_half_aperture(x, ratio=radius_ratio, scale=mean_norm(x))


def entailment_loss(
    x: Tensor,
    y: Tensor,
    *,
    curv: Tensor | float,
    aperture_scale: float = 1.0,
    min_radius: Tensor | float | None = 0.1,
    radius_ratio: float | None = None,
) -> Tensor:
    """ "``x`` entails ``y``": mean over rows of ``max(0, phi(x, y) - aperture_scale * w(x))``.

    ``x`` (the more generic concept, nearer the root) and ``y`` are ``(B, D)`` space components.
    ``phi`` is the exterior angle at ``x`` (:func:`~hysafe.geometry.lorentz.exterior_angle`),
    ``w`` the cone half-aperture (:func:`cone_aperture`: absolute ``min_radius`` or relative
    ``radius_ratio``). The loss is zero exactly when every ``y`` lies inside the cone of its ``x``.
    """
    phi = lorentz.exterior_angle(x, y, curv=curv)
    aperture = cone_aperture(x, curv=curv, min_radius=min_radius, radius_ratio=radius_ratio)
    return torch.relu(phi - aperture_scale * aperture).mean()
