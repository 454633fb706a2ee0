"""An index folder's generations: where each lives, which are stale, and which rows are new.

A build or add writes generation ``gN/`` whole, then commits it by replacing ``index.json``
(:class:`~hysafe.collection.index.CollectionIndex`), then removes the others. Generation 0 is the
layout before generations (files at the top of the folder). An ``ivfpq`` index's full vectors are one
file shared by every generation (:data:`VECTORS`): a generation reads only its own rows.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch

__all__ = ["VECTORS", "generation_dir", "remove_generation", "stale_generations", "item_keys", "new_items"]

VECTORS = "index.faiss.vectors"  # an ivfpq index's full vectors, shared by the generations


def generation_dir(folder: Path, generation: int) -> Path:
    """Where generation ``generation``'s files live (0: the top of the folder, the old layout)."""
    return folder / f"g{generation}" if generation else folder


def remove_generation(folder: Path, generation: int) -> None:
    """Delete one generation's files (never ``index.json`` or the shared vectors)."""
    where = generation_dir(folder, generation)
    for name in ("index.faiss", "index.faiss.json", "index.faiss.refine.npz", "items.parquet"):
        (where / name).unlink(missing_ok=True)
    if generation:
        for leftover in where.glob("*") if where.is_dir() else ():
            leftover.unlink()
        where.rmdir() if where.is_dir() else None


def stale_generations(folder: Path, current: int) -> list[int]:
    """Generations other than ``current`` found in the folder: an old one whose deletion a crash
    interrupted, or a new one written but never committed."""
    found = [int(p.name[1:]) for p in folder.glob("g*") if p.is_dir() and p.name[1:].isdigit()]
    legacy = current and (folder / "items.parquet").exists()
    return sorted({g for g in found if g != current} | ({0} if legacy else set()))


def item_keys(table: pa.Table) -> list[str | None]:
    """What makes an item the same item: its content digest at its path (or its text); None for rows
    indexed before digests. A file changed in place, or a copy at another path, is a new item."""
    ref = "path" if "path" in table.column_names else "text"
    return [
        None if d is None else f"{d}:{r}"
        for d, r in zip(table.column("digest").to_pylist(), table.column(ref).to_pylist(), strict=True)
    ]


def new_items(table: pa.Table, emb: torch.Tensor, known: set[str]) -> tuple[pa.Table, torch.Tensor, int]:
    """The rows whose item key (:func:`item_keys`) is neither in ``known`` nor earlier in ``table``."""
    keep, seen = [], set(known)
    for i, key in enumerate(item_keys(table)):
        if key not in seen:
            keep.append(i)
            seen.add(key)
    rows = pa.array(keep, pa.int64())
    return table.take(rows), emb[torch.tensor(keep, dtype=torch.long)], table.num_rows - len(keep)
