"""Embedding a collection chunk by chunk: DataLoader workers decode, the main process encodes.

Unreadable, corrupt, zero-byte or non-image files and empty texts do not stop the run: they come
back as ``skipped`` records (id, reference, reason) next to the embedded items of their chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..data.dataset import tokenize_captions
from ..models.backbone import autocast_dtype
from ..models.checkpoint import inference_copy
from ..models.safety_model import SafetyModel
from ..utils.distributed import launch_env
from ..utils.progress import bar
from .sources import Item, Source, open_image

__all__ = ["Chunk", "embed_chunks", "model_fingerprint", "precision_record", "rank_and_world"]


@dataclass
class Chunk:
    id: int
    items: list[Item]  # the items that were read (payloads dropped)
    embeddings: Tensor | None = None  # (len(items), D) on CPU
    skipped: list[dict] = field(default_factory=list)


def precision_record(precision: str) -> dict:
    """What a run records about its precision: nothing for fp32 (so files written before the option
    still resume), the name otherwise (a resumed run cannot mix precisions)."""
    return {} if precision == "fp32" else {"precision": precision}


def rank_and_world(env=os.environ) -> tuple[int, int]:
    """This process's share of the work under torchrun (``RANK``/``WORLD_SIZE``; 0/1 otherwise)."""
    launched = launch_env(env)
    return launched.rank, launched.world


def model_fingerprint(model: SafetyModel) -> str:
    """A digest of the model's configuration, scalars and weights: an index or a score file built
    with one model is refused with another. With LoRA adapters the adapters are hashed and the
    frozen base is identified by its configured source (peft re-merges attention LoRA in every
    forward pass, which moves the base weights by float rounding)."""
    from ..models.safety_model import trainable_parameters

    h = hashlib.blake2b(digest_size=16)
    h.update(
        json.dumps(
            {"config": model.config.to_dict(), "scalars": model.scalars()}, sort_keys=True, default=str
        ).encode()
    )
    named = (
        trainable_parameters(model)
        if model.backbone.has_adapters
        else sorted(model.backbone.state_dict().items())
    )
    for name, tensor in named:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _ChunkReader(IterableDataset):
    def __init__(
        self,
        source: Source,
        batch_size: int,
        preprocess: Callable | None,
        todo: Callable[[int], bool],
        rank: int,
        world: int,
    ):
        self.source, self.batch_size, self.preprocess, self.todo, self.rank, self.world = (
            source,
            batch_size,
            preprocess,
            todo,
            rank,
            world,
        )

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for c, items in self.source.chunks(self.batch_size):
            if c % self.world != self.rank or (c // self.world) % workers != worker or not self.todo(c):
                continue
            yield self._read(c, items)

    def _read(self, c: int, items: list[Item]) -> dict:
        ok, payloads, skipped = [], [], []
        for item in items:
            try:
                if item.problem is not None:
                    raise ValueError(item.problem)
                item = _with_content(item)
                payloads.append(self._load(item))
            except Exception as e:  # any unreadable item is skipped and reported, never fatal
                skipped.append(
                    {
                        "index": item.index,
                        "id": item.id,
                        "ref": item.ref if item.modality == "image" else "",
                        "error": f"{type(e).__name__}: {e}",
                    }
                )
                continue
            ok.append(Item(item.index, item.id, item.modality, item.ref, digest=item.digest))
        data = torch.stack(payloads) if payloads and items[0].modality == "image" else payloads
        return {"chunk": c, "items": ok, "data": data, "skipped": skipped}

    def _load(self, item: Item):
        if item.modality == "text":
            if not item.ref.strip():
                raise ValueError("empty text")
            return item.ref
        return self.preprocess(open_image(item))


def _with_content(item: Item) -> Item:
    """``item`` with its bytes read once (the payload an image is decoded from) and their sha256."""
    if item.modality == "text":
        return replace(item, digest=hashlib.sha256(item.ref.encode("utf-8", "surrogatepass")).hexdigest())
    content = item.payload if item.payload is not None else Path(item.ref).read_bytes()
    return replace(item, payload=content, digest=hashlib.sha256(content).hexdigest())


@torch.no_grad()
def embed_chunks(
    model: SafetyModel,
    source: Source,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    todo: Callable[[int], bool] = lambda c: True,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    precision: str = "fp32",
) -> Iterator[Chunk]:
    """Embeddings of this rank's chunks that ``todo`` accepts, in the order workers finish them.

    ``precision`` (fp32, bf16, fp16, auto) is the towers' autocast precision; the models' hyperbolic
    maps and the returned embeddings stay float32. A model with LoRA adapters encodes through its
    merged-weights copy (:func:`~hysafe.models.checkpoint.inference_copy`): peft's attention LoRA
    would otherwise move the base weights by float rounding in every chunk's forward, so the last
    chunk would be embedded by a slightly different model than the first."""
    amp = autocast_dtype(precision, model.device)
    encoder = inference_copy(model)
    reader = _ChunkReader(source, batch_size, model.preprocess, todo, rank, world)
    loader = DataLoader(
        reader,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=model.device.type == "cuda",
        collate_fn=lambda x: x,
        persistent_workers=False,
    )
    was_training = encoder.training
    encoder.eval()
    total = (
        sum(1 for c in range(source.num_chunks(batch_size)) if c % world == rank and todo(c))
        if progress
        else None
    )
    try:
        for part in bar(
            loader,
            desc=f"embedding {source.modality}s (chunks of {batch_size})",
            enabled=progress,
            total=total,
        ):
            chunk = Chunk(part["chunk"], part["items"], skipped=part["skipped"])
            if part["items"]:
                with torch.autocast(model.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    if source.modality == "image":
                        emb = encoder.encode_image(part["data"].to(model.device, non_blocking=True))
                    else:
                        emb = encoder.encode_text(
                            tokenize_captions(model.tokenizer, part["data"], what="texts").to(model.device)
                        )
                chunk.embeddings = emb.float().cpu()
            yield chunk
    finally:
        encoder.train(was_training)
