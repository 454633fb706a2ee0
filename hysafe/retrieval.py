"""Exact and approximate retrieval on faiss, for cosine and Lorentz spaces alike.

Both spaces reduce nearest-neighbour search to maximum inner product over the vectors of
:meth:`Space.query_vectors` / :meth:`Space.gallery_vectors` (for the Lorentz model ``[x, x_t]``
and ``[y, -y_t]``, whose plain inner product is the Lorentzian one), so one faiss inner-product
index serves every model. Results come back as true distances in the model's space.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
import numpy as np
import torch
from torch import Tensor

from hysafe.geometry import Space, space_from_dict

from .traversal import traverse

logger = logging.getLogger(__name__)

__all__ = ["RetrievalIndex"]


#: faiss's exhaustive search multiplies query blocks by database blocks of this many vectors; its
#: default (1024) makes many small GEMMs, and a larger block is ~1.8x faster on a 2-core CPU.
BLAS_DATABASE_BLOCK = 16384


def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class RetrievalIndex:
    """A faiss inner-product index over embeddings of one :class:`Space`.

    ``kind="flat"`` is exact; ``kind="ivf"`` clusters the gallery into ``nlist`` lists and probes
    ``nprobe`` of them per query (train it with :meth:`train` or let :meth:`add` do it).

    IVF lists are assigned in the space's own geometry: centroids are stored as gallery vectors and
    both gallery items and queries are routed by the inner product of their *query* vectors with
    them (for the Lorentz model, the Lorentzian inner product, i.e. the geodesically nearest
    centroid). faiss's own routing would compare ``[y, -y_t]`` with the centroids, a different
    criterion from the queries', and loses recall.
    """

    def __init__(self, space: Space, dim: int, *, kind: str = "flat", nlist: int = 1024, nprobe: int = 32):
        if kind not in ("flat", "ivf"):
            raise ValueError(f"kind must be 'flat' or 'ivf', got {kind!r}")
        self.space, self.dim, self.kind, self.nlist, self.nprobe = space, dim, kind, nlist, nprobe
        vec_dim = space.gallery_vectors(torch.zeros(1, dim)).shape[-1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(vec_dim)
        else:
            self._quantizer = faiss.IndexFlatIP(vec_dim)
            self.index = faiss.IndexIVFFlat(self._quantizer, vec_dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.nprobe = nprobe

    def __len__(self) -> int:
        return self.index.ntotal

    def _check(self, x: Tensor, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be (N, {self.dim}), got {tuple(x.shape)}")

    def train(self, sample: Tensor, *, niter: int = 20, seed: int = 1) -> None:
        """Train the IVF centroids (k-means on a sample of gallery embeddings)."""
        self._check(sample, "sample")
        if self.kind == "ivf" and not self.index.is_trained:
            if sample.shape[0] < self.nlist:
                raise ValueError(f"IVF with nlist={self.nlist} needs at least that many training vectors, got {sample.shape[0]}")
            kmeans = faiss.Kmeans(self.dim, self.nlist, niter=niter, seed=seed, spherical=not self.space.hyperbolic)
            x = _np(sample)
            kmeans.train(x)
            centroids = kmeans.centroids
            # a Euclidean mean is shrunk toward the root and would be geodesically near everything:
            # put each centroid back at the mean norm of its members (balanced lists)
            members = kmeans.index.search(x, 1)[1][:, 0]
            count = np.bincount(members, minlength=self.nlist)
            mean_norm = np.bincount(members, weights=np.linalg.norm(x, axis=1), minlength=self.nlist) / np.maximum(count, 1)
            scale = np.where(count > 0, mean_norm / np.maximum(np.linalg.norm(centroids, axis=1), 1e-12), 1.0)
            centroids = (centroids * scale[:, None]).astype(np.float32)
            self._quantizer.add(_np(self.space.gallery_vectors(torch.from_numpy(centroids))))
            self.index.is_trained = True

    def _route(self, x: Tensor, nprobe: int) -> np.ndarray:
        """Lists of the ``nprobe`` nearest centroids, in the space's geometry. ``(N, nprobe)``."""
        quantizer = faiss.downcast_index(self.index.quantizer)
        return quantizer.search(_np(self.space.query_vectors(x)), nprobe)[1]

    def add(self, gallery: Tensor, *, batch_size: int = 65536) -> None:
        """Add gallery embeddings ``(N, D)`` in batches (ids continue from the current size)."""
        self._check(gallery, "gallery")
        if not self.index.is_trained:
            self.train(gallery)
        for i in range(0, gallery.shape[0], batch_size):
            chunk = gallery[i : i + batch_size]
            if self.kind == "ivf":
                from faiss.contrib.ivf_tools import add_preassigned

                add_preassigned(self.index, _np(self.space.gallery_vectors(chunk)), self._route(chunk, 1)[:, 0])
            else:
                self.index.add(_np(self.space.gallery_vectors(chunk)))

    def search(
        self, queries: Tensor, k: int, *, tau: float | Tensor | None = None, batch_size: int = 4096
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(distances, indices)``, each ``(Q, k)``, nearest first (IVF: index -1 and
        distance inf where the probed lists hold fewer than ``k`` items).

        ``tau``: traverse the queries toward the root first (:func:`~hysafe.traversal.traverse`).
        """
        self._check(queries, "queries")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if len(self) == 0:
            raise ValueError("the index is empty: add() a gallery first")
        k = min(k, len(self))
        if queries.shape[0] == 0:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
        if tau is not None:
            queries = traverse(queries, tau, self.space)
        dists, ids = [], []
        previous = faiss.cvar.distance_compute_blas_database_bs
        faiss.cvar.distance_compute_blas_database_bs = max(previous, BLAS_DATABASE_BLOCK)
        try:
            for i in range(0, queries.shape[0], batch_size):
                chunk = queries[i : i + batch_size]
                if self.kind == "ivf":
                    from faiss.contrib.ivf_tools import search_preassigned

                    ip, idx = search_preassigned(self.index, _np(self.space.query_vectors(chunk)), k, self._route(chunk, self.index.nprobe))
                else:
                    ip, idx = self.index.search(_np(self.space.query_vectors(chunk)), k)
                idx = torch.from_numpy(idx)
                dist = self.space.distance_from_inner(torch.from_numpy(ip))
                dists.append(torch.where(idx < 0, torch.full_like(dist, float("inf")), dist))  # IVF: fewer than k found
                ids.append(idx)
        finally:
            faiss.cvar.distance_compute_blas_database_bs = previous
        return torch.cat(dists), torch.cat(ids)

    def save(self, path: str | Path) -> Path:
        """Write ``PATH`` (faiss index) and ``PATH.json`` (space, dim, kind)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path))
        meta = {"space": self.space.to_dict(), "dim": self.dim, "kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe}
        Path(f"{path}.json").write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalIndex":
        path = Path(path)
        meta_path = Path(f"{path}.json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"index files not found: {path} and {meta_path}")
        try:
            meta = json.loads(meta_path.read_text())
            obj = cls(space_from_dict(meta["space"]), int(meta["dim"]), kind=meta["kind"], nlist=int(meta["nlist"]), nprobe=int(meta["nprobe"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta_path}: not a hysafe index description ({type(e).__name__}: {e})") from e
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise ValueError(f"{path}: not a readable faiss index (truncated or another format): {str(e).splitlines()[0]}") from e
        if (obj.kind == "ivf") != isinstance(faiss.downcast_index(index), faiss.IndexIVF):
            raise ValueError(f"{path}: the faiss file does not hold the {obj.kind!r} index its description {meta_path} names")
        expected = obj.index.d
        if index.d != expected or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path}: index vectors have dimension {index.d}, but {meta_path} describes a {obj.space.name} "
                             f"space of dim {obj.dim} (vectors of {expected}); the two files do not belong together")
        obj.index = index
        if obj.kind == "ivf":
            obj.index.nprobe = obj.nprobe
        return obj
