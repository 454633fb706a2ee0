"""A feature table as a backbone: the cheap "head" strategy as an ordinary hysafe model.

Run a frozen encoder once over the data (:func:`hysafe.models.features.cache_features`, or bring your
own ``.npy`` arrays), then train ``HySAC`` or ``SafeCLIP`` on a :class:`FeatureBackbone`: a linear
projection per modality, initialised to the identity, over the cached features. Its frozen reference
is the identity itself, i.e. the original encoder's features, which is what Safe-CLIP's
structure-preservation terms compare with. Models, objectives, trainer and checkpoints are the
same as for pixels and token ids::

    model = hysafe.create_feature_model("hysac", image_dim=512, text_dim=512)
    hysafe.train(model, hysafe.FeatureDataset.load("feats.safetensors"), "hysac")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ["FeatureBackboneConfig", "FeatureBackbone"]


@dataclass
class FeatureBackboneConfig:
    """Dimensions of the cached features and of the projected embedding."""

    type: ClassVar[str] = "features"
    image_dim: int = 512
    text_dim: int = 512
    embed_dim: int | None = None  # default: text_dim

    def __post_init__(self):
        if self.embed_dim is None:
            self.embed_dim = self.text_dim
        if min(self.image_dim, self.text_dim, self.embed_dim) < 1:
            raise ValueError(f"feature dimensions must be >= 1, got {self}")


class FeatureBackbone(nn.Module):
    """Linear projections ``image_dim -> embed_dim`` and ``text_dim -> embed_dim`` (no bias,
    identity-initialised); all of it trains. Inputs are feature rows, not pixels or tokens."""

    preprocess = None
    tokenizer = None

    def __init__(self, config: FeatureBackboneConfig):
        super().__init__()
        self.config = config
        self.proj_image = nn.Linear(config.image_dim, config.embed_dim, bias=False)
        self.proj_text = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        with torch.no_grad():  # start from the frozen encoder's own geometry
            self.proj_image.weight.copy_(torch.eye(config.embed_dim, config.image_dim))
            self.proj_text.weight.copy_(torch.eye(config.embed_dim, config.text_dim))
        self.register_buffer("log_logit_scale", torch.tensor(1 / 0.07).log(), persistent=False)

    embed_dim = property(lambda self: self.config.embed_dim)
    logit_scale = property(lambda self: self.log_logit_scale.exp())
    has_adapters = False
    rebuildable = True  # the identity start is rebuilt from the config

    def image_features(self, features: Tensor) -> Tensor:
        return self.proj_image(features.float())

    def text_features(self, features: Tensor) -> Tensor:
        return self.proj_text(features.float())

    def frozen_reference(self) -> "FeatureBackbone":
        """The untrained identity projections, frozen: the cached features themselves."""
        return FeatureBackbone(self.config).to(self.proj_image.weight.device).requires_grad_(False).eval()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise ValueError(
                "gradient checkpointing recomputes transformer blocks; a feature "
                "backbone has none (one linear layer per tower)"
            )

    def add_lora(self, config) -> None:
        raise ValueError(
            "LoRA adapters need an open_clip backbone; a feature backbone trains "
            "its projections directly (lora=None)"
        )

    def merged_state_dict(self) -> dict[str, Tensor]:
        return dict(self.state_dict())
