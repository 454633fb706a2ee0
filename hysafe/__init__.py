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

from .utils.lazy import lazy_exports

#: every public name, and the module it comes from: imported on first use (``import hysafe`` stays
#: light: ``hysafe --help``, or a process that needs only an index, does not import open_clip,
#: transformers and scikit-learn)
_EXPORTS = {
    **dict.fromkeys(
        ["QuadrupletDataset", "WorldConfig", "generate_world", "load_manifest", "load_visu"], "hysafe.data"
    ),
    **dict.fromkeys(["Check", "safety_checks"], "hysafe.evaluation.checks"),
    **dict.fromkeys(["Comparison", "compare_models"], "hysafe.evaluation.comparison"),
    **dict.fromkeys(["RetrievalIndex"], "hysafe.index.retrieval"),
    **dict.fromkeys(
        ["export_transformers", "load_hysac_release", "load_transformers_clip"], "hysafe.interop"
    ),
    **dict.fromkeys(
        ["TINY_MODEL", "BackboneConfig", "LoraConfig", "create_backbone"], "hysafe.models.backbone"
    ),
    **dict.fromkeys(["load_model", "read_metadata", "save_model"], "hysafe.models.checkpoint"),
    **dict.fromkeys(
        ["NSFWClassifier", "choose_threshold", "classification_metrics", "threshold_from_bounds"],
        "hysafe.models.classifier",
    ),
    **dict.fromkeys(["embed_dataset"], "hysafe.models.embed"),
    **dict.fromkeys(["FeatureDataset", "cache_features"], "hysafe.models.features"),
    **dict.fromkeys(
        ["CLIP", "HySAC", "ModelConfig", "SafeCLIP", "SafetyModel", "create_feature_model", "create_model"],
        "hysafe.models.safety_model",
    ),
    **dict.fromkeys(
        ["DEFAULT_TAU", "TauRule", "paper_tau", "resolve_tau", "traversal_path", "traverse"],
        "hysafe.models.traversal",
    ),
    **dict.fromkeys(
        ["POPULATIONS", "SAFE_IMAGE", "SAFE_TEXT", "UNSAFE_IMAGE", "UNSAFE_TEXT", "Population"],
        "hysafe.populations",
    ),
    **dict.fromkeys(["TrainConfig", "TrainResult", "train"], "hysafe.training"),
    **dict.fromkeys(["Recipe", "get_recipe"], "hysafe.training.recipes"),
}

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, _EXPORTS, aliases={"load": "load_model", "save": "save_model"}, submodules=("interop",)
)
