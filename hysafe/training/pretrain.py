"""Pretraining a small CLIP on safe *and* unsafe pairs: the stand-in for web-scale CLIP.

Real CLIP has seen unsafe content and embeds it next to safe content; the synthetic world needs a
CLIP with the same defect before Safe-CLIP and HySAC can be shown to fix it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..models.backbone import TINY_MODEL
from ..models.checkpoint import atomic_save_file
from ..models.hf_text import hf_text_type
from ..models.safety_model import SafetyModel, create_model
from . import TrainConfig, TrainResult, train

logger = logging.getLogger(__name__)

__all__ = ["pretrain_clip", "export_open_clip"]


def pretrain_clip(
    data, *, model: str = TINY_MODEL, config: TrainConfig | None = None, val_data=None, seed: int = 0
) -> TrainResult:
    """Train every weight of a randomly initialised open_clip ``model`` with the plain CLIP loss
    on (T, V) and (T*, V*) pairs. Returns the :class:`TrainResult` of a ``CLIP`` model.

    A Hugging Face text tower (``"VISION+hf:SOURCE"``) comes pretrained: its transformer stays locked
    (LiT), so the image tower and the text projection learn to meet it (and its features are cached,
    :mod:`hysafe.models.hf_text_cache`)."""
    import torch

    torch.manual_seed(seed)
    clip = create_model("clip", model, None, lora=None)
    clip.requires_grad_(True)
    if hf_text_type(clip.backbone.model) is not None:  # it comes pretrained: locked (LiT)
        clip.backbone.model.text.transformer.requires_grad_(False)
    cfg = config or TrainConfig(epochs=10, batch_size=64, lr=1e-3, weight_decay=0.1, warmup_steps=20)
    return train(clip, data, "clip-pretrain", cfg, val_data=val_data)


def export_open_clip(model: SafetyModel, path: str | Path) -> Path:
    """Save the open_clip weights alone (a plain ``.safetensors`` state dict that
    ``open_clip.create_model(name, pretrained=path)`` and ``pretrained=`` in hysafe accept)."""
    path = Path(path)
    # atomically, with the usual file mode (safetensors' own writer creates files 0600)
    atomic_save_file(model.backbone.merged_state_dict(), path, metadata={"format": "pt"})
    return path
