"""Where a saved checkpoint's sources are now: the files it was built from may have moved since it was
written (a run folder copied as a whole, a text model folder moved), and loading finds them or names
what is missing and how to give it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .backbone import BackboneConfig
from .hf_text import missing_text_folder, recorded_text_source, relink_text_tower
from .safety_model import ModelConfig

logger = logging.getLogger(__name__)

__all__ = ["locate_backbone", "locate_text_tower"]


def locate_text_tower(config: ModelConfig, path: Path, text_tower: str | None) -> None:
    """Point the checkpoint's HF text tower at ``text_tower`` when given; refuse a recorded local text
    model folder that is gone, naming it and the two ways to load the checkpoint anyway."""
    backbone = config.backbone
    model_cfg = getattr(backbone, "model_cfg", None)
    if text_tower is not None:
        if not isinstance(text_tower, (str, os.PathLike)) or not str(text_tower).strip():
            raise ValueError(f"text_tower must be a text model folder or hub id, got {text_tower!r}")
        text_tower = str(text_tower)
        if recorded_text_source(model_cfg) is None:
            raise ValueError(
                f"{path}: text_tower={text_tower!r} given, but the model has no Hugging Face text tower"
            )
        backbone.model, backbone.model_cfg = relink_text_tower(backbone.model, model_cfg, text_tower)
        return
    gone = missing_text_folder(model_cfg)
    if gone is not None:
        raise FileNotFoundError(
            f"{path}: its Hugging Face text model folder {gone} is not there any more (moved or deleted; "
            "the checkpoint holds the tower's weights, the folder its config and tokenizer). Give the "
            "folder of the same model: hysafe.load(PATH, text_tower=FOLDER) in Python, or put it (or a "
            f"link to it: ln -s FOLDER {gone}) back where it was for the command line"
        )


def locate_backbone(config: ModelConfig, path: Path) -> None:
    """An adapter's local backbone file that is not where it was at training time is looked up
    beside the checkpoint (a run folder copied or moved as a whole)."""
    backbone = getattr(config, "backbone", None)
    if (
        not isinstance(backbone, BackboneConfig)
        or not backbone.is_local()
        or Path(backbone.pretrained).is_file()
    ):
        return
    for candidate in (path.parent / backbone.pretrained, path.parent / Path(backbone.pretrained).name):
        if candidate.is_file():
            logger.info(
                "backbone %s not found; using %s beside the checkpoint", backbone.pretrained, candidate
            )
            backbone.pretrained = str(candidate)
            return
    raise FileNotFoundError(
        f"{path}: its backbone weights {backbone.pretrained} are missing (also not beside the checkpoint)"
    )
