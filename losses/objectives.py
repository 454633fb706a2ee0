"""Objectives as declarative, weighted lists of loss terms over named embeddings.

Embedding names: ``T``, ``V`` (safe text/image, trained towers), ``T*``, ``V*`` (unsafe),
``T0``, ``V0``, ``T0*``, ``V0*`` (the same inputs through the frozen original towers), and
``T0^``, ``V0^`` (frozen embeddings of the proximal safe target, SafeR-CLIP); with a Hugging Face
text tower, ``S``, ``S*`` (its text model's sentence embeddings, before the CLIP projection, of the
safe and unsafe captions) and ``S0``, ``S0*`` (the same before LoRA: HySAC's text anchor), and ``F``,
``F*`` (the captions' text embeddings as the language model before LoRA gives them, through the current
projection and lift) and ``T~``, ``T*~`` (the trained text embeddings from a pass without dropout): HySAC's
root anchor.

A term input may join populations along the batch with ``|`` (``"T|T*"``: safe then unsafe
texts), so that they compete in one softmax.

An objective is evaluated in the model's :class:`~hysafe.geometry.Space`: contrastive terms use
``space.similarity`` (negative geodesic distance in the Lorentz model, cosine otherwise), so no
objective names a geometry; entailment terms need a hyperbolic space. It returns the weighted
total and every term's value by name, for logging.
(Over 300 lines: the term algebra and the papers' objectives written in it, side by side.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor

from hysafe.geometry import Space

from .contrastive import symmetric_info_nce
from .entailment import ConeConfig, entailment_loss
from .ordering import root_gap_loss, root_order_loss
from .redirection import cosine_distance_loss, redirection_loss

__all__ = [
    "LossContext",
    "Term",
    "Objective",
    "TermValues",
    "hysac_objective",
    "safeclip_objective",
    "safer_clip_objective",
    "SAFER_IMAGE_TARGETS",
    "clip_pretrain_objective",
    "OBJECTIVES",
    "get_objective",
]


@dataclass(frozen=True)
class LossContext:
    """What the terms need besides embeddings: the space (with its live curvature), the logit
    scale and the cone settings."""

    space: Space
    logit_scale: Tensor | float
    cones: ConeConfig = ConeConfig()
    redirection_scale: Tensor | float = 1.0
    order_margin: float = 0.0


def _contrastive(ctx: LossContext, a: Tensor, b: Tensor) -> Tensor:
    return symmetric_info_nce(a, b, similarity=ctx.space.similarity, logit_scale=ctx.logit_scale)


def _curv(ctx: LossContext, terms: str) -> Tensor | float:
    """The curvature of ``ctx``'s space, which ``terms`` need to be hyperbolic."""
    if not ctx.space.hyperbolic:
        raise ValueError(f"{terms} terms need a hyperbolic space, got {ctx.space.name!r}")
    return ctx.space.curv


def _entailment(ctx: LossContext, x: Tensor, y: Tensor) -> Tensor:
    return entailment_loss(x, y, curv=_curv(ctx, "entailment"), **ctx.cones.loss_options())


def _root_order(ctx: LossContext, x: Tensor, y: Tensor, pairs: str = "rows") -> Tensor:
    return root_order_loss(x, y, curv=_curv(ctx, "root order"), margin=ctx.order_margin, pairs=pairs)


def _root_gap(ctx: LossContext, x: Tensor, y: Tensor) -> Tensor:
    return root_gap_loss(x, y, curv=_curv(ctx, "root gap"))


LOSSES: dict[str, Callable[..., Tensor]] = {
    "contrastive": _contrastive,
    "entailment": _entailment,
    "root_order": _root_order,
    "root_rank": lambda ctx, x, y: _root_order(ctx, x, y, pairs="batch"),
    "root_gap": _root_gap,
    "cosine": lambda ctx, x, target: cosine_distance_loss(x, target),
    "redirection": lambda ctx, anchor, neg, pos: redirection_loss(
        anchor, neg, pos, scale=ctx.redirection_scale
    ),
}


#: embedding names that only a frozen reference tower gives (a SafeCLIP model's)
REFERENCE_INPUTS = frozenset({"T0", "V0", "T0*", "V0*", "T0^", "V0^"})

#: loss kinds defined in a hyperbolic space only
HYPERBOLIC_LOSSES = ("entailment", "root_order", "root_rank", "root_gap")

#: loss kinds that read :attr:`Objective.order_margin`
ORDER_LOSSES = ("root_order", "root_rank")


def _resolve(embeddings: dict[str, Tensor], name: str) -> Tensor:
    return embeddings[name] if "|" not in name else torch.cat([embeddings[p] for p in name.split("|")])


@dataclass(frozen=True)
class Term:
    """One weighted loss term: ``weight * LOSSES[loss](ctx, *embeddings[inputs])``."""

    loss: str
    inputs: tuple[str, ...]
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {sorted(LOSSES)}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.loss}({','.join(self.inputs)})")


@dataclass(frozen=True)
class Objective:
    """A named list of terms; ``normalize`` divides the total by the sum of weights (once).

    ``fixed_logit_scale`` replaces the model's learnable scale (Safe-CLIP uses a fixed 100);
    ``cones`` configures the entailment terms; ``redirection_scale`` is the temperature of the
    redirection terms (``None``: the same logit scale as the contrastive terms); ``pair_quantile``
    is SafeR-CLIP's target rule (:func:`safer_clip_objective`); ``order_margin`` the margin of the
    root-order terms (:func:`hysac_objective`)."""

    name: str
    terms: tuple[Term, ...]
    normalize: bool = False
    fixed_logit_scale: float | None = None
    cones: ConeConfig = ConeConfig()
    redirection_scale: float | None = None  # temperature of redirection terms; None: the logit scale
    pair_quantile: float = (
        0.0  # SafeR-CLIP targets: own pair when among this top share of safe captions (0: the nearest)
    )
    order_margin: float = 0.0  # margin of root_order / root_rank terms, on the log of the distance
    needs_reference: bool = field(init=False, default=False)
    needs_hyperbolic: bool = field(init=False, default=False)

    def __post_init__(self):
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate term names in objective {self.name!r}: {names}")
        object.__setattr__(self, "needs_reference", bool(self.inputs & REFERENCE_INPUTS))
        hyperbolic = any(t.loss in HYPERBOLIC_LOSSES for t in self.terms)
        object.__setattr__(self, "needs_hyperbolic", hyperbolic)

    def check_space(self, space: Space) -> None:
        """Raise if the objective cannot be evaluated in ``space`` (cones need a hyperbolic one)."""
        if self.needs_hyperbolic and not space.hyperbolic:
            raise ValueError(
                f"objective {self.name!r} has entailment-cone or root-order terms and needs a "
                f"hyperbolic space (a HySAC model), got a {space.name!r} space"
            )

    @property
    def inputs(self) -> set[str]:
        """Atomic embedding names the terms read (joined inputs ``"A|B"`` split)."""
        return {part for t in self.terms for i in t.inputs for part in i.split("|")}

    def with_weights(self, **weights: float) -> "Objective":
        """Copy with some term weights changed, by term name (``with_weights(**{"entailment(T,V)":
        0.5})``)."""
        unknown = set(weights) - {t.name for t in self.terms}
        if unknown:
            raise ValueError(f"no term named {sorted(unknown)} in objective {self.name!r}")
        terms = tuple(replace(t, weight=weights.get(t.name, t.weight)) for t in self.terms)
        return replace(self, terms=terms)

    def __call__(
        self, embeddings: dict[str, Tensor], space: Space, logit_scale: Tensor | float | None = None
    ) -> tuple[Tensor, "TermValues"]:
        """Weighted total and per-term values of the embeddings in ``space`` (pass the model's
        ``live_space`` and ``logit_scale`` when training)."""
        missing = self.inputs - set(embeddings)
        if missing:
            raise ValueError(f"objective {self.name!r} needs embeddings {sorted(missing)}")
        self.check_space(space)
        scale = self.fixed_logit_scale if self.fixed_logit_scale is not None else logit_scale
        if scale is None:
            raise ValueError(f"objective {self.name!r} needs the model's logit_scale")
        redirection = scale if self.redirection_scale is None else self.redirection_scale
        ctx = LossContext(space, scale, self.cones, redirection, self.order_margin)
        total: Tensor | float = 0.0
        values: dict[str, Tensor] = {}
        for term in self.terms:
            value = LOSSES[term.loss](ctx, *(_resolve(embeddings, i) for i in term.inputs))
            total = total + term.weight * value
            values[term.name] = value.detach()
        if self.normalize:
            total = total / sum(t.weight for t in self.terms)
        values["total"] = total.detach()
        return total, TermValues(values)


class TermValues(Mapping[str, float]):
    """Per-term loss values (and ``"total"``) as floats, copied from the device in one transfer on
    first read: a training step whose values nobody reads (no log, callback or progress line at that
    step) waits on no host-device synchronisation."""

    def __init__(self, tensors: dict[str, Tensor]):
        self._tensors, self._floats = tensors, None

    def _values(self) -> dict[str, float]:
        if self._floats is None:
            tensors = [t.reshape(()) for t in self._tensors.values()]
            dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
            values = torch.stack([t.to(dtype) for t in tensors]).tolist()
            self._floats = dict(zip(self._tensors, values, strict=True))
        return self._floats

    def __getitem__(self, name: str) -> float:
        return self._values()[name]

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"TermValues({self._values()})"


#: HySAC's order of the populations by distance to the root, per quadruplet (the slides: g(T) < g(V) <
#: g(T*) < g(V*)); consecutive pairs are the root-order terms
ROOT_ORDER = ("T", "V", "T*", "V*")

#: each modality's safe and unsafe member, the pairs the NSFW classifier separates by distance to the root
SAFETY_PAIRS = (("T", "T*"), ("V", "V*"))


def hysac_objective(
    entailment_weight: float = 1.0,
    cones: ConeConfig | None = None,
    *,
    safety_cones: bool = False,
    order_weight: float = 0.0,
    order_margin: float = 0.1,
    rank_weight: float = 0.0,
    safety_rank_weight: float = 0.0,
    text_anchor: float = 0.0,
    root_anchor: float = 0.0,
) -> Objective:
    """HySAC: 4 contrastive terms (geodesic logits in the model's Lorentz space) + 3 entailment
    terms weighted by lambda, with cone settings ``cones`` (default ``ConeConfig()``): the
    reference code's objective with the defaults.

    Two named options of hysafe's, off by default: ``safety_cones`` adds the within-modality
    entailments "T entails T*" and "V entails V*" (weight lambda: the unsafe member of a pair is the
    more specific one, the slides' g(T) < g(T*), g(V) < g(V*)); ``order_weight > 0`` adds the
    root-order hinges along :data:`ROOT_ORDER` (:func:`~hysafe.losses.ordering.root_order_loss`,
    margin ``order_margin`` on the log of the distance); ``rank_weight > 0`` adds the same hinges
    between the populations, every row of the batch against every row (``pairs="batch"``: the
    ROC-AUC's surrogate), with the same margin; ``safety_rank_weight > 0`` adds those batch
    hinges within each modality, every T nearer the root than every T* and every V than every V*
    (:data:`SAFETY_PAIRS`: the surrogate of the very ROC-AUC and tails the safety checks judge,
    which the chain along :data:`ROOT_ORDER` reaches only through the other modality);
    ``text_anchor > 0`` (a Hugging Face text tower
    only) adds the cosine distance of the text model's sentence embeddings to its own before LoRA
    (``S`` to ``S0``, ``S*`` to ``S0*``), so that the fine-tune keeps what the language model knows of
    wordings training never shows; ``root_anchor > 0`` (a Hugging Face text tower only) adds
    the gap between each caption's distance to the root and the distance the same projection and lift
    give the language model's sentence embedding before LoRA (``T~`` to ``F``, ``T*~`` to ``F*``,
    :func:`~hysafe.losses.ordering.root_gap_loss`), so that what the classifier reads, the distance, stays
    a function of what the untouched language model knows of a caption while LoRA learns to retrieve.
    ``T~`` comes from one more pass of the text tower with its dropout off, so the gap is zero at the start
    of a fine-tune; the text anchor compares the training pass itself (``S``: with the text model's
    dropout) with a cached pass without it (``S0``), so in training it also asks the sentence embedding
    to be insensitive to dropout."""
    if not isinstance(safety_cones, bool):
        raise ValueError(f"HySAC safety_cones must be True or False, got {safety_cones!r}")
    weights = {
        "order_weight": order_weight,
        "order_margin": order_margin,
        "rank_weight": rank_weight,
        "safety_rank_weight": safety_rank_weight,
        "text_anchor": text_anchor,
        "root_anchor": root_anchor,
    }
    for name, value in weights.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            raise ValueError(f"HySAC {name} must be a finite number >= 0, got {value!r}")
    c, e = "contrastive", "entailment"
    terms = [
        Term(c, ("T", "V")),
        Term(c, ("T*", "V*")),
        Term(c, ("T", "V*")),
        Term(c, ("T*", "V")),
        Term(e, ("T", "V"), entailment_weight),
        Term(e, ("T*", "V*"), entailment_weight),
        Term(e, ("V", "T*"), entailment_weight),
    ]
    if safety_cones:
        terms += [Term(e, ("T", "T*"), entailment_weight), Term(e, ("V", "V*"), entailment_weight)]
    steps = list(zip(ROOT_ORDER[:-1], ROOT_ORDER[1:], strict=True))
    if order_weight > 0:
        terms += [Term("root_order", step, order_weight) for step in steps]
    if rank_weight > 0:
        terms += [Term("root_rank", step, rank_weight) for step in steps]
    if safety_rank_weight > 0:
        terms += [Term("root_rank", pair, safety_rank_weight) for pair in SAFETY_PAIRS]
    if text_anchor > 0:
        terms += [Term("cosine", ("S", "S0"), text_anchor), Term("cosine", ("S*", "S0*"), text_anchor)]
    if root_anchor > 0:
        terms += [Term("root_gap", ("T~", "F"), root_anchor), Term("root_gap", ("T*~", "F*"), root_anchor)]
    return Objective(
        name="hysac",
        cones=ConeConfig() if cones is None else cones,
        terms=tuple(terms),
        order_margin=order_margin,
    )


def safeclip_objective() -> Objective:
    """Safe-CLIP: four cosine (redirection / preservation) and four contrastive terms, fixed scale 100."""
    cos, c = "cosine", "contrastive"
    return Objective(
        name="safeclip",
        normalize=True,
        fixed_logit_scale=100.0,
        terms=(
            Term(cos, ("T", "T0"), 0.1),
            Term(cos, ("T*", "T0"), 0.1),
            Term(cos, ("V", "V0"), 0.1),
            Term(cos, ("V*", "V0"), 0.2),
            Term(c, ("T", "V0"), 0.25),
            Term(c, ("T*", "V0"), 0.25),
            Term(c, ("T0", "V"), 0.25),
            Term(c, ("T0", "V*"), 0.5),
        ),
    )


#: SafeR-CLIP's image-side targets (the poster leaves them open): the frozen image of the quadruplet's own
#: safe image (``paired``, the default) or of the row whose caption is the proximal target (``proximal``)
SAFER_IMAGE_TARGETS = {"proximal": "V0^", "paired": "V0"}


def safer_clip_objective(
    redirection_weight: float = 0.5,
    image_target: str = "paired",
    redirection_scale: float | None = None,
    pair_quantile: float = 0.0,
) -> Objective:
    """SafeR-CLIP: Safe-CLIP's structure with unsafe inputs redirected to their *proximal* safe
    target (``T0^``, by default the poster's rule: the nearest safe caption under the frozen text
    tower; ``V0^`` its row's image) by relative redirection terms that use the unsafe pair as the
    hard negative.

    Safe-CLIP's two unsafe InfoNCE terms, (T*, V0) and (T0, V*), are *replaced* by the two
    redirection terms (the poster: "the unsafe pair as a targeted hard negative, rather than random
    batch negatives"); its cosine and safe InfoNCE terms are kept with Safe-CLIP's weights, the
    unsafe cosine terms aimed at the proximal targets.

    The poster gives the redirection loss, not its weight next to the preservation terms
    (``redirection_weight``, Safe-CLIP's weight of its unsafe-image terms by default), nor the
    target of the text-to-image side (``image_target``: ``"paired"``, the unsafe input's own safe
    image, by default: the proximal target is chosen among *captions*, and the image of another
    row is no counterpart of this unsafe image; or ``"proximal"``, that row's image), nor a
    temperature (``redirection_scale``; default ``None``: the objective's logit scale 100, the one
    temperature of every similarity term; ``1.0`` is the formula as written, which redirects nothing
    next to InfoNCE terms at scale 100, docs/worlds.md). ``pair_quantile`` is a named variant of the
    target rule: the unsafe input's own safe pair is the target when it ranks within this top share
    of all safe captions by frozen cosine, else the nearest caption is (default 0: always the
    nearest, as published)."""
    if not 0.0 <= pair_quantile <= 1.0:
        raise ValueError(f"SafeR-CLIP pair_quantile must be in [0, 1], got {pair_quantile}")
    if image_target not in SAFER_IMAGE_TARGETS:
        raise ValueError(
            f"SafeR-CLIP image_target must be one of {sorted(SAFER_IMAGE_TARGETS)}, got {image_target!r}"
        )
    if not redirection_weight > 0:
        raise ValueError(f"SafeR-CLIP redirection_weight must be > 0, got {redirection_weight}")
    if redirection_scale is not None and not redirection_scale > 0:
        raise ValueError(f"SafeR-CLIP redirection_scale must be > 0, got {redirection_scale}")
    cos, c, r = "cosine", "contrastive", "redirection"
    image = SAFER_IMAGE_TARGETS[image_target]
    return Objective(
        name="safer-clip",
        normalize=True,
        fixed_logit_scale=100.0,
        redirection_scale=redirection_scale,
        pair_quantile=pair_quantile,
        terms=(
            Term(cos, ("T", "T0"), 0.1),
            Term(cos, ("T*", "T0^"), 0.1),
            Term(cos, ("V", "V0"), 0.1),
            Term(cos, ("V*", image), 0.2),
            Term(c, ("T", "V0"), 0.25),
            Term(c, ("T0", "V"), 0.25),
            Term(r, ("V*", "T0*", "T0^"), redirection_weight),
            Term(r, ("T*", "V0*", image), redirection_weight),
        ),
    )


def clip_pretrain_objective() -> Objective:
    """Plain CLIP training on safe and unsafe pairs alike (stands in for web-scale pretraining
    that has seen unsafe data): one contrastive term over the joined batch ``[T; T*]`` vs
    ``[V; V*]`` with the model's logit scale, so safe and unsafe versions are negatives of each other."""
    return Objective(name="clip-pretrain", terms=(Term("contrastive", ("T|T*", "V|V*")),))


OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "clip-pretrain": clip_pretrain_objective,
    "hysac": hysac_objective,
    "safeclip": safeclip_objective,
    "safer-clip": safer_clip_objective,
}


def get_objective(objective: str | Objective) -> Objective:
    """An :class:`Objective` by name (``OBJECTIVES``), or the objective itself."""
    if isinstance(objective, Objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[objective]()
