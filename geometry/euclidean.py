"""Euclidean / cosine geometry with the same small interface as :mod:`hysafe.geometry.lorentz`.

CLIP-style models compare L2-normalised embeddings by cosine similarity. The "root" is the
origin and the distance to it is the embedding's L2 norm *before* normalisation, which is what
the distribution plots show for Euclidean models. Cosine similarities run in float32 with autocast
off, like the Lorentz maths: a bf16 cosine times a logit scale of 100 is off by ~0.2. Moving a point toward
the root rescales it and therefore never changes cosine retrieval: that is the honest Euclidean analogue of
traversal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_points, check_same_dim, float32_math, validation_enabled

__all__ = [
    "normalize",
    "cosine",
    "cosine_pairwise",
    "dist_to_root",
    "move_to_root_distance",
    "root_ray_scale",
    "geodesic_to_root",
    "index_vectors",
    "dist_from_index_inner",
    "index_inner_rows",
]

# Norm floor for normalisation: zero vectors map to zero instead of NaN.
_NORM_EPS = 1e-12


@float32_math
def normalize(x: Tensor, *, eps: float = _NORM_EPS) -> Tensor:
    """L2-normalise the last dimension; zero vectors stay zero. ``(..., D) -> (..., D)``."""
    check_points(x, "x")
    return F.normalize(x, dim=-1, eps=eps)


@float32_math
def cosine(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise cosine similarity. ``(..., D), (..., D) -> (...)``."""
    check_same_dim(x, y, "x", "y")
    return (normalize(x) * normalize(y)).sum(-1)


@float32_math
def cosine_pairwise(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise cosine similarities. ``(B1, D), (B2, D) -> (B1, B2)``."""
    check_same_dim(x, y, "x", "y")
    return normalize(x) @ normalize(y).transpose(-1, -2)


def dist_to_root(x: Tensor) -> Tensor:
    """Euclidean norm. ``(..., D) -> (...)``."""
    check_points(x, "x")
    return torch.linalg.vector_norm(x, dim=-1)


def root_ray_scale(x: Tensor, distance: Tensor | float) -> Tensor:
    """Per-point factor ``s`` with ``|s * x| = distance``. ``(..., D) -> (...)``."""
    d = torch.as_tensor(distance, dtype=x.dtype, device=x.device)
    if validation_enabled() and d.numel() and bool((d < 0).any()):
        raise ValueError("distance must be >= 0")
    return d / torch.linalg.vector_norm(x, dim=-1).clamp(min=_NORM_EPS)


def move_to_root_distance(x: Tensor, distance: Tensor | float) -> Tensor:
    """Rescale ``x`` to norm ``distance`` (direction kept; zero vectors stay zero)."""
    return root_ray_scale(x, distance).unsqueeze(-1) * x


def geodesic_to_root(x: Tensor, steps: int) -> Tensor:
    """``steps`` points on the segment ``x`` -> origin. ``(..., D) -> (steps, ..., D)``."""
    check_points(x, "x")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    fractions = torch.linspace(1.0, 0.0, steps, dtype=x.dtype, device=x.device)
    return fractions.view(steps, *([1] * x.dim())) * x.unsqueeze(0)


def index_vectors(x: Tensor) -> Tensor:
    """Normalised vectors: the inner product of two of them is their cosine similarity."""
    return normalize(x)


@float32_math
def index_inner_rows(q: Tensor, rows: Tensor, *, eps: float = _NORM_EPS) -> tuple[Tensor, Tensor]:
    """Index inner products of normalised queries ``q`` ``(Q, D)`` with each query's own rows
    ``(Q, C, D)``, and the norms of the rows' index vectors (1, or 0 for a zero row): ``(Q, C)``
    each, without normalising a copy of the rows."""
    norm = torch.linalg.vector_norm(rows, dim=-1)
    scale = norm.clamp_min(eps)
    return torch.bmm(rows, q.unsqueeze(2)).squeeze(2) / scale, norm / scale


def dist_from_index_inner(ip: Tensor) -> Tensor:
    """Cosine distance ``1 - cos`` from an index inner product."""
    return 1.0 - ip
