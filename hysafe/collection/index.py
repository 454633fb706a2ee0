"""``hysafe index search``: a collection embedded once into a saved faiss index (built and extended
by :mod:`hysafe.collection.build`).

A folder holds ``index.json`` (model fingerprint and how to rebuild the model, geometry, sources,
size, and the committed ``generation``) and the generation's files in ``gN/``: ``index.faiss``
(+ ``.json``, :class:`~hysafe.index.retrieval.RetrievalIndex`) and ``items.parquet`` (row, id, path
or text, modality, NSFW score, content digest). Searching with another model than the one that built
the index is refused. Builds are resumable and splittable over torchrun ranks like ``score``; the
index is flat below ``build.IVF_FROM`` items and IVF above (or as chosen; ``ivfpq`` keeps compressed
codes in RAM and the full vectors in ``index.faiss.vectors``, shared by the generations: a generation
reads only its own rows, and rows past them are overwritten by the next add).

**An index is a transaction.** A build or add writes a whole new generation ``g(N+1)/``, then
replaces ``index.json`` (one atomic rename: the commit point), then deletes ``gN/``; a crash at any
point leaves either the old or the new index, complete. One writer at a time holds the folder's lock
(:mod:`hysafe.utils.folder_lock`), and an add is idempotent by content: an item whose content digest
and path (or text) are already in the index, or earlier in the same add, is not added again, and the
count is logged, so re-running an interrupted or finished add adds each item exactly once. Folders
written before generations (files at the top) are read as generation 0.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..index.retrieval import RetrievalIndex
from ..models.safety_model import SafetyModel
from .embed import model_fingerprint
from .generations import VECTORS, generation_dir, item_keys, remove_generation, stale_generations

logger = logging.getLogger(__name__)

__all__ = ["CollectionIndex", "read_index_meta"]


def read_index_meta(folder: Path) -> dict:
    """An index folder's ``index.json`` (its committed generation and what built it), with a clear
    error for a folder that is no index or a corrupt file."""
    meta_path = folder / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{folder}: not a hysafe index folder (no index.json); build one with 'hysafe index build'"
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: corrupt ({e})") from e


@dataclass
class CollectionIndex:
    folder: Path
    meta: dict
    index: RetrievalIndex
    items: pa.Table

    @classmethod
    def open(cls, folder: str | Path) -> "CollectionIndex":
        folder = Path(folder)
        meta = read_index_meta(folder)
        where = generation_dir(folder, int(meta.get("generation", 0)))
        missing = [
            n for n in ("items.parquet", "index.faiss", "index.faiss.json") if not (where / n).is_file()
        ]
        if missing:
            raise ValueError(
                f"{folder}: an incomplete index ({', '.join(str(where / n) for n in missing)} missing; "
                f"index.json names generation {meta.get('generation', 0)}); "
                "rebuild it with 'hysafe index build'"
            )
        items = pq.read_table(where / "items.parquet")
        if "digest" not in items.column_names:  # built before digests: later rows get theirs
            items = items.append_column("digest", pa.nulls(items.num_rows, pa.string()))
        index = RetrievalIndex.load(where / "index.faiss", vectors=folder / VECTORS)
        if len(index) != items.num_rows:
            raise ValueError(
                f"{where}: index.faiss holds {len(index)} vectors but items.parquet {items.num_rows} rows"
            )
        return cls(folder, meta, index, items)

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", 0))

    def check_model(self, model: SafetyModel) -> None:
        if model_fingerprint(model) != self.meta["model"]:
            raise ValueError(
                f"{self.folder} was built with another model ({self.meta.get('model_spec')}); "
                "search or extend it with the model that built it"
            )

    def item_keys(self) -> set[str]:
        """The keys (content digest and path or text) of the indexed items; rows indexed before
        digests have none."""
        return {k for k in item_keys(self.items) if k is not None}

    def _save(self) -> None:
        """Write the next generation, commit it (``index.json``), then delete the others."""
        new = self.generation + 1
        where = generation_dir(self.folder, new)
        remove_generation(self.folder, new)  # an uncommitted attempt of a killed writer
        where.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.items, where / ".items.parquet.tmp")
        os.replace(where / ".items.parquet.tmp", where / "items.parquet")
        self.index.save(where / "index.faiss", vectors=self.folder / VECTORS)
        meta = {**self.meta, "size": self.items.num_rows, "generation": new}
        (self.folder / ".index.json.tmp").write_text(json.dumps(meta, indent=2))
        os.replace(self.folder / ".index.json.tmp", self.folder / "index.json")  # the commit point
        self.meta = meta
        for old in stale_generations(self.folder, new):
            remove_generation(self.folder, old)

    def append(self, table: pa.Table, embeddings: torch.Tensor) -> None:
        """Add rows (their embeddings in the same order) and commit them as the next generation."""
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
