"""Build one retrieval index from many shards in parallel, then merge: how a gallery of 100M+
embeddings is indexed on a cluster and searched on one box.

1. :func:`train_index` trains an empty index (IVF centroids, codebooks) on a sample and saves it;
2. :func:`build_shard` adds one shard file (``.npy`` embeddings ``(N, D)``, read memory-mapped)
   to a copy of it: one call per process, machine or torchrun rank, all independent;
3. :func:`merge_shards` appends the shard indexes, in shard order, into one index whose ids are
   the rows of the shards laid end to end: the index a single build over the concatenated shards
   would give (same lists, codes and vectors).

:func:`build_sharded` runs the three steps with a local process pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch

from hysafe.geometry import Space

from ..utils.progress import bar
from .retrieval import RetrievalIndex

logger = logging.getLogger(__name__)

__all__ = ["train_index", "build_shard", "merge_shards", "build_sharded", "shard_rows"]

#: rows read from a shard file per ``add`` call
SHARD_CHUNK = 262_144


def shard_rows(path: str | Path, dim: int | None = None) -> np.ndarray:
    """A shard file's embeddings, memory-mapped ``(N, D)`` float32, with a clear error for anything else."""
    try:
        rows = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npy array of embeddings ({e})") from e
    if rows.ndim != 2 or rows.dtype != np.float32 or (dim is not None and rows.shape[1] != dim):
        raise ValueError(
            f"{path}: shard embeddings must be float32 (N, {dim or 'D'}), got {rows.dtype} {rows.shape}"
        )
    return rows


def train_index(
    space: Space, sample: torch.Tensor, out: str | Path, *, kind: str = "ivfpq", **options
) -> Path:
    """Train an empty index of ``kind`` on ``sample`` ``(N, D)`` and save it at ``out`` (returned)."""
    index = RetrievalIndex(space, sample.shape[1], kind=kind, **options)
    index.train(sample)
    return index.save(out)


def build_shard(trained: str | Path, shard: str | Path, out: str | Path, *, progress: bool = False) -> Path:
    """Add the embeddings of ``shard`` to a copy of the trained index ``trained``; save it at ``out``."""
    out = Path(out)
    index = RetrievalIndex.load(trained, vectors=f"{out}.vectors")
    if len(index):
        raise ValueError(
            f"{trained}: a shard is built from an empty trained index, this one holds {len(index)} items"
        )
    rows = shard_rows(shard, index.dim)
    for i in bar(range(0, rows.shape[0], SHARD_CHUNK), desc=f"shard {Path(shard).name}", enabled=progress):
        index.add(torch.from_numpy(np.array(rows[i : i + SHARD_CHUNK])))  # a writable copy of the mapped rows
    logger.info("built shard %s: %d items -> %s", shard, len(index), out)
    return index.save(out)


def merge_shards(
    trained: str | Path, shards: list[str | Path], out: str | Path, *, remove: bool = False
) -> RetrievalIndex:
    """Merge shard indexes (in this order) built from ``trained`` into one index saved at ``out``.

    Rows of shard ``j`` get ids after those of shards ``0..j-1``. ``remove`` deletes each shard's
    files once merged."""
    out = Path(out)
    merged = RetrievalIndex.load(trained, vectors=f"{out}.vectors")
    if len(merged):
        raise ValueError(
            f"{trained}: shards are merged into the empty trained index, this one holds {len(merged)} items"
        )
    if hasattr(merged, "vectors"):
        merged.vectors.path.unlink(missing_ok=True)  # a previous, unfinished merge
    for shard in shards:
        merged.merge_from(RetrievalIndex.load(shard))
        if remove:
            for suffix in ("", ".json", ".vectors", ".refine.npz"):
                Path(f"{shard}{suffix}").unlink(missing_ok=True)
    merged.save(out)
    logger.info("merged %d shards: %d items -> %s", len(shards), len(merged), out)
    return merged


def _shard_worker(job: tuple[str, str, str, int]) -> str:
    trained, shard, out, threads = job
    torch.set_num_threads(threads)
    from ._faiss import faiss

    faiss.omp_set_num_threads(threads)
    return str(build_shard(trained, shard, out))


def build_sharded(
    space: Space,
    shards: list[str | Path],
    out: str | Path,
    *,
    kind: str = "ivfpq",
    train_rows: int = 131_072,
    processes: int | None = None,
    seed: int = 0,
    **options,
) -> RetrievalIndex:
    """Train on a sample drawn across ``shards`` (``.npy`` files), build every shard in a pool of
    ``processes`` (default: one per shard, at most the CPU count) and merge into ``out``."""
    if not shards:
        raise ValueError("build_sharded needs at least one shard file")
    out = Path(out)
    work = out.parent / f".{out.name}.shards"
    work.mkdir(parents=True, exist_ok=True)
    arrays = [shard_rows(s) for s in shards]
    dims = {a.shape[1] for a in arrays}
    if len(dims) != 1:
        raise ValueError(f"shards have different embedding dims {sorted(dims)}: {[str(s) for s in shards]}")
    trained = train_index(
        space, _sample(arrays, train_rows, seed), work / "trained.faiss", kind=kind, **options
    )
    processes = processes or min(len(shards), os.cpu_count() or 1)
    threads = max(1, (os.cpu_count() or 1) // processes)
    jobs = [(str(trained), str(s), str(work / f"shard-{j:05d}.faiss"), threads) for j, s in enumerate(shards)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        built = pool.map(_shard_worker, jobs, chunksize=1)
    merged = merge_shards(trained, built, out, remove=True)
    for suffix in ("", ".json", ".vectors", ".refine.npz"):
        Path(f"{trained}{suffix}").unlink(missing_ok=True)
    work.rmdir()
    return merged


def _sample(arrays: list[np.ndarray], rows: int, seed: int) -> torch.Tensor:
    """Up to ``rows`` rows drawn uniformly across the shards (sorted reads per shard)."""
    sizes = np.array([a.shape[0] for a in arrays])
    pick = np.sort(
        np.random.default_rng(seed).choice(sizes.sum(), size=min(rows, int(sizes.sum())), replace=False)
    )
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parts = [a[pick[(pick >= s) & (pick < s + len(a))] - s] for a, s in zip(arrays, starts, strict=True)]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
