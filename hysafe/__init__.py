"""hysafe: safety-aware CLIP models -- hyperbolic HySAC and Euclidean Safe-CLIP -- in one toolkit.

Quick tour::

    import hysafe
    model = hysafe.create_model("hysac", "ViT-B-32", pretrained="openai")   # or a local file
    result = hysafe.train(model, "data/manifest.jsonl", config=hysafe.TrainConfig(epochs=20))
    safer = hysafe.traverse(query_embeddings, tau=0.4, space=model.space)
    clf = hysafe.NSFWClassifier.root_distance(model.space)
"""

import logging

from .backbone import TINY_MODEL, BackboneConfig, LoraConfig, create_backbone
from .checkpoint import load_model, read_metadata, save_model
from .classifier import NSFWClassifier, classification_metrics, choose_threshold, threshold_from_bounds
from .data import QuadrupletDataset, WorldConfig, generate_world, load_manifest, load_visu
from .embed import embed_dataset
from .evaluation import Comparison, compare_models
from .features import FeatureDataset, FeatureHead, cache_features
from .models import CLIP, HySAC, ModelConfig, SafeCLIP, create_model
from .retrieval import RetrievalIndex
from .training import TrainConfig, TrainResult, train
from .traversal import paper_tau, resolve_tau, traversal_path, traverse

logging.getLogger(__name__).addHandler(logging.NullHandler())

load = load_model
save = save_model

__version__ = "0.1.0"

__all__ = [
    "TINY_MODEL", "BackboneConfig", "LoraConfig", "create_backbone",
    "load", "save", "load_model", "save_model", "read_metadata",
    "NSFWClassifier", "classification_metrics", "choose_threshold", "threshold_from_bounds",
    "QuadrupletDataset", "WorldConfig", "generate_world", "load_manifest", "load_visu",
    "embed_dataset", "Comparison", "compare_models",
    "FeatureDataset", "FeatureHead", "cache_features",
    "CLIP", "HySAC", "SafeCLIP", "ModelConfig", "create_model",
    "RetrievalIndex", "TrainConfig", "TrainResult", "train",
    "traverse", "traversal_path", "paper_tau", "resolve_tau",
]
