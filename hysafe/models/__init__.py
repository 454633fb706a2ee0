"""The models: open_clip backbones with LoRA and their CPU kernels (:mod:`.backbone`,
:mod:`.attention`, :mod:`.lora_dropout`), the feature backbone for cached features, the three safety
models CLIP / Safe-CLIP / HySAC (:mod:`.safety_model`), what they compute on top of embeddings (the
distance-from-root classifier, :mod:`.classifier`; root-directed traversal, :mod:`.traversal`),
checkpoints (:mod:`.checkpoint`) and batched embedding of datasets (:mod:`.embed`, :mod:`.features`).
May import geometry, data, utils and populations; never index, training, evaluation or the apps.
"""

from ..utils.lazy import lazy_exports

#: the public names, imported on first use: ``hysafe.models.traversal`` (which the index engine needs)
#: does not import open_clip through this package
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    dict.fromkeys(
        [
            "CLIP",
            "HySAC",
            "ModelConfig",
            "SafeCLIP",
            "SafetyModel",
            "build_model",
            "create_feature_model",
            "create_model",
        ],
        "hysafe.models.safety_model",
    ),
)
