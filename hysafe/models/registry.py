"""The open_clip model configs hysafe registers: the bundled small CLIPs and the architectures a
checkpoint or an HF text tower carries (:mod:`hysafe.models.hf_text`), under names open_clip builds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip

__all__ = ["TINY_MODEL", "BUNDLED_MODELS", "register_model_config", "register_model_configs"]

TINY_MODEL = "hysafe-tiny"
_CONFIG_DIR = Path(__file__).parent / "configs"
#: the small open_clip configs hysafe ships (pretrainable here): the tiny ViT CLIP and its ResNet-image-tower
# twin
BUNDLED_MODELS = tuple(sorted(p.stem for p in _CONFIG_DIR.glob("*.json")))


def register_model_config(name: str, cfg: dict) -> None:
    """Register one open_clip architecture under ``name`` (a checkpoint that carries its own config)."""
    existing = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if existing == cfg:
        return
    if existing is not None:
        raise ValueError(f"open_clip model name {name!r} is already registered with another architecture")
    # open_clip reads it when added
    with tempfile.TemporaryDirectory(prefix="hysafe-open-clip-configs-") as folder:
        (Path(folder) / f"{name}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(Path(folder) / f"{name}.json")


def register_model_configs() -> None:
    """Register hysafe's bundled open_clip configs (idempotent)."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)
