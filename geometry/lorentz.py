r"""The Lorentz (hyperboloid) model of hyperbolic space, as pure tensor functions.

Convention (used everywhere in hysafe):

* a point is given by its **space components** ``x`` of shape ``(..., D)``;
* the curvature is ``-curv`` with ``curv > 0`` (keyword-only argument ``curv``);
* the time component is implied: :math:`x_t = \sqrt{1/\mathrm{curv} + \lVert x\rVert^2}`;
* the root (origin) of the space is ``x = 0`` (full coordinates ``[1/sqrt(curv), 0, ..., 0]``).

geoopt's ``Lorentz(k)`` is the same space with ``k = 1 / curv`` written in full coordinates
``[x_t, x]`` (see :func:`to_hyperboloid`).

Every function upcasts fp16/bf16 inputs to float32 and disables autocast (hyperbolic
functions are unusable in half precision). Every clamp is a named argument with a reason;
``eps=None`` picks a default suited to the dtype.

Over 300 lines: the space's whole function set (distances, maps, cones, index vectors, conversions)
lives in one module so that every clamp and dtype rule is defined and read in one place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_points, check_same_dim, float32_math, validation_enabled

__all__ = [
    "EXP_MAP_MAX_ARG",
    "time_component",
    "inner",
    "inner_pairwise",
    "dist",
    "dist_pairwise",
    "dist_to_root",
    "exp_map0",
    "log_map0",
    "move_to_root_distance",
    "root_ray_scale",
    "geodesic_to_root",
    "half_aperture",
    "relative_half_aperture",
    "exterior_angle",
    "query_index_vectors",
    "gallery_index_vectors",
    "dist_from_index_inner",
    "index_inner_rows",
    "to_hyperboloid",
    "to_poincare",
]

#: Largest argument of ``sinh`` in :func:`exp_map0`: ``asinh(2**15)``. Beyond it float32 space
#: components exceed 2**15 / sqrt(curv) and squared norms lose all resolution near the root.
EXP_MAP_MAX_ARG = math.asinh(2.0**15)

# Smallest value of -curv * <x, y>_L fed to acosh is 1 + eps: acosh has an infinite derivative
# at 1, so eps bounds the gradient of the distance between (nearly) identical points.
_ACOSH_EPS = {torch.float32: 1e-6, torch.float64: 1e-12}
# Norms below this are treated as zero when dividing by them (sinh(r)/r -> 1 as r -> 0).
_NORM_EPS = {torch.float32: 1e-12, torch.float64: 1e-30}
# asin/acos arguments stay within 1 - eps of +-1, where both derivatives are infinite. The margin must
# be representable: 1 - 1e-8 rounds to 1.0 in float32 (infinite slope, NaN gradient through the clamp).
_UNIT_EPS = {torch.float32: 1e-6, torch.float64: 1e-12}


def _eps(table: dict, dtype: torch.dtype, eps: float | None) -> float:
    return table.get(dtype, table[torch.float32]) if eps is None else eps


def _sqrt_curv(curv: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(curv, (int, float)):  # checked in Python: no tensor comparison, no host read
        if not curv > 0:
            raise ValueError(f"curv must be > 0 (curvature is -curv), got {curv}")
        return torch.tensor(math.sqrt(curv), dtype=like.dtype, device=like.device)
    curv_t = torch.as_tensor(curv, dtype=like.dtype, device=like.device)
    if curv_t.numel() != 1:
        raise ValueError(f"curv must be a scalar, got shape {tuple(curv_t.shape)}")
    if not torch.compiler.is_compiling() and not bool(curv_t > 0):
        raise ValueError(f"curv must be > 0 (curvature is -curv), got {float(curv_t.detach())}")
    return curv_t.sqrt()


@float32_math
def time_component(x: Tensor, *, curv: float | Tensor) -> Tensor:
    """Time component :math:`\\sqrt{1/c + \\lVert x\\rVert^2}`. ``(..., D) -> (...)``."""
    check_points(x, "x")
    sc = _sqrt_curv(curv, x)
    return torch.sqrt(1.0 / sc**2 + (x * x).sum(-1))


@float32_math
def inner(x: Tensor, y: Tensor, *, curv: float | Tensor) -> Tensor:
    """Elementwise Lorentzian inner product :math:`x\\cdot y - x_t y_t`. ``(..., D), (..., D) -> (...)``.

    Always ``<= -1/curv``, with equality iff ``x == y``.
    """
    check_points(x, "x")
    check_points(y, "y")
    check_same_dim(x, y, "x", "y")
    return (x * y).sum(-1) - time_component(x, curv=curv) * time_component(y, curv=curv)


@float32_math
def inner_pairwise(x: Tensor, y: Tensor, *, curv: float | Tensor) -> Tensor:
    """Pairwise Lorentzian inner products. ``(B1, D), (B2, D) -> (B1, B2)``."""
    check_points(x, "x", min_dim=2)
    check_points(y, "y", min_dim=2)
    check_same_dim(x, y, "x", "y")
    xt = time_component(x, curv=curv)
    yt = time_component(y, curv=curv)
    return x @ y.transpose(-1, -2) - xt.unsqueeze(-1) * yt.unsqueeze(-2)


def _acosh_dist(neg_c_inner: Tensor, sc: Tensor, eps: float | None) -> Tensor:
    floor = 1.0 + _eps(_ACOSH_EPS, neg_c_inner.dtype, eps)
    return torch.acosh(neg_c_inner.clamp(min=floor)) / sc


@float32_math
def dist(x: Tensor, y: Tensor, *, curv: float | Tensor, eps: float | None = None) -> Tensor:
    """Elementwise geodesic distance :math:`\\mathrm{acosh}(-c\\langle x,y\\rangle_L)/\\sqrt{c}`.

    ``(..., D), (..., D) -> (...)``. ``eps`` floors the acosh argument at ``1 + eps`` so that the
    gradient stays finite for identical points (the distance is then ``~sqrt(2 eps / curv)``).
    """
    sc = _sqrt_curv(curv, x)
    return _acosh_dist(-(sc**2) * inner(x, y, curv=curv), sc, eps)


@float32_math
def dist_pairwise(x: Tensor, y: Tensor, *, curv: float | Tensor, eps: float | None = None) -> Tensor:
    """Pairwise geodesic distances. ``(B1, D), (B2, D) -> (B1, B2)``; ``eps`` as in :func:`dist`."""
    sc = _sqrt_curv(curv, x)
    return _acosh_dist(-(sc**2) * inner_pairwise(x, y, curv=curv), sc, eps)


@float32_math
def dist_to_root(x: Tensor, *, curv: float | Tensor) -> Tensor:
    """Geodesic distance to the root, :math:`\\mathrm{asinh}(\\sqrt{c}\\lVert x\\rVert)/\\sqrt{c}`. ``(...,
    D) -> (...)``.

    Equals ``|log_map0(x)|``; exact (no acosh cancellation) and finite-gradient at ``x = 0``.
    """
    check_points(x, "x")
    sc = _sqrt_curv(curv, x)
    return torch.asinh(sc * _norm(x)) / sc


def _norm(v: Tensor, eps: float | None = None, *, keepdim: bool = False) -> Tensor:
    """``max(|v|, eps)`` over the last dim, safe at both ends.

    Zero vectors get a zero (never NaN) gradient. With validation on, rows whose squared norm
    overflows (entries above ``sqrt(float max)``) are recomputed pre-divided by their largest entry
    (a constant for autograd, so the gradient stays exactly ``v / |v|``); the hot path is one fused
    reduction.
    """
    floor = _eps(_NORM_EPS, v.dtype, eps)
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    if validation_enabled() and bool(torch.isinf(norm).any()):
        scale = torch.linalg.vector_norm(v.detach(), ord=float("inf"), dim=-1, keepdim=True).clamp(min=1.0)
        norm = scale * torch.linalg.vector_norm(v / scale, dim=-1, keepdim=True)
    norm = norm.clamp(min=floor)
    return norm if keepdim else norm.squeeze(-1)


@float32_math
def exp_map0(
    v: Tensor, *, curv: float | Tensor, max_arg: float = EXP_MAP_MAX_ARG, eps: float | None = None
) -> Tensor:
    """Exponential map at the root: tangent vector ``v`` -> space components of a point.

    :math:`\\exp_0(v) = \\sinh(\\sqrt{c}\\lVert v\\rVert)\\, v / (\\sqrt{c}\\lVert v\\rVert)`.
    ``(..., D) -> (..., D)``. ``max_arg`` caps the sinh argument (distance from the root times
    ``sqrt(curv)``) to avoid float32 overflow; ``eps`` is the norm below which ``sinh(r)/r = 1``.
    """
    check_points(v, "v")
    sc = _sqrt_curv(curv, v)
    r = sc * _norm(v, eps, keepdim=True)
    return torch.sinh(r.clamp(max=max_arg)) / r * v


@float32_math
def log_map0(x: Tensor, *, curv: float | Tensor, eps: float | None = None) -> Tensor:
    """Logarithmic map at the root (inverse of :func:`exp_map0`). ``(..., D) -> (..., D)``.

    :math:`\\log_0(x) = \\mathrm{asinh}(\\sqrt{c}\\lVert x\\rVert)\\, x / (\\sqrt{c}\\lVert x\\rVert)`;
    its norm is the distance to the root.
    """
    check_points(x, "x")
    sc = _sqrt_curv(curv, x)
    r = sc * _norm(x, eps, keepdim=True)
    return torch.asinh(r) / r * x


@float32_math
def root_ray_scale(
    x: Tensor, distance: Tensor | float, *, curv: float | Tensor, max_arg: float = EXP_MAP_MAX_ARG
) -> Tensor:
    """Per-point factor ``s`` such that ``s * x`` lies on the ray root -> ``x`` at geodesic distance
    ``distance`` from the root: ``s = sinh(sqrt(c) d) / (sqrt(c) |x|)``. ``(..., D) -> (...)``.

    This is ``exp_map0(d * x / |x|) = s * x`` written as a scale, so moving a batch costs one
    reduction and one multiply.
    """
    check_points(x, "x")
    d = torch.as_tensor(distance, dtype=x.dtype, device=x.device)
    if validation_enabled() and d.numel() and bool((d < 0).any()):
        raise ValueError("distance must be >= 0")
    sc = _sqrt_curv(curv, x)
    return torch.sinh((sc * d).clamp(max=max_arg)) / (sc * _norm(x))


@float32_math
def move_to_root_distance(x: Tensor, distance: Tensor | float, *, curv: float | Tensor) -> Tensor:
    """Point on the geodesic ray root -> ``x`` at geodesic distance ``distance`` from the root.

    ``x: (..., D)``, ``distance``: scalar or broadcastable to ``(...)``. Equals
    ``exp_map0(distance * u)`` with ``u`` the unit tangent direction of ``x``, so the result's
    distance to the root is exactly ``distance`` (up to rounding). Points at the root have no
    direction and stay at the root.
    """
    return root_ray_scale(x, distance, curv=curv).unsqueeze(-1) * x


@float32_math
def geodesic_to_root(x: Tensor, steps: int, *, curv: float | Tensor) -> Tensor:
    """``steps`` points on the geodesic from ``x`` (first) to the root (last), evenly spaced in distance.

    ``(..., D) -> (steps, ..., D)``. Interpolates linearly in the tangent space at the root,
    which is exact along geodesics through the root.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    v = log_map0(x, curv=curv)
    fractions = torch.linspace(1.0, 0.0, steps, dtype=x.dtype, device=x.device)
    fractions = fractions.view(steps, *([1] * v.dim()))
    return exp_map0(fractions * v.unsqueeze(0), curv=curv)


@float32_math
def half_aperture(
    x: Tensor, *, curv: float | Tensor, min_radius: float = 0.1, eps: float | None = None
) -> Tensor:
    """Half-aperture of the entailment cone at ``x``: :math:`\\arcsin(2K/(\\sqrt{c}\\lVert x\\rVert))`.

    ``(..., D) -> (...)``, values in ``(0, pi/2)``. ``min_radius`` (K) is the radius of the
    neighbourhood of the root where cones are not defined; inside it the aperture saturates at
    ``asin(1 - eps)`` (``eps`` keeps asin's derivative finite; ``None``: 1e-6 in float32, 1e-12 in float64).
    """
    check_points(x, "x")
    sc = _sqrt_curv(curv, x)
    eps = _eps(_UNIT_EPS, x.dtype, eps)
    arg = 2.0 * min_radius / (sc * _norm(x) + eps)
    return torch.asin(arg.clamp(min=-1.0 + eps, max=1.0 - eps))


@float32_math
def relative_half_aperture(x: Tensor, *, ratio: float, scale: Tensor, eps: float | None = None) -> Tensor:
    """Half-aperture with a radius relative to a length scale: :math:`\\arcsin(r\\,s / \\lVert x\\rVert)`.

    This is :func:`half_aperture` with ``2K = r * sqrt(c) * s``: the curvature cancels, so the value
    (and therefore the gradient) does not depend on it. ``scale`` ``s`` is a length statistic of the
    points (a 0-d tensor, e.g. their mean norm) and may carry gradients; scaling ``x`` and ``s``
    together leaves the aperture unchanged. ``(..., D) -> (...)``, saturated at ``asin(1 - eps)``
    where ``|x| <= r s``.
    """
    check_points(x, "x")
    eps = _eps(_UNIT_EPS, x.dtype, eps)
    arg = ratio * scale.to(x.dtype) / _norm(x)
    return torch.asin(arg.clamp(min=-1.0 + eps, max=1.0 - eps))


@float32_math
def exterior_angle(x: Tensor, y: Tensor, *, curv: float | Tensor, eps: float | None = None) -> Tensor:
    """Exterior angle at ``x`` of the triangle (root, ``x``, ``y``), :math:`\\pi` minus the interior angle.

    :math:`\\phi(x,y) = \\arccos\\big((y_t + c\\langle x,y\\rangle_L x_t) /
    (\\lVert x\\rVert\\sqrt{(c\\langle x,y\\rangle_L)^2 - 1})\\big)`. ``(..., D), (..., D) -> (...)``,
    values in ``[0, pi]``; 0 when ``y`` lies on the ray root -> ``x`` beyond ``x``. ``eps`` keeps the
    square root and arccos away from their infinite-derivative points (``None``: as :func:`half_aperture`).
    """
    check_points(x, "x")
    check_points(y, "y")
    check_same_dim(x, y, "x", "y")
    eps = _eps(_UNIT_EPS, x.dtype, eps)
    sc = _sqrt_curv(curv, x)
    c_inner = sc**2 * inner(x, y, curv=curv)
    numer = time_component(y, curv=curv) + c_inner * time_component(x, curv=curv)
    denom = _norm(x) * torch.sqrt((c_inner**2 - 1).clamp(min=eps))
    return torch.acos((numer / (denom + eps)).clamp(min=-1.0 + eps, max=1.0 - eps))


@float32_math
def query_index_vectors(x: Tensor, *, curv: float | Tensor) -> Tensor:
    """``[x, x_t]``: with :func:`gallery_index_vectors` the plain inner product is ``<x, y>_L``.

    ``(..., D) -> (..., D + 1)``. Since distance decreases monotonically with ``<x, y>_L``, a
    maximum-inner-product index over these vectors returns exact geodesic nearest neighbours.
    """
    return torch.cat([x, time_component(x, curv=curv).unsqueeze(-1)], dim=-1)


@float32_math
def gallery_index_vectors(y: Tensor, *, curv: float | Tensor) -> Tensor:
    """``[y, -y_t]``, the gallery side of :func:`query_index_vectors`. ``(..., D) -> (..., D + 1)``."""
    return torch.cat([y, -time_component(y, curv=curv).unsqueeze(-1)], dim=-1)


@float32_math
def dist_from_index_inner(ip: Tensor, *, curv: float | Tensor, eps: float | None = None) -> Tensor:
    """Geodesic distance from an index inner product ``<x, y>_L`` (any shape)."""
    sc = _sqrt_curv(curv, ip)
    return _acosh_dist(-(sc**2) * ip, sc, eps)


@float32_math
def index_inner_rows(q: Tensor, rows: Tensor, *, curv: float | Tensor) -> tuple[Tensor, Tensor]:
    """Index inner products of query index vectors ``q`` ``(Q, D + 1)`` (:func:`query_index_vectors`)
    with each query's own points ``rows`` ``(Q, C, D)``, and the norms of the rows' gallery index
    vectors: ``(Q, C)`` each. Equal to building :func:`gallery_index_vectors` of the rows, without
    the copy (one matrix-vector product per query and one norm per row)."""
    squared = torch.linalg.vector_norm(rows, dim=-1).square()
    t = torch.sqrt(1.0 / _sqrt_curv(curv, rows) ** 2 + squared)
    ip = torch.bmm(rows, q[:, :-1].unsqueeze(2)).squeeze(2) - q[:, -1:] * t
    return ip, torch.sqrt(squared + t * t)


@float32_math
def to_hyperboloid(x: Tensor, *, curv: float | Tensor) -> Tensor:
    """Full hyperboloid coordinates ``[x_t, x]`` (geoopt ``Lorentz(k=1/curv)``). ``(..., D) -> (..., D +
    1)``."""
    return torch.cat([time_component(x, curv=curv).unsqueeze(-1), x], dim=-1)


@float32_math
def to_poincare(x: Tensor, *, curv: float | Tensor) -> Tensor:
    """Map to the **unit** Poincare ball: :math:`\\sqrt{c}\\, x / (1 + \\sqrt{c} x_t)`. ``(..., D) -> (...,
    D)``.

    The ball of radius ``1/sqrt(curv)`` is rescaled to radius 1 for plotting; the distance to the
    root is ``2 atanh(|p|) / sqrt(curv)``.
    """
    sc = _sqrt_curv(curv, x)
    return sc * x / (1.0 + sc * time_component(x, curv=curv)).unsqueeze(-1)
