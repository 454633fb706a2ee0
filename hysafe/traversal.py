"""Root-directed safety traversal, batched and geodesically exact.

An unsafe query sits far from the root; ``traverse`` moves every query whose distance to the root
exceeds ``tau`` onto the geodesic ray toward the root, at distance exactly ``tau``, and leaves the
others untouched (bit for bit). The reference code instead set the *space norm* to ``tau``,
which lands at ``asinh(sqrt(c) tau)/sqrt(c) < tau``; here ``q' = exp_map0(tau * u)`` with
``u`` the unit direction of ``log_map0(q)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hysafe.geometry import LorentzSpace, Space

__all__ = ["traverse", "traversal_path", "paper_tau", "resolve_tau"]


def traverse(query: Tensor, tau: float | Tensor, space: Space) -> Tensor:
    """Move queries ``(B, D)`` farther than ``tau`` from the root to distance ``tau`` along their ray.

    ``tau`` is a number or a ``(B,)`` tensor. Rows with ``d0 <= tau`` are returned unchanged.
    """
    tau_t = torch.as_tensor(tau, dtype=query.dtype, device=query.device)
    if bool((tau_t < 0).any()):
        raise ValueError(f"tau must be >= 0, got {tau}")
    d0 = space.dist_to_root(query)
    scale = torch.where(d0 > tau_t, space.root_ray_scale(query, tau_t), torch.ones_like(d0))
    return scale.unsqueeze(-1) * query  # untouched rows are multiplied by exactly 1: bit-identical


def traversal_path(query: Tensor, space: Space, *, steps: int = 8, tau: float | Tensor = 0.0) -> Tensor:
    """``steps`` points from each query to its traversal target (the root when ``tau=0``).

    ``(B, D) -> (steps, B, D)``, evenly spaced in distance along the geodesic, for inspection and plots.
    """
    target = traverse(query, tau, space)
    d_start, d_end = space.dist_to_root(query), space.dist_to_root(target)
    fractions = torch.linspace(0.0, 1.0, steps, dtype=query.dtype, device=query.device).unsqueeze(-1)
    distances = d_start + fractions * (d_end - d_start)  # (steps, B)
    return torch.stack([space.move_to_root_distance(query, d) for d in distances])


def paper_tau(mu: float, *, curv: float, alpha: float = 0.8) -> float:
    """HySAC's rule ``tau = mu + tanh((mu - alpha) / c) + 1`` (``mu``: the target safe
    population's distance-to-root statistic, ``c``: the curvature, ``alpha = 0.8``)."""
    return mu + math.tanh((mu - alpha) / curv) + 1.0


def resolve_tau(tau: float | str, *, bounds: dict | None = None, space: Space | None = None) -> float:
    """A traversal distance from a number or a rule string.

    * a number: used as is;
    * ``"V.avg"``, ``"S.up_95"``, ...: that statistic of the stored bounds (``V`` safe image,
      ``S`` safe text, ``G`` unsafe image, ``U`` unsafe text);
    * ``"paper:V"`` (or ``"paper:V.avg"``): :func:`paper_tau` of that statistic with the space's curvature.
    """
    if isinstance(tau, (int, float)):
        return float(tau)
    if not isinstance(tau, str):
        raise ValueError(f"tau must be a number or a rule string, got {tau!r}")
    rule, _, key = tau.partition(":") if ":" in tau else ("bound", "", tau)
    pop, _, stat = key.partition(".")
    stat = stat or "avg"
    if bounds is None:
        raise ValueError(f"tau={tau!r} needs safety bounds, but the model has none (train it or load a checkpoint with bounds)")
    if pop not in bounds or stat not in bounds[pop]:
        raise ValueError(f"tau={tau!r}: no bound {pop}.{stat}; available {sorted(bounds)} x {sorted(next(iter(bounds.values())))}")
    mu = float(bounds[pop][stat])
    if rule == "bound":
        return mu
    if rule == "paper":
        curv = space.curv if isinstance(space, LorentzSpace) else 1.0
        return paper_tau(mu, curv=curv)
    raise ValueError(f"unknown tau rule {rule!r}; use a number, 'V.avg' or 'paper:V'")
