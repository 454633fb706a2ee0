"""Validation, model selection and the safety bounds a trained model carries.

* :func:`validation_recalls`: safe retrieval recall (T->V, V->T) and its sum, the root-distance
  ordering of hyperbolic models, and the selection ``score`` (``TrainConfig.select``);
* :class:`BestWeights`: keeps the best epoch's weights, writes ``best.safetensors``, decides
  early stopping;
* :func:`safety_bounds`: distance-to-root statistics per population (traversal and thresholds).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from ..evaluation.metrics import distance_stats, recall_at_k
from ..models.checkpoint import save_model, uses_adapter_form
from ..models.embed import embed_dataset
from ..models.safety_model import SafetyModel, trainable_parameters
from ..populations import MODALITIES, POPULATIONS, modality_pair

logger = logging.getLogger(__name__)

__all__ = [
    "check_select",
    "validation_recalls",
    "ordering_auc",
    "safety_bounds",
    "distance_stats",
    "BestWeights",
]


def ordering_auc(d_safe: Tensor, d_unsafe: Tensor) -> float:
    """ROC-AUC of "farther from the root = unsafe": the probability that an unsafe item lies
    farther than a safe one (ties count half). Ranks, O(N log N): no N x N matrix."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([d_safe.double().flatten(), d_unsafe.double().flatten()]).cpu().numpy()
    labels = [0] * d_safe.numel() + [1] * d_unsafe.numel()
    return float(roc_auc_score(labels, scores))


def _ordering(model: SafetyModel, emb: dict) -> dict:
    """Root-distance ROC-AUC per modality and the ordering ``2 AUC - 1`` averaged over them."""
    out = {}
    for modality in MODALITIES:
        safe, unsafe = (p.key for p in modality_pair(modality))
        if safe in emb and unsafe in emb:
            out[f"root AUC {modality}"] = ordering_auc(
                model.space.dist_to_root(emb[safe]), model.space.dist_to_root(emb[unsafe])
            )
    aucs = list(out.values())
    out["ordering"] = sum(2 * a - 1 for a in aucs) / len(aucs)
    return out | _mean_root_distances(model, emb)


def _mean_root_distances(model: SafetyModel, emb: dict) -> dict:
    """``root mean S/V/U/G``: each population's mean distance to the root, logged per epoch so a drift
    of every embedding toward (or away from) the root shows in the run's history."""
    return {
        f"root mean {p.bound}": float(model.space.dist_to_root(emb[p.key]).double().mean())
        for p in POPULATIONS
        if p.key in emb
    }


def check_select(select: str, model: SafetyModel) -> None:
    """Refuse a selection rule the model cannot be scored by (before any training)."""
    if select == "safety" and not model.space.hyperbolic:
        raise ValueError(
            "select='safety' multiplies recall by the root-distance ordering, which only a hyperbolic "
            f"model (HySAC) has, not this {model.kind}; use 'recall' or 'auto' for it"
        )


def validation_recalls(
    model: SafetyModel, dataset, *, batch_size: int = 256, ks=(1, 5, 10), select: str = "auto"
) -> dict:
    """Safe retrieval recalls (T->V, V->T) and their sum on a validation set; for hyperbolic
    models also the root-distance ordering; and ``score``, what model selection maximises:
    the recall sum (``select="recall"``), or the recall sum times the ordering (``"safety"``,
    the default for hyperbolic models: recall saturates within a few epochs while the safety
    ordering keeps forming, so selecting on recall alone keeps an early, barely ordered model)."""
    emb = embed_dataset(model, dataset, batch_size=batch_size)
    space, out = model.space, {}
    idx = torch.arange(len(dataset))
    if "V" in emb:
        for name, (q, g) in {"T->V": (emb["T"], emb["V"]), "V->T": (emb["V"], emb["T"])}.items():
            for k, v in recall_at_k(q, g, idx, space, ks).items():
                out[f"{name} R@{k}"] = v
    else:  # text-only data: safe/unsafe caption retrieval
        for k, v in recall_at_k(emb["T*"], emb["T"], idx, space, ks).items():
            out[f"T*->T R@{k}"] = v
    out["recall_sum"] = sum(out.values())
    check_select(select, model)
    safety = select in ("safety", "auto") and space.hyperbolic
    if space.hyperbolic:
        out |= _ordering(model, emb)
    out["score"] = out["recall_sum"] * out["ordering"] if safety else out["recall_sum"]
    return out


def image_overlap(model: SafetyModel, dataset, *, batch_size: int = 256) -> float:
    """Share of unsafe images closer to the root than the safe images' 95th percentile: 0 when the
    ordering check's "V 95% < G 5%" holds with room, what a supervised ceiling is compared on."""
    emb = embed_dataset(model, dataset, batch_size=batch_size)
    safe, unsafe = (model.space.dist_to_root(emb[k]).double() for k in ("V", "V*"))
    return float((unsafe < torch.quantile(safe, 0.95)).double().mean())


def safety_bounds(model: SafetyModel, dataset, *, batch_size: int = 256) -> dict:
    """Distance-to-root statistics ``{"avg", "low_05", "up_95"}`` per population, keyed by bound
    name (``S`` safe text, ``V`` safe image, ``U`` unsafe text, ``G`` unsafe image)."""
    emb = embed_dataset(model, dataset, batch_size=batch_size)
    return {
        p.bound: distance_stats(model.space.dist_to_root(emb[p.key])) for p in POPULATIONS if p.key in emb
    }


def _snapshot(model: SafetyModel) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in trainable_parameters(model)}


def save_best(model: SafetyModel, path: Path, extra: dict) -> None:
    save_model(model, path, merged=not uses_adapter_form(model), bounds=model.bounds, extra=extra)


class BestWeights:
    """Model selection by the validation ``score`` (:func:`validation_recalls`; ``progress["best"]``, higher
    is better).

    Without validation the last epoch counts as the best. ``path`` (main process only) receives
    the best weights after every improvement; ``patience`` epochs without one stop the run.
    """

    def __init__(self, *, path: Path | None, patience: int | None):
        self.path, self.patience = path, patience
        self.progress: dict = {}
        self.weights: dict[str, Tensor] | None = None

    def start(self, model: SafetyModel, progress: dict, resumed_weights: dict[str, Tensor] | None) -> None:
        """Begin (or, after a resume, continue) selection: the best so far are the resumed best
        weights, or the starting weights of a fresh run."""
        self.progress = progress
        self.weights = resumed_weights if progress["best"] is not None else _snapshot(model)
        if progress["best"] is not None and resumed_weights is None:
            logger.warning(
                "the resumed state holds no best weights (written by an older "
                "hysafe); best.safetensors will hold the final ones"
            )

    def update(self, model: SafetyModel, metrics: dict | None, epoch: int) -> bool:
        """Record one epoch's validation (``None``: no validation); returns whether to stop."""
        if metrics is None:
            self.weights = _snapshot(model)
            return False
        p = self.progress
        if p["best"] is not None and metrics["score"] <= p["best"]:
            p["bad_epochs"] += 1
            return self.patience is not None and p["bad_epochs"] >= self.patience
        p["best"], p["bad_epochs"] = metrics["score"], 0
        self.weights = _snapshot(model)
        if self.path is not None:
            save_best(model, self.path, extra={"epoch": epoch, "validation": metrics})
        return False

    def restore(self, model: SafetyModel) -> None:
        """Put the best weights back into ``model`` (no-op after a resume that kept none)."""
        if self.weights is not None:
            with torch.no_grad():
                for n, p in trainable_parameters(model):
                    p.copy_(self.weights[n])
