"""Embedding a quadruplet batch with as few forward passes as possible.

Safe and unsafe images go through the image tower in **one** batched pass (likewise texts),
instead of the reference code's four separate passes; frozen-reference embeddings are computed
only when the objective asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .models import SafetyModel

__all__ = ["QUADRUPLET_KEYS", "embed_quadruplets"]

#: batch key -> (modality, embedding name under the trained towers, under the frozen reference)
QUADRUPLET_KEYS = {
    "image": ("image", "V", "V0"),
    "text": ("text", "T", "T0"),
    "unsafe_image": ("image", "V*", "V0*"),
    "unsafe_text": ("text", "T*", "T0*"),
    "target_image": ("image", None, "V0^"),
    "target_text": ("text", None, "T0^"),
}


def _encode_many(encode, tensors: list[Tensor]) -> list[Tensor]:
    if not tensors:
        return []
    sizes = [t.shape[0] for t in tensors]
    return list(torch.split(encode(torch.cat(tensors, dim=0)), sizes))


def embed_quadruplets(model: SafetyModel, batch: dict[str, Tensor], needed: set[str]) -> dict[str, Tensor]:
    """Embeddings named as in :mod:`hysafe.losses.objectives` for the ``needed`` names only."""
    out: dict[str, Tensor] = {}
    for use_reference in (False, True):
        for modality in ("image", "text"):
            keys = [
                k
                for k, (mod, name, ref) in QUADRUPLET_KEYS.items()
                if mod == modality and (ref if use_reference else name) in needed
            ]
            if not keys:
                continue
            missing = [k for k in keys if k not in batch]
            if missing:
                raise ValueError(f"batch lacks {missing} needed for embeddings {sorted(needed)}")
            if use_reference:
                encode = model.encode_image_ref if modality == "image" else model.encode_text_ref
            else:
                encode = model.encode_image if modality == "image" else model.encode_text
            for k, emb in zip(keys, _encode_many(encode, [batch[k] for k in keys])):
                out[QUADRUPLET_KEYS[k][2 if use_reference else 1]] = emb
    return out
