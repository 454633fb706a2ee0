"""Loss terms and objectives of hysafe (installed as ``hysafe.losses``)."""

from .contrastive import euclidean_info_nce, lorentz_info_nce, symmetric_info_nce
from .distributed import gather_with_grad, world_info
from .entailment import ConeConfig, cone_aperture, entailment_loss
from .objectives import (
    OBJECTIVES,
    LossContext,
    Objective,
    Term,
    clip_pretrain_objective,
    get_objective,
    hysac_objective,
    safeclip_objective,
    safer_clip_objective,
)
from .ordering import root_gap_loss, root_order_loss
from .redirection import cosine_distance_loss, redirection_loss

__all__ = [
    "symmetric_info_nce",
    "euclidean_info_nce",
    "lorentz_info_nce",
    "gather_with_grad",
    "world_info",
    "ConeConfig",
    "cone_aperture",
    "entailment_loss",
    "root_order_loss",
    "root_gap_loss",
    "cosine_distance_loss",
    "redirection_loss",
    "LossContext",
    "Term",
    "Objective",
    "OBJECTIVES",
    "get_objective",
    "hysac_objective",
    "safeclip_objective",
    "safer_clip_objective",
    "clip_pretrain_objective",
]
