"""HySAC's linear text radius (hysafe's option, ``ModelConfig(text_radius="linear")``; off by default).

As published, a HySAC text embedding is ``exp_map0(alpha * f)`` with ``f`` the CLIP text projection of
the text model's sentence embedding ``S``: its distance to the root, which the NSFW classifier reads, is
``alpha * |f|``, the norm of the same projection retrieval reads directions from. With the linear text
radius the two are separate: the direction stays ``f / |f|`` and the distance to the root is

    d0 = exp(w . S + b)

a linear read of the sentence embedding on the log scale (the way a logistic probe reads it), trained by
HySAC's own losses. ``w`` starts at zero and ``b`` at the log of the median distance the published lift
gives the training captions (:meth:`hysafe.models.HySAC.calibrate`), so every caption starts there.

Needs a Hugging Face text tower (``S``: its pooled output, the projection's input, captured from the same
forward pass). ``w`` and ``b`` are trainable tensors beside the backbone: adapter checkpoints hold them as
tensors, merged ones (plain open_clip files) in their metadata, like HySAC's scalars.
"""

from __future__ import annotations

import contextlib
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
]

#: ``ModelConfig.text_radius`` values: "norm" as published, "linear" hysafe's option
TEXT_RADII = ("norm", "linear")


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
    """``log d0 = w . S + b`` over the text model's sentence embeddings ``S`` ``(B, width)``."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    def forward(self, sentences: Tensor) -> Tensor:
        """The log distances to the root ``(B,)`` (float32 math)."""
        return self.linear(sentences.float()).squeeze(-1)

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
            f"{source}: its config has text_radius='linear' but its metadata holds no text_radius"
        )
    head.load_metadata_(meta["text_radius"], source)


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
