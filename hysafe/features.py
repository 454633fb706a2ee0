"""The cheap "head" strategy: frozen encoder, cached features, a small trainable head.

1. :func:`cache_features` runs any frozen encoder once over a quadruplet dataset and stores the
   raw features (``image``, ``unsafe_image``, ``text``, ``unsafe_text``) in one safetensors file
   (or build a :class:`FeatureDataset` from your own ``.npy`` arrays of any encoder).
2. :class:`FeatureHead` is a linear projection per modality (initialised to the identity) plus,
   for HySAC, the learnable scalars and the ``exp_map0`` lift. The frozen features themselves are
   the "original encoder" of the Safe-CLIP terms.
3. ``hysafe.train(head, FeatureDataset(...), "hysac")`` trains it with the same objectives and loop
   as the full models, in seconds on a CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from hysafe.geometry import EuclideanSpace, Space

from .checkpoint import FORMAT_VERSION, atomic_save_file, read_metadata
from .embed import embed_dataset
from .models import HyperbolicScalarsMixin, SafetyModel

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_KEYS", "cache_features", "FeatureDataset", "FeatureHead", "save_head", "load_head"]

#: feature-file key -> embedding name of the frozen encoder
FEATURE_KEYS = {"image": "V", "unsafe_image": "V*", "text": "T", "unsafe_text": "T*"}


@torch.no_grad()
def cache_features(model: SafetyModel, dataset, path: str | Path, *, batch_size: int = 256, num_workers: int = 0) -> Path:
    """Embed every row of ``dataset`` with ``model`` (use a frozen ``CLIP``) and save the features."""
    emb = embed_dataset(model, dataset, batch_size=batch_size, num_workers=num_workers, progress=True)
    tensors = {key: emb[name] for key, name in FEATURE_KEYS.items() if name in emb}
    meta = {"model": model.config.backbone.model, "pretrained": model.config.backbone.pretrained, "rows": len(dataset),
            "ids": [r.id for r in getattr(dataset, "rows", [])]}
    atomic_save_file(tensors, path, {"hysafe_features": json.dumps(meta)})
    logger.info("cached %d x %s features to %s", len(dataset), sorted(tensors), path)
    return Path(path)


class FeatureDataset(Dataset):
    """Quadruplets of cached features; items carry the same keys as image/text datasets.

    Build it from a file written by :func:`cache_features` (``FeatureDataset.load``) or from
    arrays: ``FeatureDataset(image=..., unsafe_image=..., text=..., unsafe_text=...)`` (``(N, D)``
    tensors or numpy arrays, e.g. ``np.load("clip_image.npy")``).
    """

    def __init__(self, **features):
        missing = set(FEATURE_KEYS) - set(features)
        if missing:
            raise ValueError(f"FeatureDataset needs {sorted(FEATURE_KEYS)}; missing {sorted(missing)}")
        self.features = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).float() for k, v in features.items()}
        shapes = {k: tuple(v.shape) for k, v in self.features.items()}
        n = {s[0] for s in shapes.values()}
        if len(n) != 1 or any(len(s) != 2 for s in shapes.values()):
            raise ValueError(f"features must all be (N, D) with the same N, got {shapes}")
        for k, v in self.features.items():
            if not torch.isfinite(v).all():
                raise ValueError(f"features {k!r} contain NaN/Inf")
        self.has_images = True

    @classmethod
    def load(cls, path: str | Path) -> "FeatureDataset":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature file not found: {path}")
        return cls(**load_file(str(path)))

    def subset(self, indices) -> "FeatureDataset":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return FeatureDataset(**{k: v[idx] for k, v in self.features.items()})

    @property
    def dims(self) -> tuple[int, int]:
        return self.features["image"].shape[1], self.features["text"].shape[1]

    def __len__(self) -> int:
        return self.features["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"index": torch.tensor(i), **{k: v[i] for k, v in self.features.items()}}


class _Identity(nn.Module):
    def forward(self, x):
        return x


class FeatureHead(HyperbolicScalarsMixin, nn.Module):
    """Trainable head over frozen features with the models' interface (``kind`` is ``"hysac"`` or
    ``"safeclip"``). ``encode_image``/``encode_text`` take features instead of pixels/tokens."""

    def __init__(self, image_dim: int, text_dim: int, *, kind: str = "hysac", embed_dim: int | None = None,
                 curv_init: float = 1.0, learn_curv: bool = True, alpha_init: float | None = None,
                 logit_scale_init: float = 1 / 0.07, logit_scale_max: float = 100.0):
        nn.Module.__init__(self)
        if kind not in ("hysac", "safeclip"):
            raise ValueError(f"FeatureHead kind must be 'hysac' or 'safeclip', got {kind!r}")
        if kind == "safeclip" and image_dim != text_dim:
            raise ValueError("a Safe-CLIP head compares features across modalities: image_dim must equal text_dim")
        embed_dim = embed_dim or text_dim
        self.kind = kind
        self.head_config = dict(image_dim=image_dim, text_dim=text_dim, kind=kind, embed_dim=embed_dim, curv_init=curv_init,
                                learn_curv=learn_curv, alpha_init=alpha_init, logit_scale_init=logit_scale_init,
                                logit_scale_max=logit_scale_max)
        self.proj_image = nn.Linear(image_dim, embed_dim, bias=False)
        self.proj_text = nn.Linear(text_dim, embed_dim, bias=False)
        with torch.no_grad():  # start from the frozen encoder's own geometry
            for proj, d in ((self.proj_image, image_dim), (self.proj_text, text_dim)):
                proj.weight.copy_(torch.eye(embed_dim, d))
        self.peft = None
        self.bounds: dict | None = None
        self.config = None
        if kind == "hysac":
            self._init_scalars(embed_dim, curv_init=curv_init, learn_curv=learn_curv, alpha_init=alpha_init,
                               logit_scale_init=logit_scale_init, logit_scale_max=logit_scale_max)
        self.reference = _Identity()

    @property
    def device(self) -> torch.device:
        return self.proj_image.weight.device

    @property
    def space(self) -> Space:
        return HyperbolicScalarsMixin.space.fget(self) if self.kind == "hysac" else EuclideanSpace()

    def encode_image(self, features: Tensor) -> Tensor:
        x = self.proj_image(features.float())
        return self.lift(x, self.log_alpha_image) if self.kind == "hysac" else x

    def encode_text(self, features: Tensor) -> Tensor:
        x = self.proj_text(features.float())
        return self.lift(x, self.log_alpha_text) if self.kind == "hysac" else x

    def encode_image_ref(self, features: Tensor) -> Tensor:
        return features.float()

    def encode_text_ref(self, features: Tensor) -> Tensor:
        return features.float()

    def clamp_parameters_(self) -> None:
        if self.kind == "hysac":
            HyperbolicScalarsMixin.clamp_parameters_(self)

    def scalars(self) -> dict[str, float]:
        return HyperbolicScalarsMixin.scalars(self) if self.kind == "hysac" else {}


def save_head(head: FeatureHead, path: str | Path) -> Path:
    """Save a :class:`FeatureHead` (all its weights, config and bounds) to ``.safetensors``."""
    meta = {"format_version": FORMAT_VERSION, "form": "head", "config": head.head_config, "scalars": head.scalars(),
            "bounds": head.bounds, "extra": {}}
    atomic_save_file(dict(head.state_dict()), path, {"hysafe": json.dumps(meta)})
    return Path(path)


def load_head(path: str | Path) -> FeatureHead:
    meta = read_metadata(path)
    if meta["form"] != "head":
        raise ValueError(f"{path}: a {meta['form']} model checkpoint, not a feature head (use hysafe.load)")
    head = FeatureHead(**meta["config"])
    missing, unexpected = head.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: head weights do not match its config (missing {missing}, unexpected {unexpected})")
    head.bounds = meta.get("bounds")
    return head.eval()
