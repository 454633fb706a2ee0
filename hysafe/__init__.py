"""hysafe: safety-aware CLIP models -- hyperbolic HySAC and Euclidean Safe-CLIP -- in one toolkit.

Quick tour::

    import hysafe
    model = hysafe.create_model("hysac", "ViT-B-32", pretrained="openai")   # or
    hysafe.load("hysac.safetensors")
    result = hysafe.train(model, "data/manifest.jsonl", "hysac", hysafe.TrainConfig(epochs=20))
    safer = model.traverse(query_embeddings, "avg")     # or hysafe.traverse(tensor, 0.4, model.space)
    scores = model.nsfw_score(embeddings)               # distance from the root
"""

import logging

from . import interop
from .data import QuadrupletDataset, WorldConfig, generate_world, load_manifest, load_visu
from .evaluation.checks import Check, safety_checks
from .evaluation.comparison import Comparison, compare_models
from .index.retrieval import RetrievalIndex
from .interop import export_transformers, load_hysac_release, load_transformers_clip
from .models.backbone import TINY_MODEL, BackboneConfig, LoraConfig, create_backbone
from .models.checkpoint import load_model, read_metadata, save_model
from .models.classifier import NSFWClassifier, choose_threshold, classification_metrics, threshold_from_bounds
from .models.embed import embed_dataset
from .models.features import FeatureDataset, cache_features
from .models.safety_model import (
    CLIP,
    HySAC,
    ModelConfig,
    SafeCLIP,
    SafetyModel,
    create_feature_model,
    create_model,
)
from .models.traversal import DEFAULT_TAU, TauRule, paper_tau, resolve_tau, traversal_path, traverse
from .populations import POPULATIONS, SAFE_IMAGE, SAFE_TEXT, UNSAFE_IMAGE, UNSAFE_TEXT, Population
from .training import TrainConfig, TrainResult, train
from .training.recipes import Recipe, get_recipe

logging.getLogger(__name__).addHandler(logging.NullHandler())

load = load_model
save = save_model

__version__ = "0.1.0"

__all__ = [
    "TINY_MODEL",
    "BackboneConfig",
    "LoraConfig",
    "create_backbone",
    "load",
    "save",
    "load_model",
    "save_model",
    "read_metadata",
    "NSFWClassifier",
    "classification_metrics",
    "choose_threshold",
    "threshold_from_bounds",
    "QuadrupletDataset",
    "WorldConfig",
    "generate_world",
    "load_manifest",
    "load_visu",
    "embed_dataset",
    "Comparison",
    "compare_models",
    "Check",
    "safety_checks",
    "FeatureDataset",
    "cache_features",
    "interop",
    "load_hysac_release",
    "load_transformers_clip",
    "export_transformers",
    "CLIP",
    "HySAC",
    "SafeCLIP",
    "SafetyModel",
    "ModelConfig",
    "create_model",
    "create_feature_model",
    "Population",
    "POPULATIONS",
    "SAFE_TEXT",
    "SAFE_IMAGE",
    "UNSAFE_TEXT",
    "UNSAFE_IMAGE",
    "Recipe",
    "get_recipe",
    "RetrievalIndex",
    "TrainConfig",
    "TrainResult",
    "train",
    "DEFAULT_TAU",
    "TauRule",
    "traverse",
    "traversal_path",
    "paper_tau",
    "resolve_tau",
]
