"""The coarse centroids of an IVF index: balanced two-level k-means, rescaled for geodesic routing.

A query scans the lists it probes, and queries land in a list in proportion to its size, so the
expected scan of one probe is ``sum(n_l^2) / N`` vectors, not the mean list size ``N / nlist``.
Plain k-means on clustered embeddings leaves lists far from balanced: on the low-rank benchmark
gallery (bench/compressed_index.py, 131,072 points, 410 lists) the largest list held 11x the mean
and a probe scanned 4.7x the mean. :func:`geodesic_centroids` therefore clusters in two levels:
k-means into ``nlist / 2`` groups, then each group split by its own k-means into a number of lists
proportional to its size (largest remainders, at least one each), so a group ten times the mean
size becomes ten lists of about the mean size. docs/benchmarks.md section 5 measures what it does
to speed and recall.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from hysafe.geometry import Space

from ._faiss import faiss

logger = logging.getLogger(__name__)

__all__ = ["route", "rescaled", "allocate", "balanced_kmeans", "geodesic_centroids", "probe_cost"]

#: training points routed per matrix product (bounds the temporary score block)
ROUTE_BLOCK = 8192


def route(space: Space, x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each embedding's nearest centroid in the space's geometry (the IVF's routing):
    the largest inner product of its query vector with the centroids' gallery vectors. ``(N,)``."""
    g = space.gallery_vectors(torch.from_numpy(centroids)).float()
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), ROUTE_BLOCK):
        q = space.query_vectors(torch.from_numpy(x[i : i + ROUTE_BLOCK])).float()
        out[i : i + ROUTE_BLOCK] = (q @ g.T).argmax(1).numpy()
    return out


def rescaled(x: np.ndarray, centroids: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Centroids rescaled to their members' mean norm (a centroid without members is kept).

    A Euclidean mean is shrunk toward the root and would be geodesically near everything; at the
    members' mean norm the lists stay balanced."""
    nlist = len(centroids)
    count = np.bincount(members, minlength=nlist)
    mean_norm = np.bincount(members, weights=np.linalg.norm(x, axis=1), minlength=nlist) / np.maximum(
        count, 1
    )
    scale = np.where(count > 0, mean_norm / np.maximum(np.linalg.norm(centroids, axis=1), 1e-12), 1.0)
    return (centroids * scale[:, None]).astype(np.float32)


def allocate(sizes: np.ndarray, total: int) -> np.ndarray:
    """Lists per group: proportional to ``sizes`` by largest remainders, at least one per non-empty
    group and at most its size, summing to ``total`` (``sizes.sum() >= total >= non-empty groups``)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    quota = sizes * total / sizes.sum()
    out = np.minimum(np.maximum(np.floor(quota).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    while out.sum() != total:
        room = out < sizes if out.sum() < total else out > (sizes > 0)
        gap = quota - out if out.sum() < total else out - quota
        out[np.flatnonzero(room)[np.argmax(gap[room])]] += 1 if out.sum() < total else -1
    return out


def _kmeans(space: Space, x: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """``k`` k-means centroids of ``x`` (spherical in cosine spaces), rescaled to their members' mean norm."""
    if k == 1:
        return rescaled(x, x.mean(0, keepdims=True), np.zeros(len(x), np.int64))
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=not space.hyperbolic)
    kmeans.cp.min_points_per_centroid = 1  # a group split into few lists is small by design
    kmeans.train(np.ascontiguousarray(x))
    return rescaled(x, kmeans.centroids, kmeans.index.search(x, 1)[1][:, 0])


def probe_cost(counts: np.ndarray) -> float:
    """Expected scan of one probe over the mean list size: ``sum(n^2) / N / (N / nlist)``."""
    counts = np.asarray(counts, dtype=np.float64)
    return float((counts**2).sum() * len(counts) / counts.sum() ** 2)


def balanced_kmeans(space: Space, x: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """``k`` centroids of ``x`` in two levels (module docstring); a group given four lists or more
    is split the same way again, so its lists are balanced too."""
    if k < 4:
        return _kmeans(space, x, k, niter=niter, seed=seed)
    members = route(space, x, _kmeans(space, x, k // 2, niter=niter, seed=seed))
    lists = allocate(np.bincount(members, minlength=k // 2), k)
    return np.concatenate(
        [
            balanced_kmeans(space, x[members == g], int(n), niter=niter, seed=seed + g)
            for g, n in enumerate(lists)
            if n > 0
        ]
    )


def geodesic_centroids(
    space: Space, x: np.ndarray, nlist: int, *, niter: int, seed: int, balanced: bool = True
) -> np.ndarray:
    """``nlist`` IVF centroids of embeddings ``x`` ``(N >= nlist, D)``, each at its members' mean norm:
    :func:`balanced_kmeans`, or plain k-means with ``balanced=False``."""
    if not balanced:
        return _kmeans(space, x, nlist, niter=niter, seed=seed)
    centroids = balanced_kmeans(space, x, nlist, niter=niter, seed=seed)
    # routing every point again costs a full pass (30 s at 524k x 4,096)
    if not logger.isEnabledFor(logging.INFO):
        return centroids
    counts = np.bincount(route(space, x, centroids), minlength=nlist)
    logger.info(
        "IVF centroids: largest list %.1fx the mean, a probe scans %.2fx the mean (training points)",
        counts.max() * nlist / len(x),
        probe_cost(counts),
    )
    return centroids
