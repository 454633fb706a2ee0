"""``hysafe index build|add|search``: a collection embedded once into a saved faiss index.

A folder holds ``index.json`` (model fingerprint and how to rebuild the model, geometry, sources,
size, and the committed ``generation``) and the generation's files in ``gN/``: ``index.faiss``
(+ ``.json``, :class:`~hysafe.index.retrieval.RetrievalIndex`) and ``items.parquet`` (row, id, path
or text, modality, NSFW score, content digest). Searching with another model than the one that built
the index is refused. Builds are resumable and splittable over torchrun ranks like ``score``; the
index is flat below ``IVF_FROM`` items and IVF above (or as chosen; ``ivfpq`` keeps compressed codes
in RAM and the full vectors in ``index.faiss.vectors``, shared by the generations: a generation reads
only its own rows, and rows past them are overwritten by the next add).

**An index is a transaction.** A build or add writes a whole new generation ``g(N+1)/``, then
replaces ``index.json`` (one atomic rename: the commit point), then deletes ``gN/``; a crash at any
point leaves either the old or the new index, complete. One writer at a time holds the folder's lock
(:mod:`hysafe.utils.folder_lock`), and an add is idempotent by content: an item whose content digest
and path (or text) are already in the index, or earlier in the same add, is not added again, and the
count is logged, so re-running an interrupted or finished add adds each item exactly once. Folders
written before generations (files at the top) are read as generation 0.
"""

from __future__ import annotations

import contextlib
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
from ..utils.folder_lock import locked_folder
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
            ("digest", pa.string()),
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
            "digest": [i.digest for i in chunk.items],
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


VECTORS = "index.faiss.vectors"  # an ivfpq index's full vectors, shared by the generations


def _generation_dir(folder: Path, generation: int) -> Path:
    """Where generation ``generation``'s files live (0: the top of the folder, the old layout)."""
    return folder / f"g{generation}" if generation else folder


def _remove_generation(folder: Path, generation: int) -> None:
    """Delete one generation's files (never ``index.json`` or the shared vectors)."""
    where = _generation_dir(folder, generation)
    for name in ("index.faiss", "index.faiss.json", "index.faiss.refine.npz", "items.parquet"):
        (where / name).unlink(missing_ok=True)
    if generation:
        for leftover in where.glob("*") if where.is_dir() else ():
            leftover.unlink()
        where.rmdir() if where.is_dir() else None


def _stale_generations(folder: Path, current: int) -> list[int]:
    """Generations other than ``current`` found in the folder: an old one whose deletion a crash
    interrupted, or a new one written but never committed."""
    found = [int(p.name[1:]) for p in folder.glob("g*") if p.is_dir() and p.name[1:].isdigit()]
    legacy = current and (folder / "items.parquet").exists()
    return sorted({g for g in found if g != current} | ({0} if legacy else set()))


def _item_keys(table: pa.Table) -> list[str | None]:
    """What makes an item the same item: its content digest at its path (or its text); None for rows
    indexed before digests. A file changed in place, or a copy at another path, is a new item."""
    ref = "path" if "path" in table.column_names else "text"
    return [
        None if d is None else f"{d}:{r}"
        for d, r in zip(table.column("digest").to_pylist(), table.column(ref).to_pylist(), strict=True)
    ]


def _dedup(table: pa.Table, emb: torch.Tensor, known: set[str]) -> tuple[pa.Table, torch.Tensor, int]:
    """The rows whose item key (:func:`_item_keys`) is neither in ``known`` nor earlier in ``table``."""
    keep, seen = [], set(known)
    for i, key in enumerate(_item_keys(table)):
        if key not in seen:
            keep.append(i)
            seen.add(key)
    rows = pa.array(keep, pa.int64())
    return table.take(rows), emb[torch.tensor(keep, dtype=torch.long)], table.num_rows - len(keep)


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
        where = _generation_dir(folder, int(meta.get("generation", 0)))
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
        return {k for k in _item_keys(self.items) if k is not None}

    def _save(self) -> None:
        """Write the next generation, commit it (``index.json``), then delete the others."""
        new = self.generation + 1
        where = _generation_dir(self.folder, new)
        _remove_generation(self.folder, new)  # an uncommitted attempt of a killed writer
        where.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.items, where / ".items.parquet.tmp")
        os.replace(where / ".items.parquet.tmp", where / "items.parquet")
        self.index.save(where / "index.faiss", vectors=self.folder / VECTORS)
        meta = {**self.meta, "size": self.items.num_rows, "generation": new}
        (self.folder / ".index.json.tmp").write_text(json.dumps(meta, indent=2))
        os.replace(self.folder / ".index.json.tmp", self.folder / "index.json")  # the commit point
        self.meta = meta
        for old in _stale_generations(self.folder, new):
            _remove_generation(self.folder, old)

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


def _check_kind(kind: str) -> None:
    if kind not in ("auto", "flat", "ivf", "ivfpq"):
        raise ValueError(f"index kind must be 'auto', 'flat', 'ivf' or 'ivfpq', got {kind!r}")


def _writer_lock(folder: Path, command: str):
    """The index folder's one-writer lock (:func:`~hysafe.utils.folder_lock.locked_folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    return locked_folder(
        folder, holder=f"another 'hysafe {command}'", advice="wait for it to finish, then run this again"
    )


def _finished_build(folder: Path) -> CollectionIndex | None:
    """The index of a build that committed but was killed before removing its parts (cleaned now);
    None when the folder holds no index. An index built otherwise is refused: it is extended with add."""
    if not (folder / "index.json").exists():
        return None
    parts = folder / "build.parts"
    if not parts.is_dir():
        raise ValueError(f"{folder} already holds an index; use 'hysafe index add' to extend it")
    with _writer_lock(folder, "index build"):
        for p in parts.iterdir():
            p.unlink()
        parts.rmdir()
    logger.info("%s: the build had committed; removed its leftover parts", folder)
    return CollectionIndex.open(folder)


def _log_duplicates(folder: Path, duplicates: int, added: int) -> None:
    if duplicates:
        logger.warning(
            "%s: %d item(s) whose content is already indexed were not added again (%d added)",
            folder,
            duplicates,
            added,
        )


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
    ``precision``: the towers' autocast precision (:func:`embed_chunks`). Re-running a build that
    was interrupted resumes it; one that already committed returns its index."""
    folder = Path(folder)
    _check_kind(kind)
    finished = _finished_build(folder)
    if finished is not None:
        return finished
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
    with _writer_lock(folder, "index build"):
        return _commit_build(store, model, source, folder, kind, model_spec)


def _commit_build(store: PartStore, model, source: Source, folder: Path, kind: str, model_spec):
    """Merge a build's parts into generation 1 and commit it; then remove the parts."""
    table, emb, skipped = store.read(embeddings=True)
    if table is None or table.num_rows == 0:
        raise ValueError(f"{source.describe()}: no readable items to index ({len(skipped)} skipped)")
    table, emb, duplicates = _dedup(table, emb, set())
    n = table.num_rows
    chosen = kind if kind != "auto" else ("ivf" if n >= IVF_FROM else "flat")
    meta = {
        "model": model_fingerprint(model),
        "model_spec": model_spec,
        "space": model.space.to_dict(),
        "modality": source.modality,
        "kind": chosen,
        "sources": [source.describe()],
        "skipped": len(skipped),
        "size": 0,
    }
    built = CollectionIndex(
        folder, meta, _new_index(model.space, emb.shape[1], chosen, n, folder), pa.table({})
    )
    built.items = table.slice(0, 0).append_column("row", pa.array([], pa.int64()))
    built.append(table, emb)
    store.remove()
    _log_duplicates(folder, duplicates, n)
    logger.info("indexed %d %ss (%d skipped) in %s (%s)", n, source.modality, len(skipped), folder, chosen)
    return built


def _remove_stale_adds(folder: Path, committed: int) -> None:
    """Parts of adds that committed but were killed before removing them (``add-K.parts``, K <
    the number of committed sources): their rows are in the index."""
    for parts in folder.glob("add-*.parts"):
        number = parts.name.removeprefix("add-").removesuffix(".parts")
        if number.isdigit() and int(number) < committed:
            for p in parts.iterdir():
                p.unlink()
            parts.rmdir()


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
    """Append the items of ``source`` whose content is not indexed yet to an existing index (same
    model, same modality), as one committed generation. Holds the folder's lock throughout (on
    rank 0 under torchrun); re-running an interrupted or finished add adds each item exactly once."""
    folder = Path(folder)
    rank, _ = rank_and_world()
    CollectionIndex.open(folder)  # a clear error before taking the lock of a folder that is no index
    with _writer_lock(folder, "index add") if rank == 0 else contextlib.nullcontext():
        index = CollectionIndex.open(folder)  # read under the lock: the last writer's commit
        index.check_model(model)
        if source.modality != index.meta["modality"]:
            raise ValueError(f"{folder} indexes {index.meta['modality']}s; cannot add {source.modality}s")
        _remove_stale_adds(folder, len(index.meta["sources"]))
        for stale in _stale_generations(folder, index.generation):  # a killed writer's leftovers
            _remove_generation(folder, stale)
        store = PartStore(
            folder / f"add-{len(index.meta['sources'])}",
            {"model": index.meta["model"], "source": source.describe(), **precision_record(precision)},
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
            return index
        _commit_add(index, store, source)
        return index


def _commit_add(index: CollectionIndex, store: PartStore, source: Source) -> None:
    """The add's new rows as the next generation (nothing is committed when none is new)."""
    table, emb, skipped = store.read(embeddings=True)
    duplicates = 0
    if table is not None and table.num_rows:
        table, emb, duplicates = _dedup(table, emb, index.item_keys())
        if table.num_rows:
            index.meta["sources"].append(source.describe())
            index.meta["skipped"] += len(skipped)
            index.append(table, emb)
    store.remove()
    _log_duplicates(index.folder, duplicates, 0 if table is None else table.num_rows)
