"""Quadruplet data: manifests (JSONL, CSV, Parquet; every bad row named by file, row and field),
the ViSU splits, the synthetic worlds the project generates (``shapes`` embedded, ``crowd``,
``tint``) and the torch ``QuadrupletDataset``. Knows no model beyond its preprocess and tokenizer;
imports only :mod:`hysafe.utils`."""

from .categories import CATEGORIES, I2P_GROUPS, category_group
from .dataset import QuadrupletDataset, load_image
from .manifest import ManifestError, Quadruplet, load_manifest, write_manifest
from .visu import load_visu
from .worlds import WORLDS, WorldConfig, generate_world

__all__ = [
    "CATEGORIES",
    "I2P_GROUPS",
    "category_group",
    "QuadrupletDataset",
    "load_image",
    "ManifestError",
    "Quadruplet",
    "load_manifest",
    "write_manifest",
    "WORLDS",
    "WorldConfig",
    "generate_world",
    "load_visu",
]
