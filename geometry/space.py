"""One interface over the Lorentz and cosine spaces.

Retrieval, classification, traversal and plots are written once against :class:`Space`:

==========================  =========================================  ==========================
question                    :class:`LorentzSpace`                      :class:`EuclideanSpace`
==========================  =========================================  ==========================
``similarity(x, y)``        ``-d(x, y)`` (negative geodesic distance)  cosine similarity
``distance(x, y)``          geodesic distance                          ``1 - cos``
``dist_to_root(x)``         ``asinh(sqrt(c)|x|)/sqrt(c)``              ``|x|``
``move_to_root_distance``   exp_map0 along the same ray                rescale
``query/gallery vectors``   ``[x, x_t]`` / ``[y, -y_t]``               normalised vectors
``hyperbolic``              ``True`` (entailment cones, traversal)     ``False``
==========================  =========================================  ==========================

Geometry is decided here and nowhere else: losses, retrieval, classification, traversal and plots
ask the model's space (``space.hyperbolic``, ``space.similarity``, ...) instead of testing names
or types. A :class:`LorentzSpace` holds a float curvature for inference, or the model's live
curvature tensor during training (``model.live_space``) so that gradients reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import euclidean, lorentz

__all__ = ["Space", "LorentzSpace", "EuclideanSpace", "space_from_dict"]


class Space:
    """Abstract embedding space. Every method takes and returns tensors; shapes as documented."""

    name: str = "abstract"
    #: hyperbolic spaces have entailment cones and a root to traverse toward
    hyperbolic: bool = False
    #: what :meth:`dist_to_root` measures, for labels
    root_distance_name: str = "distance"

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Pairwise similarity, larger is closer. ``(B1, D), (B2, D) -> (B1, B2)``."""
        raise NotImplementedError

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """Pairwise distance. ``(B1, D), (B2, D) -> (B1, B2)``."""
        raise NotImplementedError

    def dist_to_root(self, x: Tensor) -> Tensor:
        """Distance of each point to the root. ``(..., D) -> (...)``."""
        raise NotImplementedError

    def root_ray_scale(self, x: Tensor, distance: Tensor | float) -> Tensor:
        """Per-point factors ``s`` ``(...)`` such that ``s * x`` is at ``distance`` from the root."""
        raise NotImplementedError

    def move_to_root_distance(self, x: Tensor, distance: Tensor | float) -> Tensor:
        """Points on the rays root -> ``x`` at the given distance from the root. ``(..., D)``."""
        return self.root_ray_scale(x, distance).unsqueeze(-1) * x

    def path_to_root(self, x: Tensor, steps: int) -> Tensor:
        """``steps`` points from ``x`` to the root. ``(..., D) -> (steps, ..., D)``."""
        raise NotImplementedError

    def query_vectors(self, x: Tensor) -> Tensor:
        """Vectors whose plain inner product with :meth:`gallery_vectors` ranks like ``similarity``."""
        raise NotImplementedError

    def gallery_vectors(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def distance_from_inner(self, ip: Tensor) -> Tensor:
        """Distance from an inner product of query and gallery vectors."""
        raise NotImplementedError

    def index_inner_rows(self, q: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Inner products of query vectors ``q`` ``(Q, D')`` with the gallery vectors of each query's
        own embeddings ``rows`` ``(Q, C, D)``, and those gallery vectors' norms: ``(Q, C)`` each.
        This reference builds the gallery vectors; the spaces compute the same without the copy."""
        g = self.gallery_vectors(rows.reshape(-1, rows.shape[-1])).reshape(*rows.shape[:2], -1)
        return torch.bmm(g, q.unsqueeze(2)).squeeze(2), torch.linalg.vector_norm(g, dim=-1)

    def to_dict(self) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class LorentzSpace(Space):
    """Lorentz model with curvature ``-curv`` (space components, see :mod:`hysafe.geometry.lorentz`).

    ``curv`` is a float, or a scalar tensor (a model's learnable curvature, kept live so that
    losses computed in this space train it)."""

    curv: float | Tensor = 1.0
    name: str = "lorentz"
    hyperbolic: bool = True
    root_distance_name: str = "geodesic"

    def __post_init__(self):
        if not isinstance(self.curv, Tensor) and not self.curv > 0:
            raise ValueError(f"curv must be > 0, got {self.curv}")

    def similarity(self, x, y):
        return -lorentz.dist_pairwise(x, y, curv=self.curv)

    def distance(self, x, y):
        return lorentz.dist_pairwise(x, y, curv=self.curv)

    def dist_to_root(self, x):
        return lorentz.dist_to_root(x, curv=self.curv)

    def root_ray_scale(self, x, distance):
        return lorentz.root_ray_scale(x, distance, curv=self.curv)

    def path_to_root(self, x, steps):
        return lorentz.geodesic_to_root(x, steps, curv=self.curv)

    def query_vectors(self, x):
        return lorentz.query_index_vectors(x, curv=self.curv)

    def gallery_vectors(self, y):
        return lorentz.gallery_index_vectors(y, curv=self.curv)

    def distance_from_inner(self, ip):
        return lorentz.dist_from_index_inner(ip, curv=self.curv)

    def index_inner_rows(self, q, rows):
        return lorentz.index_inner_rows(q, rows, curv=self.curv)

    def to_dict(self):
        return {
            "name": self.name,
            "curv": float(self.curv.detach() if isinstance(self.curv, Tensor) else self.curv),
        }


@dataclass(frozen=True)
class EuclideanSpace(Space):
    """Cosine geometry of CLIP-style embeddings (see :mod:`hysafe.geometry.euclidean`)."""

    name: str = "euclidean"
    root_distance_name: str = "Euclidean norm"

    def similarity(self, x, y):
        return euclidean.cosine_pairwise(x, y)

    def distance(self, x, y):
        return 1.0 - euclidean.cosine_pairwise(x, y)

    def dist_to_root(self, x):
        return euclidean.dist_to_root(x)

    def root_ray_scale(self, x, distance):
        return euclidean.root_ray_scale(x, distance)

    def path_to_root(self, x, steps):
        return euclidean.geodesic_to_root(x, steps)

    def query_vectors(self, x):
        return euclidean.index_vectors(x)

    def gallery_vectors(self, y):
        return euclidean.index_vectors(y)

    def distance_from_inner(self, ip):
        return euclidean.dist_from_index_inner(ip)

    def index_inner_rows(self, q, rows):
        return euclidean.index_inner_rows(q, rows)

    def to_dict(self):
        return {"name": self.name}


def space_from_dict(d: dict) -> Space:
    """Inverse of :meth:`Space.to_dict`."""
    name = d.get("name")
    if name == "lorentz":
        return LorentzSpace(curv=float(d["curv"]))
    if name == "euclidean":
        return EuclideanSpace()
    raise ValueError(f"unknown space {name!r}; expected 'lorentz' or 'euclidean'")
