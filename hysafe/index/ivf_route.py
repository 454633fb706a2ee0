"""IVF routing in a low-dimensional sketch of the centroids, re-scored exactly.

Exact routing compares every query with every centroid: at 1M x 512 and 4,096 lists that product
(1,000 x 513 x 4,096 per 1,000 queries) and its top-k take 40% of an nprobe-1 search, the same work in hysafe
and in faiss's ``IndexIVFFlat``. :class:`RoutingSketch` projects the centroids' index vectors onto
their ``dims`` leading principal directions (an SVD of the centred centroids, once per index): a
query's inner product with every centroid is estimated in ``dims`` dimensions (the mean's share
exact), the ``nprobe + ROUTE_SPARE`` best estimates are re-scored with the full vectors, and the
best ``nprobe`` of those are probed, with their exact inner products. The estimate only picks the
candidates: a probed list's score is never approximate, and with ``dims`` at the vectors' width
the estimate is the inner product itself (tested: the same lists as exact routing).

Grouping the centroids by k-means and comparing a query with the groups first was measured too
(1M x 512, 4,096 lists): its groups must hold a quarter to 40% of the centroids before the nearest list is
found 99% of the time, where a 128-dimensional sketch with 8 candidates finds it for every query.

This approximates the routing, so it is an option (``RetrievalIndex.route_dims``), off by default;
docs/benchmarks.md section 8 measures its recall and speed.
"""

from __future__ import annotations

import numpy as np
import torch

from ._faiss import faiss

__all__ = ["RoutingSketch", "ROUTE_SPARE"]

#: candidates re-scored beyond the ``nprobe`` probed ones
ROUTE_SPARE = 7


class RoutingSketch:
    """The ``dims`` leading principal directions of an IVF's centroids ``(nlist, d)`` (index vectors),
    and the centroids projected onto them."""

    def __init__(self, centroids: np.ndarray, dims: int):
        self.centroids = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        exact = self.centroids.double()
        mean = exact.mean(0)
        # float64 SVD: deterministic, so a loaded index sketches its centroids the same way
        _, _, vh = torch.linalg.svd(exact - mean, full_matrices=False)
        self.requested, self.dims = dims, min(dims, vh.shape[0])
        self.basis = vh[: self.dims].T.float().contiguous()  # (d, dims)
        self.projected = ((exact - mean).float() @ self.basis).contiguous()  # (nlist, dims)
        self.mean = mean.float()
        # a query's inner product with the mean is the same for every centroid: the candidates are
        # the largest inner products of projections, which faiss's flat search selects fastest
        self._candidates = faiss.IndexFlatIP(self.dims)
        self._candidates.add(self.projected.numpy())

    @property
    def nlist(self) -> int:
        return self.centroids.shape[0]

    def estimate(self, queries: torch.Tensor) -> torch.Tensor:
        """Estimated inner products ``(Q, nlist)`` of query vectors with every centroid."""
        return (queries @ self.basis) @ self.projected.T + (queries @ self.mean).unsqueeze(1)

    def route(self, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products with and ids of each query's ``nprobe`` best centroids among the
        ``nprobe + ROUTE_SPARE`` best estimates, best first: ``(Q, nprobe)`` each."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        nprobe = min(nprobe, self.nlist)
        spare = min(nprobe + ROUTE_SPARE, self.nlist)
        candidates = torch.from_numpy(self._candidates.search((q @ self.basis).numpy(), spare)[1])
        ip = torch.bmm(self.centroids[candidates], q.unsqueeze(2)).squeeze(2)
        top, arg = ip.topk(nprobe, dim=1)
        return top.numpy(), candidates.gather(1, arg).numpy()
