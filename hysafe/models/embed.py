"""Embedding a quadruplet batch with as few forward passes as possible.

Safe and unsafe images go through the image tower in **one** batched pass (likewise texts),
instead of the reference code's four separate passes; frozen-reference embeddings are computed
only when the objective asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .safety_model import SafetyModel

__all__ = ["QUADRUPLET_KEYS", "embed_quadruplets", "embed_dataset"]

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
            for k, emb in zip(keys, _encode_many(encode, [batch[k] for k in keys]), strict=True):
                out[QUADRUPLET_KEYS[k][2 if use_reference else 1]] = emb
    return out


@torch.no_grad()
def embed_dataset(
    model: SafetyModel, dataset, *, batch_size: int = 256, num_workers: int = 0, progress: bool = False
) -> dict[str, Tensor]:
    """Embed every row of a :class:`~hysafe.data.QuadrupletDataset` in eval mode.

    Returns ``{"T", "T*"}`` and, when the rows have images, ``{"V", "V*"}``, each ``(N, D)`` on CPU.
    """
    from torch.utils.data import DataLoader

    from ..utils.progress import bar

    was_training = model.training
    model.eval()
    needed = {"T", "T*"} | ({"V", "V*"} if getattr(dataset, "has_images", True) else set())
    parts: dict[str, list[Tensor]] = {k: [] for k in needed}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in bar(loader, desc="embedding", enabled=progress):
        batch = {k: v.to(model.device) for k, v in batch.items()}
        for name, emb in embed_quadruplets(model, batch, needed).items():
            parts[name].append(emb.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}
