"""``hysafe index build`` and ``index add``: embed a source into an index folder, then commit it.

The embedding is resumable and splittable over torchrun ranks (:class:`~hysafe.collection.parts.PartStore`);
the commit is one new generation (:mod:`hysafe.collection.generations`) under the folder's one-writer
lock, and an add keeps only the items the index does not hold yet
(:func:`~hysafe.collection.generations.new_items`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import pyarrow as pa
import torch

from ..index.retrieval import RetrievalIndex
from ..models.safety_model import SafetyModel
from ..utils.folder_lock import locked_folder
from .embed import Chunk, embed_chunks, model_fingerprint, precision_record, rank_and_world
from .generations import VECTORS, new_items, remove_generation, stale_generations
from .index import CollectionIndex, read_index_meta
from .parts import PartStore, remove_parts
from .sources import Source

logger = logging.getLogger(__name__)

__all__ = ["build_index", "add_to_index", "IVF_FROM"]

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


def _part_store(out: Path, fingerprint: str, source: Source, batch_size: int, precision: str) -> PartStore:
    """The resumable parts of a build or an add, with the one record of what makes a resume the same
    run: the model, the source, the batch size (chunk ``c``'s items depend on it) and the precision."""
    run = {
        "model": fingerprint,
        "source": source.describe(),
        "batch_size": batch_size,
        **precision_record(precision),
    }
    return PartStore(out, run)


def _new_index(space, dim: int, kind: str, n: int, folder: Path) -> RetrievalIndex:
    """An empty index of ``kind`` for ``n`` vectors (IVF lists: 4 sqrt(n); the compressed kind's
    full vectors beside the faiss file)."""
    return RetrievalIndex(
        space,
        dim,
        kind=kind,
        nlist=max(1, int(4 * math.sqrt(n))) if kind != "flat" else 1024,
        **({"vectors": folder / VECTORS} if kind == "ivfpq" else {}),
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
        remove_parts(parts)
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
    store = _part_store(folder / "build", model_fingerprint(model), source, batch_size, precision)
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
    table, emb, duplicates = new_items(table, emb, set())
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
            remove_parts(parts)


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
    read_index_meta(folder)  # a clear error before taking the lock of a folder that is no index
    with _writer_lock(folder, "index add") if rank == 0 else contextlib.nullcontext():
        index = CollectionIndex.open(folder)  # read under the lock: the last writer's commit
        index.check_model(model)
        if source.modality != index.meta["modality"]:
            raise ValueError(f"{folder} indexes {index.meta['modality']}s; cannot add {source.modality}s")
        _remove_stale_adds(folder, len(index.meta["sources"]))
        for stale in stale_generations(folder, index.generation):  # a killed writer's leftovers
            remove_generation(folder, stale)
        store = _part_store(
            folder / f"add-{len(index.meta['sources'])}", index.meta["model"], source, batch_size, precision
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
        table, emb, duplicates = new_items(table, emb, index.item_keys())
        if table.num_rows:
            index.meta["sources"].append(source.describe())
            index.meta["skipped"] += len(skipped)
            index.append(table, emb)
    store.remove()
    _log_duplicates(index.folder, duplicates, 0 if table is None else table.num_rows)
