"""The cheap "head" strategy: frozen encoder, cached features, a small trainable projection.

1. :func:`cache_features` runs any frozen encoder once over a quadruplet dataset and stores the
   raw features (``image``, ``unsafe_image``, ``text``, ``unsafe_text``) in one safetensors file
   (or build a :class:`FeatureDataset` from your own ``.npy`` arrays of any encoder).
2. :func:`~hysafe.models.create_feature_model` builds an ordinary ``HySAC`` or ``SafeCLIP`` on a
   :class:`~hysafe.models.feature_backbone.FeatureBackbone` (identity-initialised projections).
3. ``hysafe.train(model, FeatureDataset(...), "hysac")`` trains it with the same recipes, loop and
   checkpoints as the full models, in seconds on a CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import Dataset

from .checkpoint import atomic_save_file
from .embed import embed_dataset
from .safety_model import SafetyModel

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_KEYS", "cache_features", "FeatureDataset"]

#: feature-file key -> embedding name of the frozen encoder
FEATURE_KEYS = {"image": "V", "unsafe_image": "V*", "text": "T", "unsafe_text": "T*"}


@torch.no_grad()
def cache_features(
    model: SafetyModel, dataset, path: str | Path, *, batch_size: int = 256, num_workers: int = 0
) -> Path:
    """Embed every row of ``dataset`` with ``model`` (use a frozen ``CLIP``) and save the features."""
    emb = embed_dataset(model, dataset, batch_size=batch_size, num_workers=num_workers, progress=True)
    tensors = {key: emb[name] for key, name in FEATURE_KEYS.items() if name in emb}
    meta = {
        "model": model.config.backbone.model,
        "pretrained": model.config.backbone.pretrained,
        "rows": len(dataset),
        "ids": [r.id for r in getattr(dataset, "rows", [])],
    }
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
        self.features = {
            k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).float()
            for k, v in features.items()
        }
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
        tensors = load_file(str(path))
        if not set(FEATURE_KEYS) & set(tensors):
            names = sorted(tensors)
            raise ValueError(
                f"{path}: not a feature file from 'hysafe embed' (its tensors are {names[:1]}"
                f"{'...' if len(names) > 1 else ''}; a feature file holds {sorted(FEATURE_KEYS)})"
            )
        try:
            return cls(**tensors)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def subset(self, indices) -> "FeatureDataset":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return FeatureDataset(**{k: v[idx] for k, v in self.features.items()})

    def split_holdout(
        self, fraction: float = 0.1, *, seed: int = 0, min_rows: int = 1
    ) -> tuple["FeatureDataset", "FeatureDataset"]:
        """``(train, held_out)``: a seeded random ``fraction`` of the rows held out for validation
        (model selection, early stopping, safety bounds), disjoint from the rows trained on."""
        if not 0 < fraction < 1:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        n = len(self)
        n_val = max(min_rows, round(fraction * n))
        if n_val >= n:
            raise ValueError(
                f"cannot hold out {n_val} of {n} feature rows for validation and still train: "
                "cache more rows or pass a separate validation feature file"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(order[n_val:].sort().values), self.subset(order[:n_val].sort().values)

    @property
    def dims(self) -> tuple[int, int]:
        return self.features["image"].shape[1], self.features["text"].shape[1]

    def __len__(self) -> int:
        return self.features["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"index": torch.tensor(i), **{k: v[i] for k, v in self.features.items()}}
