"""``hysafe index build|add|search``: a collection embedded once into a saved faiss index.

A folder holds ``index.faiss`` (+ ``.json``, :class:`~hysafe.index.retrieval.RetrievalIndex`),
``items.parquet`` (row, id, path or text, modality, NSFW score) and ``index.json`` (model
fingerprint and how to rebuild the model, geometry, sources, size). Searching with another model
than the one that built the index is refused. Builds are resumable and splittable over torchrun
ranks like ``score``; the index is flat below ``IVF_FROM`` items and IVF above (or as chosen;
``ivfpq`` keeps compressed codes in RAM and the full vectors in ``index.faiss.vectors``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..index.retrieval import RetrievalIndex
from ..models.safety_model import SafetyModel
from .embed import Chunk, embed_chunks, model_fingerprint, precision_record, rank_and_world
from .parts import PartStore
from .sources import Source

logger = logging.getLogger(__name__)

__all__ = ["CollectionIndex", "build_index", "add_to_index", "IVF_FROM"]

IVF_FROM = 200_000


def _items_table(chunk: Chunk, scores: torch.Tensor, modality: str) -> pa.Table:
    ref = "path" if modality == "image" else "text"
    schema = pa.schema(
        [
            ("index", pa.int64()),
            ("id", pa.string()),
            (ref, pa.string()),
            ("modality", pa.string()),
            ("score", pa.float64()),
        ],
        metadata={"skipped": json.dumps(chunk.skipped)},
    )
    return pa.table(
        {
            "index": [i.index for i in chunk.items],
            "id": [i.id for i in chunk.items],
            ref: [i.ref for i in chunk.items],
            "modality": [modality] * len(chunk.items),
            "score": scores.double().tolist(),
        },
        schema=schema,
    )


def _embed_into(
    store: PartStore,
    model: SafetyModel,
    source: Source,
    *,
    batch_size: int,
    num_workers: int,
    progress: bool,
    precision: str,
) -> bool:
    rank, world = rank_and_world()
    for chunk in embed_chunks(
        model,
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        todo=lambda c: not store.done(c),
        rank=rank,
        world=world,
        progress=progress,
        precision=precision,
    ):
        emb = chunk.embeddings if chunk.embeddings is not None else torch.zeros(0, model.embed_dim)
        store.write(
            chunk.id, _items_table(chunk, model.nsfw_score(emb, source.modality), source.modality), emb
        )
    return store.finish_rank(rank, world)


@dataclass
class CollectionIndex:
    folder: Path
    meta: dict
    index: RetrievalIndex
    items: pa.Table

    @classmethod
    def open(cls, folder: str | Path) -> "CollectionIndex":
        folder = Path(folder)
        meta_path = folder / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{folder}: not a hysafe index folder (no index.json); build one with 'hysafe index build'"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: corrupt ({e})") from e
        items = pq.read_table(folder / "items.parquet")
        index = RetrievalIndex.load(folder / "index.faiss")
        if len(index) != items.num_rows:
            raise ValueError(
                f"{folder}: index.faiss holds {len(index)} vectors but items.parquet {items.num_rows} rows"
            )
        return cls(folder, meta, index, items)

    def check_model(self, model: SafetyModel) -> None:
        if model_fingerprint(model) != self.meta["model"]:
            raise ValueError(
                f"{self.folder} was built with another model ({self.meta.get('model_spec')}); "
                "search or extend it with the model that built it"
            )

    def _save(self) -> None:
        tmp = self.folder / ".items.parquet.tmp"
        pq.write_table(self.items, tmp)
        # each file replaced atomically; ivfpq vectors already live here
        self.index.save(self.folder / "index.faiss")
        os.replace(tmp, self.folder / "items.parquet")
        self.meta["size"] = self.items.num_rows
        (self.folder / ".index.json.tmp").write_text(json.dumps(self.meta, indent=2))
        os.replace(self.folder / ".index.json.tmp", self.folder / "index.json")

    def append(self, table: pa.Table, embeddings: torch.Tensor) -> None:
        start = self.items.num_rows
        table = table.replace_schema_metadata(None).append_column(
            "row", pa.array(range(start, start + table.num_rows), pa.int64())
        )
        self.index.add(embeddings)
        self.items = pa.concat_tables([self.items, table.select(self.items.column_names)]) if start else table
        self._save()

    @torch.no_grad()
    def search(
        self,
        model: SafetyModel,
        queries: torch.Tensor,
        k: int,
        *,
        modality: str,
        tau: str | float | None = None,
        check_model: bool = True,
    ) -> list[list[dict]]:
        """Top-``k`` items per query embedding ``(Q, D)`` (optionally traversed toward the safe
        region first, HySAC only): dicts with rank, row, id, path/text, distance, score.
        ``check_model=False`` skips the fingerprint check (a service checks once at start)."""
        if check_model:
            self.check_model(model)
        if tau is not None:
            if not model.space.hyperbolic:
                raise ValueError("traversal (--tau) needs a hyperbolic model such as HySAC")
            queries = model.traverse(queries, tau, modality=modality)
        dist, ids = self.index.search(queries, k)
        out = []
        for ds, ix in zip(dist.tolist(), ids.tolist(), strict=True):
            found = [(d, i) for d, i in zip(ds, ix, strict=True) if i >= 0]
            rows = self.items.take([i for _, i in found]).to_pylist()  # only the hits, not the whole table
            out.append(
                [
                    {"rank": r + 1, "distance": float(d), **row}
                    for r, ((d, _), row) in enumerate(zip(found, rows, strict=True))
                ]
            )
        return out


def _new_index(space, dim: int, kind: str, n: int, folder: Path) -> RetrievalIndex:
    """An empty index of ``kind`` for ``n`` vectors (IVF lists: 4 sqrt(n); the compressed kind's
    full vectors beside the faiss file)."""
    return RetrievalIndex(
        space,
        dim,
        kind=kind,
        nlist=max(1, int(4 * math.sqrt(n))) if kind != "flat" else 1024,
        **({"vectors": folder / "index.faiss.vectors"} if kind == "ivfpq" else {}),
    )


def _check_new_index(folder: Path, kind: str) -> Path:
    if (folder / "index.json").exists():
        raise ValueError(f"{folder} already holds an index; use 'hysafe index add' to extend it")
    if kind not in ("auto", "flat", "ivf", "ivfpq"):
        raise ValueError(f"index kind must be 'auto', 'flat', 'ivf' or 'ivfpq', got {kind!r}")
    return folder


def build_index(
    model: SafetyModel,
    source: Source,
    folder: str | Path,
    *,
    kind: str = "auto",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    model_spec: dict | None = None,
    precision: str = "fp32",
) -> CollectionIndex | None:
    """Embed ``source`` into a new index folder; returns it (``None`` on ranks other than 0).
    ``precision``: the towers' autocast precision (:func:`embed_chunks`)."""
    folder = _check_new_index(Path(folder), kind)
    fingerprint = model_fingerprint(model)
    store = PartStore(
        folder / "build",
        {
            "model": fingerprint,
            "source": source.describe(),
            "batch_size": batch_size,
            **precision_record(precision),
        },
    )
    if not _embed_into(
        store,
        model,
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        precision=precision,
    ):
        return None
    table, emb, skipped = store.read(embeddings=True)
    if table is None or table.num_rows == 0:
        raise ValueError(f"{source.describe()}: no readable items to index ({len(skipped)} skipped)")
    n = table.num_rows
    chosen = kind if kind != "auto" else ("ivf" if n >= IVF_FROM else "flat")
    index = _new_index(model.space, emb.shape[1], chosen, n, folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": fingerprint,
        "model_spec": model_spec,
        "space": model.space.to_dict(),
        "modality": source.modality,
        "kind": chosen,
        "sources": [source.describe()],
        "skipped": len(skipped),
        "size": 0,
    }
    built = CollectionIndex(folder, meta, index, pa.table({}))
    built.items = table.slice(0, 0).append_column("row", pa.array([], pa.int64()))
    built.append(table, emb)
    store.remove()
    logger.info("indexed %d %ss (%d skipped) in %s (%s)", n, source.modality, len(skipped), folder, chosen)
    return built


def add_to_index(
    model: SafetyModel,
    source: Source,
    folder: str | Path,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "fp32",
) -> CollectionIndex:
    """Append the items of ``source`` to an existing index (same model, same modality)."""
    index = CollectionIndex.open(folder)
    index.check_model(model)
    if source.modality != index.meta["modality"]:
        raise ValueError(f"{folder} indexes {index.meta['modality']}s; cannot add {source.modality}s")
    store = PartStore(
        Path(folder) / f"add-{len(index.meta['sources'])}",
        {"model": index.meta["model"], "source": source.describe(), **precision_record(precision)},
    )
    _embed_into(
        store,
        model,
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        precision=precision,
    )
    table, emb, skipped = store.read(embeddings=True)
    if table is not None and table.num_rows:
        index.meta["sources"].append(source.describe())
        index.meta["skipped"] += len(skipped)
        index.append(table, emb)
    store.remove()
    return index
