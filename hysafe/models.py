"""The three models behind one small interface: ``encode_image``, ``encode_text``, ``space``.

* :class:`CLIP` -- the frozen reference model, cosine geometry.
* :class:`SafeCLIP` -- LoRA-adapted towers plus a genuinely frozen deep copy of the originals
  (``encode_image_ref`` / ``encode_text_ref``) for the structure-preservation terms.
* :class:`HySAC` -- LoRA-adapted towers lifted into the Lorentz model: features are scaled by
  learnable ``alpha`` and mapped with ``exp_map0`` under a learnable curvature.

Models return embeddings and scalars only; losses live in :mod:`hysafe.losses`.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from hysafe.geometry import EuclideanSpace, LorentzSpace, Space
from hysafe.geometry import lorentz as L

from .backbone import Backbone, BackboneConfig, LoraConfig, apply_lora, create_backbone

logger = logging.getLogger(__name__)

__all__ = ["ModelConfig", "SafetyModel", "CLIP", "SafeCLIP", "HySAC", "create_model", "MODEL_KINDS", "trainable_parameters"]


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of what training updates and checkpoints store: parameters with
    gradients, never the frozen ``reference`` towers."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("reference.")]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (saved with every checkpoint)."""

    kind: str = "hysac"  # "clip", "safeclip" or "hysac"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoraConfig | None = field(default_factory=LoraConfig)  # None: no adapters (CLIP, merged models)
    # HySAC only
    curv_init: float = 1.0  # c0; learnable curvature is clamped to [c0/10, 10 c0]
    learn_curv: bool = True
    alpha_init: float | None = None  # feature scale; None -> embed_dim ** -0.5
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {sorted(MODEL_KINDS)}")
        if self.curv_init <= 0:
            raise ValueError(f"curv_init must be > 0, got {self.curv_init}")


class SafetyModel(nn.Module):
    """Common interface. Subclasses implement ``encode_image``/``encode_text`` and ``space``."""

    kind = "abstract"

    def __init__(self, backbone: Backbone, config: ModelConfig):
        super().__init__()
        self.config = config
        self.preprocess = backbone.preprocess
        self.tokenizer = backbone.tokenizer
        self.bounds: dict | None = None  # distance-to-root statistics, set by training / loading
        self.peft = None
        if config.lora is not None:
            self.peft = apply_lora(backbone.model, config.lora)
            self.clip = self.peft.base_model.model
        else:
            self.clip = backbone.model

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1]) if hasattr(self.clip, "text_projection") else int(
            self.clip.visual.output_dim
        )

    def tokenize(self, texts: list[str]) -> Tensor:
        """Token ids ``(B, context_length)`` on the model's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def raw_image_features(self, images: Tensor) -> Tensor:
        return self.clip.encode_image(images, normalize=False)

    def raw_text_features(self, tokens: Tensor) -> Tensor:
        return self.clip.encode_text(tokens, normalize=False)

    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` -> embeddings ``(B, D)`` in :attr:`space`."""
        return self.raw_image_features(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids ``(B, L)`` -> embeddings ``(B, D)`` in :attr:`space`."""
        return self.raw_text_features(tokens)

    @property
    def space(self) -> Space:
        raise NotImplementedError

    @property
    def logit_scale(self) -> Tensor:
        """open_clip's (learnable, stored as log) logit scale."""
        return self.clip.logit_scale.exp()

    def clamp_parameters_(self) -> None:
        """Project learnable scalars back into their bounds (the trainer calls this after each step)."""

    def scalars(self) -> dict[str, float]:
        """Learnable scalars (stored in checkpoint metadata)."""
        return {}

    def load_scalars_(self, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            getattr(self, name).data.fill_(float(value))


class CLIP(SafetyModel):
    """Frozen open_clip model in cosine geometry."""

    kind = "clip"

    def __init__(self, backbone: Backbone, config: ModelConfig):
        super().__init__(backbone, config)
        if self.peft is None:
            self.clip.requires_grad_(False)
        self.eval()

    @property
    def space(self) -> Space:
        return EuclideanSpace()


class SafeCLIP(SafetyModel):
    """LoRA-adapted CLIP trained to redirect unsafe inputs (cosine geometry).

    ``reference`` is a deep copy of the original towers taken *before* LoRA is injected, with
    gradients off and kept in eval mode: peft cannot touch it.
    """

    kind = "safeclip"

    def __init__(self, backbone: Backbone, config: ModelConfig):
        reference = copy.deepcopy(backbone.model)
        super().__init__(backbone, config)
        reference.requires_grad_(False)
        reference.eval()
        self.reference = reference

    def train(self, mode: bool = True):
        super().train(mode)
        self.reference.eval()  # the reference never trains (no dropout either)
        return self

    @torch.no_grad()
    def encode_image_ref(self, images: Tensor) -> Tensor:
        return self.reference.encode_image(images, normalize=False)

    @torch.no_grad()
    def encode_text_ref(self, tokens: Tensor) -> Tensor:
        return self.reference.encode_text(tokens, normalize=False)

    @property
    def space(self) -> Space:
        return EuclideanSpace()


class HyperbolicScalarsMixin:
    """Learnable HySAC scalars, stored as logs, and their one explicit projection.

    ``log_curv`` in ``[log(c0/10), log(10 c0)]``, ``log_alpha_image/text <= 0``,
    ``log_logit_scale`` in ``[log(logit_scale_init), log(logit_scale_max)]``.
    """

    SCALARS = ("log_curv", "log_alpha_image", "log_alpha_text", "log_logit_scale")

    def _init_scalars(self, embed_dim: int, *, curv_init: float, learn_curv: bool, alpha_init: float | None,
                      logit_scale_init: float, logit_scale_max: float) -> None:
        alpha = alpha_init if alpha_init is not None else embed_dim**-0.5
        self._scalar_limits = (curv_init, logit_scale_init, logit_scale_max)
        self.log_curv = nn.Parameter(torch.tensor(math.log(curv_init)), requires_grad=learn_curv)
        self.log_alpha_image = nn.Parameter(torch.tensor(math.log(alpha)))
        self.log_alpha_text = nn.Parameter(torch.tensor(math.log(alpha)))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @property
    def curv(self) -> Tensor:
        return self.log_curv.exp()

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp()

    @property
    def space(self) -> Space:
        return LorentzSpace(curv=float(self.curv.detach()))

    def lift(self, features: Tensor, log_alpha: Tensor) -> Tensor:
        """Scale Euclidean features by ``alpha`` and map them onto the hyperboloid (float32 math)."""
        return L.exp_map0(features.float() * log_alpha.exp(), curv=self.curv)

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        c0, scale_init, scale_max = self._scalar_limits
        self.log_curv.clamp_(math.log(c0 / 10), math.log(c0 * 10))
        self.log_alpha_image.clamp_(max=0.0)
        self.log_alpha_text.clamp_(max=0.0)
        self.log_logit_scale.clamp_(math.log(scale_init), math.log(scale_max))

    def scalars(self) -> dict[str, float]:
        return {n: float(getattr(self, n).detach()) for n in self.SCALARS}


class HySAC(HyperbolicScalarsMixin, SafetyModel):
    """Hyperbolic safety-aware CLIP (Lorentz model): LoRA-adapted towers, features scaled by
    learnable ``alpha`` and lifted with ``exp_map0`` under a learnable curvature."""

    kind = "hysac"

    def __init__(self, backbone: Backbone, config: ModelConfig):
        super().__init__(backbone, config)
        self._init_scalars(
            self.embed_dim, curv_init=config.curv_init, learn_curv=config.learn_curv, alpha_init=config.alpha_init,
            logit_scale_init=config.logit_scale_init, logit_scale_max=config.logit_scale_max,
        )
        self.to(self.device)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.lift(self.raw_image_features(images), self.log_alpha_image)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.lift(self.raw_text_features(tokens), self.log_alpha_text)


MODEL_KINDS = {"clip": CLIP, "safeclip": SafeCLIP, "hysac": HySAC}


def create_model(
    kind: str = "hysac",
    model: str = "ViT-B-32",
    pretrained: str | None = None,
    *,
    lora: LoraConfig | dict | None | str = "default",
    device: str | torch.device = "cpu",
    **overrides,
) -> SafetyModel:
    """Build a :class:`CLIP`, :class:`SafeCLIP` or :class:`HySAC` on an open_clip backbone.

    ``lora="default"`` gives the reference LoRA settings for trainable kinds and none for
    ``"clip"``; pass a :class:`~hysafe.backbone.LoraConfig`, a dict, or ``None``.
    ``overrides`` are :class:`ModelConfig` fields (``curv_init``, ``alpha_init``, ...).
    """
    if lora == "default":
        lora = None if kind == "clip" else LoraConfig()
    config = ModelConfig(kind=kind, backbone=BackboneConfig(model=model, pretrained=pretrained), lora=lora, **overrides)
    return build_model(config, device=device)


def build_model(config: ModelConfig, *, device: str | torch.device = "cpu") -> SafetyModel:
    """Build the model described by ``config`` (loads the backbone weights it names)."""
    backbone = create_backbone(config.backbone, device=device)
    return MODEL_KINDS[config.kind](backbone, config)
