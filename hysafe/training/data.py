"""What the trainer accepts as data, turned into datasets once.

``data`` (and ``val_data``) may be a dataset (:class:`~hysafe.data.QuadrupletDataset`,
:class:`~hysafe.models.features.FeatureDataset`), a manifest path, or a list of
:class:`~hysafe.data.Quadruplet` rows. A manifest is read once; its ``train`` rows train and its
``validation`` rows (if any) validate, unless ``val_data`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..data.dataset import QuadrupletDataset
from ..data.manifest import Quadruplet, load_manifest
from ..models.safety_model import SafetyModel

__all__ = ["training_datasets", "nearest_safe_targets"]

_IMAGE_INPUTS = {"V", "V*", "V0", "V0*", "V0^"}
_TARGET_INPUTS = {"T0^", "V0^"}


def _load(data) -> Dataset | list[Quadruplet]:
    """A dataset as is; a manifest read once, or a list of rows, as rows."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return load_manifest(data)
    if isinstance(data, Sequence) and data and all(isinstance(r, Quadruplet) for r in data):
        return list(data)
    raise TypeError(
        f"data must be a dataset, a manifest path or a list of Quadruplet, got {type(data).__name__}"
    )


def _split(
    source, split: str, model: SafetyModel, preload: bool, *, whole_if_unlabelled: bool, progress: bool = True
) -> Dataset | None:
    """The ``split`` rows of ``source`` as a dataset (all rows when none carry that label and
    ``whole_if_unlabelled``); ``None`` when there are none; a dataset is returned as is."""
    if isinstance(source, Dataset):
        return source
    rows = [r for r in source if r.split == split] or (source if whole_if_unlabelled else [])
    return (
        QuadrupletDataset(
            rows, preprocess=model.preprocess, tokenizer=model.tokenizer, preload=preload, progress=progress
        )
        if rows
        else None
    )


def training_datasets(
    data, val_data, model: SafetyModel, objective, *, preload: bool, validate: bool, progress: bool = True
) -> tuple[Dataset, Dataset | None]:
    """``(train, validation)`` datasets; validation is ``None`` when off or when there is none.

    A list of rows (not a manifest) without ``train`` labels trains as a whole; likewise an
    explicit ``val_data`` list without ``validation`` labels validates as a whole. SafeR-CLIP's
    proximal targets are attached here (they need captions)."""
    source = _load(data)
    train_set = _split(
        source,
        "train",
        model,
        preload,
        whole_if_unlabelled=not isinstance(data, (str, Path)),
        progress=progress,
    )
    if train_set is None:
        raise ValueError(f"{data}: no rows in split 'train'")
    val_set = None
    # a dataset never validates itself
    if validate and (val_data is not None or not isinstance(source, Dataset)):
        explicit = val_data is not None
        val_source = _load(val_data) if explicit else source
        val_set = _split(
            val_source,
            "validation",
            model,
            preload,
            progress=progress,
            whole_if_unlabelled=explicit and not isinstance(val_data, (str, Path)),
        )
    if objective.inputs & _TARGET_INPUTS:
        if not isinstance(train_set, QuadrupletDataset):
            raise ValueError(
                f"objective {objective.name!r} needs captions to pick proximal "
                f"targets; cached features carry none"
            )
        train_set = train_set.with_targets(
            nearest_safe_targets(model, train_set, pair_quantile=objective.pair_quantile)
        )
    if not getattr(train_set, "has_images", True) and objective.inputs & _IMAGE_INPUTS:
        raise ValueError(f"objective {objective.name!r} needs images, but the training rows are text-only")
    return train_set, val_set


@torch.no_grad()
def nearest_safe_targets(
    model: SafetyModel, dataset: QuadrupletDataset, *, batch_size: int = 512, pair_quantile: float = 0.0
) -> list[int]:
    """SafeR-CLIP's proximal targets: for each unsafe caption, the row of the most similar safe
    caption under the *frozen* text tower (cosine), computed once before training; with
    ``pair_quantile`` > 0 the row's own safe caption instead, when fewer than ``pair_quantile x N``
    safe captions are more similar to the unsafe one than it is."""
    encode = model.encode_text_ref if hasattr(model, "encode_text_ref") else model.encode_text
    dev = model.device
    safe = torch.cat(
        [encode(dataset.safe_tokens[i : i + batch_size].to(dev)) for i in range(0, len(dataset), batch_size)]
    )
    unsafe = torch.cat(
        [
            encode(dataset.unsafe_tokens[i : i + batch_size].to(dev))
            for i in range(0, len(dataset), batch_size)
        ]
    )
    safe, unsafe = (
        torch.nn.functional.normalize(safe.float(), dim=-1),
        torch.nn.functional.normalize(unsafe.float(), dim=-1),
    )
    targets = []
    for i in range(0, len(unsafe), batch_size):
        sims = unsafe[i : i + batch_size] @ safe.T
        rows = torch.arange(i, i + len(sims), device=sims.device)
        # safe captions nearer than the pair
        pair_rank = (sims > sims[torch.arange(len(sims)), rows][:, None]).sum(1)
        targets.append(torch.where(pair_rank < pair_quantile * len(safe), rows, sims.argmax(1)))
    return torch.cat(targets).tolist()
