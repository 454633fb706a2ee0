"""Root-directed safety traversal, batched and geodesically exact.

An unsafe query sits far from the root; ``traverse`` moves every query whose distance to the root
exceeds ``tau`` onto the geodesic ray toward the root, at distance exactly ``tau``, and leaves the
others untouched (bit for bit). The reference code instead set the *space norm* to ``tau``,
which lands at ``asinh(sqrt(c) tau)/sqrt(c) < tau``; here ``q' = exp_map0(tau * u)`` with
``u`` the unit direction of ``log_map0(q)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hysafe.geometry import Space

from ..populations import POPULATIONS, steer_target

__all__ = [
    "DEFAULT_TAU",
    "TRAINED_TAU",
    "check_tau_rule",
    "PAPER_STAT",
    "STATS",
    "TAU_ALIASES",
    "TauRule",
    "check_bounds",
    "traverse",
    "traversal_path",
    "paper_tau",
    "resolve_tau",
]

#: the traversal rule used by the API, the CLI, the demo and the evaluation unless told otherwise:
#: each model's own rule (``SafetyModel.traversal_rule``, carried by its checkpoint), else
#: :data:`TRAINED_TAU`
DEFAULT_TAU = "model"
#: the rule of a hysafe-trained model: the mean distance to the root of the safe population the query
#: is steered to
TRAINED_TAU = "avg"
#: statistics stored per population in a model's safety bounds
STATS = ("avg", "low_05", "up_95")
BOUND_NAMES = tuple(p.bound for p in POPULATIONS)
#: statistic the paper's formula is applied to unless told: the released HySAC code's choice, the 95th
#: percentile of the target population (``traverse_to_safe_image/text``)
PAPER_STAT = "up_95"
#: named rules: ``authors`` is the released code's rule (geodesically exact here), the same as ``paper``
TAU_ALIASES = {"authors": "paper:up_95"}


def traverse(query: Tensor, tau: float | Tensor, space: Space | None = None) -> Tensor:
    """Move queries ``(B, D)`` farther than ``tau`` from the root to distance ``tau`` along their ray.

    ``tau`` is a number or a ``(B,)`` tensor; ``space`` the embeddings' space (``model.space``).
    Rows with ``d0 <= tau`` are returned unchanged. With a model at hand, ``model.traverse(query,
    tau)`` does the same with the model's space and accepts tau rules (``"avg"``, ``"up_95"``, ...).
    """
    if space is None:
        raise TypeError(
            "traverse(query, tau, space) needs the embeddings' space "
            "(model.space); or call model.traverse(query, tau)"
        )
    tau_t = torch.as_tensor(tau, dtype=query.dtype, device=query.device)
    if tau_t.dim() > 0 and tau_t.shape != query.shape[:1]:
        raise ValueError(
            f"tau must be a number or one value per query ({query.shape[0]},), got shape {tuple(tau_t.shape)}"
        )
    if not bool(((tau_t >= 0) & torch.isfinite(tau_t)).all()):
        raise ValueError(f"tau must be finite and >= 0, got {tau}")
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


def check_bounds(bounds, source: str = "bounds") -> dict | None:
    """Safety bounds as stored with a model: ``{POP: {STAT: distance}}`` with POP a bound name and
    every value a finite distance >= 0. Returns them; raises naming the bad entry."""
    if bounds is None:
        return None
    if not isinstance(bounds, dict):
        raise ValueError(f"{source}: safety bounds must be a mapping, got {type(bounds).__name__}")
    for pop, stats in bounds.items():
        if pop not in BOUND_NAMES or not isinstance(stats, dict):
            raise ValueError(
                f"{source}: bounds entry {pop!r} is not one of {list(BOUND_NAMES)} with statistics"
            )
        for stat, value in stats.items():
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            )
            if not ok:
                raise ValueError(f"{source}: bound {pop}.{stat} = {value!r} is not a finite distance >= 0")
    return bounds


def paper_tau(mu: float, *, curv: float, alpha: float = 0.8) -> float:
    """HySAC's rule ``tau = mu + tanh((mu - alpha) / c) + 1`` (``mu``: the target safe
    population's distance-to-root statistic, ``c``: the curvature, ``alpha = 0.8``)."""
    return mu + math.tanh((mu - alpha) / curv) + 1.0


@dataclass(frozen=True)
class TauRule:
    """A parsed tau rule: the statistic ``stat`` of a population's distance to the root, used as
    is or through :func:`paper_tau` (``paper``). ``population`` is a bound name (``S``, ``V``,
    ``U``, ``G``) or ``None`` for "the safe population the query is steered to"."""

    stat: str = "avg"
    population: str | None = None
    paper: bool = False

    @classmethod
    def parse(cls, spec: str) -> "TauRule":
        """``[paper:][POP.]STAT``, ``[paper:]POP`` or ``paper``; e.g. ``avg``, ``up_95``,
        ``V.avg``, ``S.up_95``, ``paper``, ``paper:V``, ``paper:V.avg``; or a name from
        :data:`TAU_ALIASES` (``authors``). Without a statistic, a plain rule takes the mean and the
        paper's rule takes :data:`PAPER_STAT` (the authors' 95th percentile)."""
        spec = TAU_ALIASES.get(spec, spec)
        paper = spec == "paper" or spec.startswith("paper:")
        rest = spec.removeprefix("paper:") if spec != "paper" else ""
        pop, dot, stat = rest.partition(".")
        if not dot and pop not in BOUND_NAMES:  # a single word is a statistic
            pop, stat = "", pop
        stat = stat or (PAPER_STAT if paper else "avg")
        if not spec or pop and pop not in BOUND_NAMES or stat not in STATS:
            raise ValueError(
                f"bad tau rule {spec!r}: use a number, a statistic "
                f"({', '.join(STATS)}), POP.STAT with POP one of "
                f"{', '.join(BOUND_NAMES)} (e.g. 'V.avg'), the paper's rule "
                f"('paper', 'paper:V', 'paper:V.up_95') or 'authors'"
            )
        return cls(stat=stat, population=pop or None, paper=paper)

    def resolve(self, bounds: dict | None, *, curv: float | None, query: str = "text") -> float:
        pop = self.population or steer_target(query).bound
        if bounds is None:
            raise ValueError(
                "this tau rule needs safety bounds, but the model has none "
                "(train it or load a checkpoint with bounds)"
            )
        if pop not in bounds or self.stat not in bounds[pop]:
            raise ValueError(
                f"no bound {pop}.{self.stat}; the model's bounds have "
                f"{sorted(bounds)} x {sorted(next(iter(bounds.values()), {}))}"
            )
        mu = float(bounds[pop][self.stat])
        if not math.isfinite(mu):
            raise ValueError(f"bound {pop}.{self.stat} is {mu}: the model's safety bounds are corrupt")
        if not self.paper:
            return mu
        if curv is None:
            raise ValueError("the paper's tau rule needs the curvature of a hyperbolic space")
        return paper_tau(mu, curv=curv)


def check_tau_rule(rule: str | None, where: str) -> str | None:
    """``rule`` if it is None, a number written as text or a rule :meth:`TauRule.parse` accepts (a
    model's stored traversal rule), else a ValueError naming ``where``."""
    if rule is None:
        return None
    try:
        float(rule)
        return rule
    except (TypeError, ValueError):
        pass
    try:
        TauRule.parse(rule)
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{where}: bad traversal rule {rule!r} ({e})") from None
    return rule


def resolve_tau(
    tau: float | str | TauRule, *, bounds: dict | None = None, space: Space | None = None, query: str = "text"
) -> float:
    """A traversal distance from a number or a rule (the one grammar of :meth:`TauRule.parse`).

    A rule without a population uses the one the query is steered to
    (:func:`~hysafe.populations.steer_target`): ``V`` (safe images) for text queries, ``S`` (safe
    texts) for image queries; ``query`` is a modality or a population key (``"T*"``).
    """
    if isinstance(tau, str):
        try:
            tau = float(tau)  # "0.25", "2e-1" (and "nan", rejected below)
        except ValueError:
            pass
    if tau == DEFAULT_TAU:
        raise ValueError(
            f"tau rule {DEFAULT_TAU!r} is a model's own rule: resolve it with model.tau() / model.traverse()"
        )
    if isinstance(tau, (int, float)) and not isinstance(tau, bool):
        value = float(tau)
    elif isinstance(tau, (str, TauRule)):
        rule = tau if isinstance(tau, TauRule) else TauRule.parse(tau)
        curv = float(space.curv) if space is not None and space.hyperbolic else None
        value = rule.resolve(bounds, curv=curv, query=query)
    else:
        raise ValueError(f"tau must be a number or a rule string, got {tau!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"tau must be a finite number >= 0, got {value}")
    return value
