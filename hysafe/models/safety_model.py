"""The three models behind one small interface: ``encode_image``, ``encode_text``, ``space``.

* :class:`CLIP` -- the frozen reference model, cosine geometry.
* :class:`SafeCLIP` -- LoRA-adapted towers plus a genuinely frozen reference backbone
  (``encode_image_ref`` / ``encode_text_ref``) for the structure-preservation terms.
* :class:`HySAC` -- LoRA-adapted towers lifted into the Lorentz model: features are scaled by
  learnable ``alpha`` and mapped with ``exp_map0`` under a learnable curvature. HySAC models also
  answer the safety questions directly: :meth:`HySAC.traverse`, :meth:`HySAC.nsfw_score`.

Each model sits on a *backbone* (:class:`~hysafe.models.backbone.OpenClipBackbone` for pixels and token
ids, :class:`~hysafe.models.feature_backbone.FeatureBackbone` for cached feature tables). Models return
embeddings and scalars only; losses live in :mod:`hysafe.losses`. (Over 300 lines: the model
family, its one config and its factories are read together; each class is short.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from hysafe.geometry import EuclideanSpace, LorentzSpace, Space
from hysafe.geometry import lorentz as L

from ..data.dataset import tokenize_captions
from .backbone import BackboneConfig, LoraConfig, check_device, create_backbone
from .classifier import NSFWClassifier, threshold_from_bounds
from .feature_backbone import FeatureBackbone, FeatureBackboneConfig
from .hf_text import hf_text_tower, hf_text_type
from .hf_text_cache import base_sentence_embeddings, tower_sentence_embeddings
from .text_radius import (
    FROZEN_RADIUS,
    PROBE_RADIUS,
    LinearTextRadius,
    check_text_radius,
    projection_inputs,
    radial_lift,
)
from .traversal import DEFAULT_TAU, TRAINED_TAU, resolve_tau, traverse

logger = logging.getLogger(__name__)

__all__ = [
    "ModelConfig",
    "SafetyModel",
    "CLIP",
    "SafeCLIP",
    "HySAC",
    "MODEL_KINDS",
    "create_model",
    "create_feature_model",
    "build_model",
    "trainable_parameters",
]

BACKBONE_CONFIGS = {BackboneConfig.type: BackboneConfig, FeatureBackboneConfig.type: FeatureBackboneConfig}


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of what training updates and checkpoints store: parameters with
    gradients, never the frozen ``reference`` backbone."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("reference.")]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (saved with every checkpoint)."""

    kind: str = "hysac"  # "clip", "safeclip" or "hysac"
    backbone: BackboneConfig | FeatureBackboneConfig = field(default_factory=BackboneConfig)
    # None: no adapters (CLIP, merged models, features)
    lora: LoraConfig | None = field(default_factory=LoraConfig)
    # HySAC only
    curv_init: float = 1.0  # c0; learnable curvature is clamped to [c0/10, 10 c0]
    learn_curv: bool = True
    alpha_init: float | None = (
        None  # feature scale; None -> embed_dim ** -0.5, capped by the training data (HySAC.calibrate)
    )
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    # HySAC's text distance to the root: "norm" as published, "linear" hysafe's option (.text_radius)
    text_radius: str = "norm"

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            spec = dict(self.backbone)
            kind = spec.pop("type", BackboneConfig.type)
            if kind not in BACKBONE_CONFIGS:
                raise ValueError(
                    f"unknown backbone type {kind!r}; expected one of {sorted(BACKBONE_CONFIGS)}"
                )
            self.backbone = BACKBONE_CONFIGS[kind](**spec)
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {sorted(MODEL_KINDS)}")
        if self.curv_init <= 0:
            raise ValueError(f"curv_init must be > 0, got {self.curv_init}")
        check_text_radius(self.text_radius, self.kind)

    def to_dict(self) -> dict:
        """JSON-ready form (tuples as lists, the backbone's ``type`` included); inverse of
        ``ModelConfig(**d)``."""
        d = asdict(self)
        d["backbone"]["type"] = self.backbone.type
        if d["lora"] is not None:
            d["lora"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["lora"].items()}
        return d


class SafetyModel(nn.Module):
    """Common interface. Subclasses define ``space`` and, where they differ, ``encode_*``."""

    kind = "abstract"

    def __init__(self, backbone: nn.Module, config: ModelConfig):
        super().__init__()
        self.config = config
        self.bounds: dict | None = None  # distance-to-root statistics, set by training / loading
        # the rule DEFAULT_TAU ("model") stands for; None: TRAINED_TAU (a converted release: "authors")
        self.traversal_rule: str | None = None
        if config.lora is not None:
            backbone.add_lora(config.lora)
        self.backbone = backbone

    preprocess = property(lambda self: self.backbone.preprocess)
    tokenizer = property(lambda self: self.backbone.tokenizer)
    embed_dim = property(lambda self: self.backbone.embed_dim)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def tokenize(self, texts: list[str] | str) -> Tensor:
        """Token ids ``(B, context_length)`` on the model's device (one string: ``B = 1``, never one
        text per character)."""
        if self.tokenizer is None:
            raise ValueError("this model encodes cached features, not captions: it has no tokenizer")
        return tokenize_captions(self.tokenizer, [texts] if isinstance(texts, str) else texts).to(self.device)

    def encode_image(self, images: Tensor) -> Tensor:
        """Images ``(B, 3, H, W)`` (or feature rows) -> embeddings ``(B, D)`` in :attr:`space`."""
        return self.backbone.image_features(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids ``(B, L)`` (or feature rows) -> embeddings ``(B, D)`` in :attr:`space`."""
        return self.backbone.text_features(tokens)

    @property
    def space(self) -> Space:
        """The embedding space for inference (float scalars)."""
        raise NotImplementedError

    @property
    def live_space(self) -> Space:
        """The embedding space with the model's learnable scalars as live tensors (for losses)."""
        return self.space

    @property
    def logit_scale(self) -> Tensor:
        return self.backbone.logit_scale

    def clamp_parameters_(self) -> None:
        """Project learnable scalars back into their bounds (the trainer calls this after each step)."""

    def scalars(self) -> dict[str, float]:
        """Learnable scalars (stored in checkpoint metadata)."""
        return {}

    def load_scalars_(self, scalars: dict[str, float], source: str = "scalars") -> None:
        """Set learnable scalars (checkpoint metadata), refusing unknown names and values outside
        the range training keeps them in."""
        limits = self.scalar_limits()
        for name, value in scalars.items():
            if name not in limits:
                raise ValueError(
                    f"{source}: unknown scalar {name!r} for a {self.kind} model; expected {sorted(limits)}"
                )
            low, high = limits[name]
            ok = (
                isinstance(value, (int, float))
                and math.isfinite(value)
                and low - 1e-6 <= value <= high + 1e-6
            )
            if not ok:
                raise ValueError(
                    f"{source}: scalar {name} = {value!r} is outside [{low:.4g}, "
                    f"{high:.4g}] (an edited or corrupt checkpoint?)"
                )
            getattr(self, name).data.fill_(float(value))

    def scalar_limits(self) -> dict[str, tuple[float, float]]:
        """``name -> (low, high)`` of each learnable scalar (logs), as :meth:`clamp_parameters_` keeps
        them."""
        return {}

    def nsfw_classifier(self, modality: str = "text") -> NSFWClassifier:
        """The model's own NSFW scorer for embeddings of ``modality``: similarity to NSFW concept
        prompts (cosine models); HySAC overrides it with the distance from the root."""
        return NSFWClassifier.concept_similarity(self)

    def nsfw_score(self, embeddings: Tensor, modality: str = "text") -> Tensor:
        """Unsafety scores ``(N,)`` of embeddings ``(N, D)``; higher is more likely unsafe."""
        return self.nsfw_classifier(modality).score(embeddings)


class CLIP(SafetyModel):
    """Frozen open_clip model in cosine geometry."""

    kind = "clip"

    def __init__(self, backbone: nn.Module, config: ModelConfig):
        super().__init__(backbone, config)
        if not backbone.has_adapters:
            self.backbone.requires_grad_(False)
        self.eval()

    @property
    def space(self) -> Space:
        return EuclideanSpace()


def reference_backbone(backbone: nn.Module) -> tuple[nn.Module | None, str | None]:
    """The frozen original towers of a Safe-CLIP and, when there are none, why.

    Normally a frozen copy of ``backbone`` (taken before LoRA). When the backbone's weights are a
    merged hysafe fine-tune, the copy would be the *fine-tuned* towers: the reference is then
    rebuilt from the recorded ``origin``, and refused (``None`` plus the reason) when the file
    records none or the origin cannot be loaded; inference works either way, training does not.
    """
    cfg = getattr(backbone, "config", None)
    origin = getattr(cfg, "origin", None)
    if origin is not None:
        try:
            ref = create_backbone(
                replace(cfg, pretrained=origin, origin=None), device=next(backbone.parameters()).device
            )
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            return None, (
                f"{cfg.pretrained} is a merged fine-tune of {origin}, which is "
                f"the frozen reference for Safe-CLIP "
                f"training but does not load here ({e}); put it back or train from the original weights"
            )
        logger.info(
            "Safe-CLIP reference: the original weights %s, not the fine-tune %s", origin, cfg.pretrained
        )
        return ref.requires_grad_(False).eval(), None
    kind = getattr(backbone, "finetune_kind", None)
    if kind is not None:
        return None, (
            f"{cfg.pretrained} is a merged {kind} fine-tune that does not record "
            f"the weights it was tuned from; "
            "Safe-CLIP training would use the fine-tuned towers as its frozen "
            "reference. Train from the original "
            "weights (pretrained=<original tag or file>) instead"
        )
    return backbone.frozen_reference(), None


class SafeCLIP(SafetyModel):
    """LoRA-adapted CLIP trained to redirect unsafe inputs (cosine geometry).

    ``reference`` is the backbone's frozen reference, taken *before* LoRA is injected, with
    gradients off and kept in eval mode: peft cannot touch it.
    """

    kind = "safeclip"

    def __init__(self, backbone: nn.Module, config: ModelConfig):
        reference, self.reference_problem = reference_backbone(backbone)
        super().__init__(backbone, config)
        self.reference = reference

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # the reference never trains (no dropout either)
        return self

    def _reference(self) -> nn.Module:
        if self.reference is None:
            raise ValueError(self.reference_problem)
        return self.reference

    @torch.no_grad()
    def encode_image_ref(self, images: Tensor) -> Tensor:
        return self._reference().image_features(images)

    @torch.no_grad()
    def encode_text_ref(self, tokens: Tensor) -> Tensor:
        return self._reference().text_features(tokens)

    @property
    def space(self) -> Space:
        return EuclideanSpace()


#: HySAC's default alpha never lifts the median training feature of a modality further than this from the
#: origin at the start of training (the paper's alpha lifts a feature of norm sqrt(embed_dim) to 1)
MAX_INIT_NORM = 2.0
#: the batch keys of a quadruplet's captions
TEXT_KEYS = ("text", "unsafe_text")


def _text_radius_head(backbone: nn.Module, config: ModelConfig) -> LinearTextRadius | None:
    """HySAC's linear text radius over the HF text tower's sentence embeddings (``None``: as published)."""
    if config.text_radius == "norm":
        return None
    clip = getattr(backbone, "model", None)
    if clip is None or hf_text_type(clip) is None:
        name = getattr(config.backbone, "model", "a feature table")
        raise ValueError(
            f"text_radius={config.text_radius!r} reads the distance to the root off a Hugging Face text "
            "model's sentence embeddings: it needs a CLIP with a Hugging Face text tower "
            f"('VISION+hf:SOURCE'), got {name!r}"
        )
    return LinearTextRadius(clip.text.config.hidden_size, unit=config.text_radius == PROBE_RADIUS)


def _origin_text_tower(backbone: nn.Module, config: ModelConfig) -> nn.Module | None:
    """The text tower ``text_radius="linear-frozen"`` reads on a backbone whose own weights are a merged
    fine-tune: its recorded origin's (``None``: the backbone's own, with the adapters switched off)."""
    cfg = getattr(backbone, "config", None)
    origin = getattr(cfg, "origin", None)
    if config.text_radius != FROZEN_RADIUS or origin is None:
        return None
    try:
        built = create_backbone(replace(cfg, pretrained=origin, origin=None), device="cpu")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{cfg.pretrained or 'this model'} is a merged fine-tune of {origin}: its text_radius="
            f"{FROZEN_RADIUS!r} reads the text model from before the fine-tune there, which does not "
            f"load here ({e}); put it back"
        ) from e
    logger.info("linear-frozen text radius: the text model of %s", origin)
    return built.model.text.requires_grad_(False).eval()


class HySAC(SafetyModel):
    """Hyperbolic safety-aware CLIP (Lorentz model): LoRA-adapted towers, features scaled by
    learnable ``alpha`` and lifted with ``exp_map0`` under a learnable curvature.

    Scalars are stored as logs: ``log_curv`` in ``[log(c0/10), log(10 c0)]``,
    ``log_alpha_image/text <= 0``, ``log_logit_scale`` in ``[log(logit_scale_init), log(logit_scale_max)]``.
    With ``ModelConfig.text_radius="linear"`` (hysafe's option) a text embedding's distance to the root is
    a linear read of the text model's sentence embedding instead of ``alpha * |f|``
    (:mod:`~hysafe.models.text_radius`); its direction is the projection's either way.
    """

    kind = "hysac"
    SCALARS = ("log_curv", "log_alpha_image", "log_alpha_text", "log_logit_scale")

    def __init__(self, backbone: nn.Module, config: ModelConfig):
        super().__init__(backbone, config)
        alpha = config.alpha_init if config.alpha_init is not None else self.paper_alpha
        self.log_curv = nn.Parameter(
            torch.tensor(math.log(config.curv_init)), requires_grad=config.learn_curv
        )
        self.log_alpha_image = nn.Parameter(torch.tensor(math.log(alpha)))
        self.log_alpha_text = nn.Parameter(torch.tensor(math.log(alpha)))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self.text_radius = _text_radius_head(backbone, config)
        # text_radius="linear-frozen" on a merged fine-tune: the text tower of the weights it was tuned from
        self.base_text = _origin_text_tower(backbone, config)
        self.to(self.device)

    @property
    def paper_alpha(self) -> float:
        """The reference code's initial feature scale, ``embed_dim ** -0.5`` (the default's start)."""
        return self.embed_dim**-0.5

    @property
    def curv(self) -> Tensor:
        return self.log_curv.exp()

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp()

    @property
    def space(self) -> Space:
        return LorentzSpace(curv=float(self.curv.detach()))

    @property
    def live_space(self) -> Space:
        return LorentzSpace(curv=self.curv)

    def lift(self, features: Tensor, log_alpha: Tensor) -> Tensor:
        """Scale Euclidean features by ``alpha`` and map them onto the hyperboloid (float32 math)."""
        return L.exp_map0(features.float() * log_alpha.exp(), curv=self.curv)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.lift(self.backbone.image_features(images), self.log_alpha_image)

    def encode_text(self, tokens: Tensor) -> Tensor:
        if self.text_radius is None:
            return self.lift(self.backbone.text_features(tokens), self.log_alpha_text)
        features, sentences = self._features_and_radius_inputs(tokens)
        return radial_lift(features, self.text_radius(sentences), curv=self.curv)

    def radius_inputs(self, tokens: Tensor) -> Tensor:
        """The sentence embeddings the linear text radius reads (``text_radius`` other than "norm")."""
        if self.text_radius is None:
            raise ValueError("a HySAC model with text_radius='norm' reads no sentence embeddings")
        return self._features_and_radius_inputs(tokens)[1]

    def _features_and_radius_inputs(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.config.text_radius == FROZEN_RADIUS:
            return self.backbone.text_features(tokens), self.sentences_before_lora(tokens)
        with projection_inputs(hf_text_tower(self)) as captured:
            features = self.backbone.text_features(tokens)
        return features, torch.cat(captured)

    def sentences_before_lora(self, tokens: Tensor) -> Tensor:
        """``S0``: the text model's sentence embeddings before the fine-tune (cached, no gradient): with
        the adapters switched off, or from the origin's tower of a merged copy (``base_text``)."""
        if self.base_text is not None:
            return tower_sentence_embeddings(self.base_text, tokens)
        return base_sentence_embeddings(self.backbone.model, tokens, self.backbone.peft)

    @torch.no_grad()
    def calibrate(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """Data-dependent initial scales from training rows ``batch``: the alphas, then the linear text
        radius's start (``text_radius="linear"``). Returns what was set."""
        training = self.training
        self.eval()
        try:
            changed = self._calibrate_alphas(batch) if self.config.alpha_init is None else {}
            if self.text_radius is not None and self.text_radius.untrained:
                changed["text_radius_start"] = self._start_text_radius(batch)
        finally:
            self.train(training)
        return changed

    def _calibrate_alphas(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """Cap the default alpha by the training data (``alpha_init=None``; a given ``alpha_init`` is kept).

        The paper's ``embed_dim ** -0.5`` lifts a feature of norm ``sqrt(embed_dim)`` to norm 1. A tower
        whose features are far larger (a ResNet's attention pool: ~186 at width 64) would start every
        embedding saturated at the distance clamp, where no gradient reaches alpha; so a modality's alpha
        becomes ``MAX_INIT_NORM / median |f|`` over ``batch`` where that is smaller. An alpha that is no
        longer the initial one (a trained model trained further) is kept. Returns the alphas set."""
        changed, initial = {}, math.log(self.paper_alpha)
        for name, keys, features in (
            ("log_alpha_image", ("image", "unsafe_image"), self.backbone.image_features),
            ("log_alpha_text", TEXT_KEYS, self.backbone.text_features),
        ):
            if abs(getattr(self, name).item() - initial) > 1e-6:
                continue
            norms = [features(batch[k]).float().norm(dim=-1) for k in keys if k in batch]
            cap = math.log(MAX_INIT_NORM / float(torch.cat(norms).median())) if norms else math.inf
            if getattr(self, name).item() > cap:
                getattr(self, name).fill_(cap)
                changed[name.removeprefix("log_")] = math.exp(cap)
        return changed

    def _start_text_radius(self, batch: dict[str, Tensor]) -> float:
        """Start the linear text radius at the median distance the published lift gives ``batch``'s
        captions (``alpha * |f|``); returns that distance."""
        norms = [self.backbone.text_features(batch[k]).float().norm(dim=-1) for k in TEXT_KEYS if k in batch]
        if not norms:
            raise ValueError(f"the linear text radius starts from training captions: no {TEXT_KEYS} given")
        distance = float(torch.cat(norms).median()) * float(self.log_alpha_text.exp())
        self.text_radius.start_at(distance)
        return distance

    def scalar_limits(self) -> dict[str, tuple[float, float]]:
        c0, cfg = self.config.curv_init, self.config
        return {
            "log_curv": (math.log(c0 / 10), math.log(c0 * 10)),
            "log_alpha_image": (-math.inf, 0.0),
            "log_alpha_text": (-math.inf, 0.0),
            "log_logit_scale": (math.log(cfg.logit_scale_init), math.log(cfg.logit_scale_max)),
        }

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        for name, (low, high) in self.scalar_limits().items():
            getattr(self, name).clamp_(low, high)

    def scalars(self) -> dict[str, float]:
        return {n: float(getattr(self, n).detach()) for n in self.SCALARS}

    # ------------------------------------------------------------------ safety questions
    def tau(self, rule: float | str = DEFAULT_TAU, modality: str = "text") -> float:
        """The traversal distance for queries of ``modality`` from a number or a rule
        (:func:`~hysafe.models.traversal.resolve_tau`) on this model's bounds and curvature;
        ``"model"`` (the default) is this model's own rule (:attr:`traversal_rule`, else ``"avg"``)."""
        if rule == DEFAULT_TAU:
            rule = self.traversal_rule or TRAINED_TAU
        return resolve_tau(rule, bounds=self.bounds, space=self.space, query=modality)

    def traverse(
        self, query: Tensor, tau: float | str | Tensor = DEFAULT_TAU, *, modality: str = "text"
    ) -> Tensor:
        """Move query embeddings ``(B, D)`` toward the root, to distance ``tau`` (a number, a
        ``(B,)`` tensor, or a rule such as ``"avg"`` / ``"V.up_95"`` / ``"paper"``), before retrieval."""
        if query.dim() != 2 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"traverse expects query embeddings of shape (B, {self.embed_dim}) for this model, "
                f"got {tuple(query.shape)}"
            )
        return traverse(query, tau if isinstance(tau, Tensor) else self.tau(tau, modality), self.space)

    def nsfw_classifier(self, modality: str = "text") -> NSFWClassifier:
        """Distance from the root as the unsafety score, with the threshold from the stored
        bounds (:func:`~hysafe.models.classifier.threshold_from_bounds`) when the model has them."""
        threshold = threshold_from_bounds(self.bounds, modality) if self.bounds else None
        return NSFWClassifier.root_distance(self.space, threshold=threshold)

    def nsfw_score(self, embeddings: Tensor, modality: str = "text") -> Tensor:
        return self.space.dist_to_root(embeddings)


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
    ``"clip"``; pass a :class:`~hysafe.models.backbone.LoraConfig`, a dict, or ``None``.
    ``overrides`` are :class:`ModelConfig` fields (``curv_init``, ``alpha_init``, ...).
    """
    if lora == "default":
        lora = None if kind == "clip" else LoraConfig()
    config = ModelConfig(
        kind=kind, backbone=BackboneConfig(model=model, pretrained=pretrained), lora=lora, **overrides
    )
    return build_model(config, device=device)


def create_feature_model(
    kind: str,
    image_dim: int,
    text_dim: int,
    *,
    embed_dim: int | None = None,
    device: str | torch.device = "cpu",
    **overrides,
) -> SafetyModel:
    """A ``"hysac"`` or ``"safeclip"`` model on cached features (the head strategy): trainable
    identity-initialised projections over a :class:`~hysafe.models.features.FeatureDataset`."""
    if kind == "safeclip" and image_dim != text_dim:
        raise ValueError(
            "a Safe-CLIP feature model compares features across modalities: image_dim must equal text_dim"
        )
    backbone = FeatureBackboneConfig(image_dim=image_dim, text_dim=text_dim, embed_dim=embed_dim)
    return build_model(ModelConfig(kind=kind, backbone=backbone, lora=None, **overrides), device=device)


def build_model(config: ModelConfig, *, device: str | torch.device = "cpu") -> SafetyModel:
    """Build the model described by ``config`` (loads the backbone weights it names)."""
    if isinstance(config.backbone, FeatureBackboneConfig):
        check_device(device)
        backbone = FeatureBackbone(config.backbone).to(device)
    else:
        backbone = create_backbone(config.backbone, device=device)
    return MODEL_KINDS[config.kind](backbone, config)
