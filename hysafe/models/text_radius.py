"""HySAC's linear text radius (hysafe's option, ``ModelConfig(text_radius="linear")``; off by default).

As published, a HySAC text embedding is ``exp_map0(alpha * f)`` with ``f`` the CLIP text projection of
the text model's sentence embedding ``S``: its distance to the root, which the NSFW classifier reads, is
``alpha * |f|``, the norm of the same projection retrieval reads directions from. With the linear text
radius the two are separate: the direction stays ``f / |f|`` and the distance to the root is

    d0 = exp(w . S + b)

a linear read of the sentence embedding on the log scale (the way a logistic probe reads it), trained by
HySAC's own losses. ``w`` starts at zero and ``b`` at the log of the median distance the published lift
gives the training captions (:meth:`hysafe.models.HySAC.calibrate`), so every caption starts there.

With ``text_radius="linear-frozen"`` (round 7's option) ``S`` is the sentence embedding of the text model
*before* LoRA, ``S0`` (the adapters switched off; cached per caption, so a fine-tune computes each caption's
once): the read a logistic probe on the untouched language model makes, trained by HySAC's losses, while
LoRA shapes the directions. A merged copy has no adapters to switch off: it reads ``S0`` from the text tower
of the weights it was fine-tuned from (its recorded ``origin``, :func:`unadapted_text_tower`).

With ``text_radius="probe"`` (round 8's option) the head reads the direction ``S / |S|`` of the adapted
sentence embedding, and at the end of training its read is refitted as the report's logistic probe is
(:mod:`hysafe.training.radius_probe`).

Needs a Hugging Face text tower (``S``: its pooled output, the projection's input, captured from the same
forward pass). ``w`` and ``b`` are trainable tensors beside the backbone: adapter checkpoints hold them as
tensors, merged ones (plain open_clip files) in their metadata, like HySAC's scalars.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import Tensor, nn

from hysafe.geometry import lorentz as L

__all__ = [
    "TEXT_RADII",
    "LinearTextRadius",
    "projection_inputs",
    "radial_lift",
    "check_text_radius",
    "load_text_radius",
    "unadapted_text_tower",
    "check_mergeable",
    "carry_text_before_lora",
]

#: ``ModelConfig.text_radius`` values: "norm" as published; "linear" (the adapted sentence embedding),
#: "linear-frozen" (the sentence embedding before LoRA) and "probe" (the adapted sentence embedding's
#: direction, the head fitted as a logistic probe at the end of training) hysafe's options
TEXT_RADII = ("norm", "linear", "linear-frozen", "probe")
#: the value whose head reads the text model before LoRA
FROZEN_RADIUS = "linear-frozen"
#: the value whose head reads unit sentence embeddings and is fitted as the probe after training
PROBE_RADIUS = "probe"


def check_text_radius(value: str, kind: str) -> None:
    """Refuse an unknown ``text_radius`` or a linear one on a model that is not HySAC."""
    if value not in TEXT_RADII:
        raise ValueError(f"text_radius must be one of {list(TEXT_RADII)}, got {value!r}")
    if value != "norm" and kind != "hysac":
        raise ValueError(
            f"text_radius={value!r} sets the distance to the root of HySAC's text embeddings; "
            f"a {kind!r} model has no such distance"
        )


class LinearTextRadius(nn.Module):
    """``log d0 = w . S + b`` over the text model's sentence embeddings ``S`` ``(B, width)``; with
    ``unit``, over their directions ``S / |S|`` (``text_radius="probe"``, the probe's input)."""

    def __init__(self, width: int, *, unit: bool = False):
        super().__init__()
        self.unit = unit
        self.linear = nn.Linear(width, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    def forward(self, sentences: Tensor) -> Tensor:
        """The log distances to the root ``(B,)`` (float32 math)."""
        sentences = sentences.float()
        if self.unit:
            sentences = nn.functional.normalize(sentences, dim=-1)
        return self.linear(sentences).squeeze(-1)

    @torch.no_grad()
    def set_read(self, direction: Tensor, scores: Tensor, reference: Tensor) -> None:
        """Read along ``direction`` ``(width,)``, scaled and offset so that the log distances of the
        sentences whose ``direction`` scores are ``scores`` have the mean and spread of ``reference``
        (their log distances before): the same place in the space, another order within it."""
        scores, reference = scores.double(), reference.double()
        spread = float(scores.std())
        if not (spread > 0 and math.isfinite(spread)):
            raise ValueError(f"a text radius read needs scores that vary, got a spread of {spread}")
        scale = float(reference.std()) / spread
        self.linear.weight.copy_((scale * direction.double()).reshape(1, -1).float())
        self.linear.bias.fill_(float(reference.mean()) - scale * float(scores.mean()))

    @property
    def untrained(self) -> bool:
        """Still as built: zero weights and bias (what :meth:`HySAC.calibrate` may set)."""
        return not bool(self.linear.weight.any()) and float(self.linear.bias.detach()) == 0.0

    def to_metadata(self) -> dict:
        """``{"weight": [...], "bias": b}``: the head as JSON (a merged checkpoint's metadata); float32
        values survive the round trip exactly."""
        weight = self.linear.weight.detach().cpu().flatten().tolist()
        return {"weight": weight, "bias": float(self.linear.bias.detach())}

    @torch.no_grad()
    def load_metadata_(self, state: object, source: str) -> None:
        """Set the head from :meth:`to_metadata`'s form, refusing a wrong width or non-finite values."""
        width = self.linear.in_features
        ok = isinstance(state, dict) and isinstance(state.get("weight"), list) and "bias" in state
        weight = state["weight"] if ok else []
        values = [*weight, state["bias"]] if ok else []
        ok = ok and len(weight) == width and all(_finite_number(v) for v in values)
        if not ok:
            raise ValueError(
                f"{source}: text_radius must be {{'weight': {width} finite numbers, 'bias': a finite "
                "number} (an edited or corrupt checkpoint?)"
            )
        self.linear.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(1, width))
        self.linear.bias.fill_(float(state["bias"]))

    @torch.no_grad()
    def start_at(self, distance: float) -> None:
        """Every caption at ``distance`` from the root (``w = 0``, ``b = log distance``)."""
        if not (distance > 0 and math.isfinite(distance)):
            raise ValueError(f"a start distance must be finite and > 0, got {distance}")
        self.linear.weight.zero_()
        self.linear.bias.fill_(math.log(distance))


def load_text_radius(model: nn.Module, meta: dict, source: str) -> None:
    """A merged checkpoint's linear text radius, from its metadata ``meta`` (where it is saved beside the
    scalars), refusing a head the config does not have and a config whose head the metadata lacks."""
    head = getattr(model, "text_radius", None)
    if head is None:
        if meta.get("text_radius") is not None:
            raise ValueError(
                f"{source}: its metadata holds a linear text radius but its config has text_radius="
                f"{model.config.text_radius!r} (an edited or corrupt checkpoint?)"
            )
        return
    if "text_radius" not in meta:
        raise ValueError(
            f"{source}: its config has text_radius={model.config.text_radius!r} but its metadata holds "
            "no text_radius"
        )
    head.load_metadata_(meta["text_radius"], source)


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def unadapted_text_tower(tower: nn.Module) -> nn.Module:
    """A frozen copy of an HF text tower with its LoRA layers taken out (not merged): the text model
    before the fine-tune, which ``text_radius="linear-frozen"`` reads. ``tower`` is left as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    copied = copy.deepcopy(tower)
    adapted = [name for name, m in copied.named_modules() if isinstance(m, BaseTunerLayer)]
    for name in adapted:
        parent, _, child = name.rpartition(".")
        owner = copied.get_submodule(parent) if parent else copied
        setattr(owner, child, getattr(owner, child).get_base_layer())
    return copied.requires_grad_(False).eval()


def check_mergeable(model: nn.Module, origin: str | None) -> None:
    """Refuse a merged save of a ``linear-frozen`` model that would not know its text model before LoRA:
    a merged file reads it from the weights it records as its ``origin``, and there are none."""
    if model.config.text_radius == FROZEN_RADIUS and origin is None:
        raise ValueError(
            f"text_radius={FROZEN_RADIUS!r} reads the text model before LoRA, which a merged file takes "
            "from the weights it was fine-tuned from, and this model records none (built with "
            "pretrained=None): save the adapter checkpoint (merged=False) of a model built from a file"
        )


def carry_text_before_lora(model: nn.Module, copied: nn.Module) -> None:
    """Give ``copied``, a merged copy of ``model``, the text model before LoRA that a ``linear-frozen``
    head reads, where its recorded origin did not already (``model`` built with ``pretrained=None``)."""
    if model.config.text_radius != FROZEN_RADIUS or copied.base_text is not None:
        return
    tower = model.base_text
    if tower is None:
        tower = model.backbone.model.text
    copied.base_text = unadapted_text_tower(tower).to(copied.device)


@contextlib.contextmanager
def projection_inputs(text: nn.Module):
    """The inputs of ``text.proj`` (the pooled sentence embeddings) in the calls made inside, in order."""
    inputs: list[Tensor] = []
    handle = text.proj.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    try:
        yield inputs
    finally:
        handle.remove()


def radial_lift(features: Tensor, log_radius: Tensor, *, curv: float | Tensor) -> Tensor:
    """Points on the hyperboloid in the directions of ``features`` ``(B, D)`` at distances
    ``exp(log_radius)`` ``(B,)`` from the root (float32 math), saturating where ``exp_map0`` does."""
    features = features.float()
    norm = torch.linalg.vector_norm(features, dim=-1, keepdim=True).clamp(min=1e-12)
    # exp_map0 saturates at this distance: a log radius beyond it would overflow to inf, not saturate
    sqrt_curv = torch.as_tensor(curv, dtype=torch.float32, device=features.device).sqrt()
    log_radius = torch.minimum(log_radius, torch.log(L.EXP_MAP_MAX_ARG / sqrt_curv))
    return L.exp_map0(features / norm * log_radius.unsqueeze(-1).exp(), curv=curv)
