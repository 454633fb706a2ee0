"""The probe text radius's fit (``ModelConfig(text_radius="probe")``, hysafe's option; docs/language.md,
round 8).

A HySAC text embedding with the probe radius lies at ``d0 = exp(w . S / |S| + b)`` from the root, ``S`` the
(LoRA-adapted) sentence embedding of the same pass. ``w`` and ``b`` train with the rest under HySAC's
losses; at the end of training (:func:`fit_probe_radius`, called by :func:`hysafe.train` on the kept
weights) the head's direction is refitted the way the report's logistic probe is: L2 logistic
regression of safe (0) against unsafe (1) training captions on ``S / |S|``, its C chosen on the
validation captions (:meth:`~hysafe.models.classifier.NSFWClassifier.tuned_logistic_probe`). Its scale and
offset are then set so that the training captions' log distances keep the mean and spread they had:
the captions stay where HySAC's losses put them on the whole, in the probe's order.

Why (validation only, round 8): on the round-6 model's validation captions, that probe on the head's own
input reached 0.962 ROC-AUC (C chosen on the other half) where the head trained by the losses reached
0.936, and separated the training captions perfectly: the losses' hinges stop at their margin, the probe's
C is chosen on wordings training never saw.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..models.classifier import NSFWClassifier
from ..models.text_radius import PROBE_RADIUS

__all__ = ["fit_probe_radius", "needs_probe_fit", "check_probe_data", "labelled_captions"]

logger = logging.getLogger(__name__)


def needs_probe_fit(model) -> bool:
    """Whether ``model``'s text radius is fitted as the probe at the end of training."""
    return getattr(getattr(model, "config", None), "text_radius", None) == PROBE_RADIUS


def check_probe_data(model, val_set, *, validate: bool = True) -> None:
    """Refuse to train a probe radius without validation captions, before any step: its C is chosen
    on them (``validate``: whether the run validates at all)."""
    if not needs_probe_fit(model) or val_set is not None:
        return
    why = (
        "validation is off (TrainConfig(validate=False), --no-validate): turn it back on"
        if not validate
        else "the data has none: give a manifest with a validation split (or val_data= in Python)"
    )
    raise ValueError(
        f"text_radius={PROBE_RADIUS!r} fits its head at the end of training with C chosen on validation "
        f"captions, and {why}"
    )


@torch.no_grad()
def labelled_captions(dataset, read, *, batch_size: int, device="cpu") -> tuple[Tensor, Tensor]:
    """``read(tokens)`` (float, on the CPU) of ``dataset``'s safe captions (label 0) then its unsafe ones
    (label 1), ``batch_size`` captions at a time on ``device``."""
    parts = []
    for tokens in (dataset.safe_tokens, dataset.unsafe_tokens):
        batches = tokens.split(batch_size)
        parts.append(torch.cat([read(t.to(device)).float().cpu() for t in batches]))
    labels = torch.cat([torch.zeros(len(parts[0])), torch.ones(len(parts[1]))]).long()
    return torch.cat(parts), labels


@torch.no_grad()
def fit_probe_radius(model, train_set, val_set, *, batch_size: int = 256) -> dict:
    """Refit ``model``'s probe radius on ``train_set``'s captions, C chosen on ``val_set``'s (module
    docstring). Returns ``{"C", "val_roc_auc"}``: the C chosen and each C's validation ROC-AUC."""
    if not needs_probe_fit(model):
        raise ValueError(
            f"only a HySAC model with text_radius={PROBE_RADIUS!r} has its head fitted as a probe"
        )
    check_probe_data(model, val_set)
    was_training = model.training
    model.eval()
    try:
        train, val = (
            labelled_captions(d, model.radius_inputs, batch_size=batch_size, device=model.device)
            for d in (train_set, val_set)
        )
        head = model.text_radius
        before = head(train[0].to(model.device)).cpu()
        probe = NSFWClassifier.tuned_logistic_probe(train, val)
        direction = torch.as_tensor(probe.params["direction"], dtype=torch.float64)
        scores = torch.nn.functional.normalize(train[0].double(), dim=-1) @ direction
        head.set_read(direction.to(model.device), scores, before)
    finally:
        model.train(was_training)
    fitted = {"C": probe.params["C"], "val_roc_auc": probe.params["val_roc_auc"]}
    logger.info(
        "probe text radius fitted: C=%g (validation ROC-AUC per C: %s)", fitted["C"], fitted["val_roc_auc"]
    )
    return fitted
