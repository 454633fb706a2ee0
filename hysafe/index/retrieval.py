"""Exact and approximate retrieval on faiss, for cosine and Lorentz spaces alike.

Both spaces reduce nearest-neighbour search to maximum inner product over the vectors of
:meth:`Space.query_vectors` / :meth:`Space.gallery_vectors` (for the Lorentz model ``[x, x_t]``
and ``[y, -y_t]``, whose plain inner product is the Lorentzian one), so one faiss inner-product
index serves every model. Results come back as true distances in the model's space.

Over 300 lines: one class whose three kinds (flat, IVF, compressed IVF-PQ) share routing, search,
merging and persistence; the compressed kind's own stages live in :mod:`hysafe.index.compressed`.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hysafe.geometry import Space, space_from_dict
from hysafe.geometry._checks import check_points

from ..models.traversal import traverse
from ._faiss import add_preassigned, faiss, search_preassigned
from .compressed import (
    EXACT_FACTOR,
    PQ_CENTROIDS,
    PQ_DIMS,
    PQ_TRAIN_POINTS,
    RefineCodes,
    exact_rerank,
    pad,
    pq_layout,
    refine_candidates,
    train_pq,
)
from .ivf_route import RoutingSketch
from .ivf_scan import PARALLEL_OVER_QUERIES, list_sizes, scan_probed
from .ivf_train import geodesic_centroids
from .vector_file import VectorFile

logger = logging.getLogger(__name__)

__all__ = ["RetrievalIndex", "KINDS"]

KINDS = ("flat", "ivf", "ivfpq")


#: faiss's exhaustive search multiplies query blocks by database blocks of this many vectors; its
#: default (1024) makes many small GEMMs, and a larger block is ~1.8x faster on a 2-core CPU.
BLAS_DATABASE_BLOCK = 16384


#: queries re-ranked together by a compressed index: bounds the gathered candidates
#: (``RERANK_BATCH x rerank x k`` full vectors) to a few hundred MB at 768-d, and makes batches small
#: enough that reading one batch's vectors overlaps the next batch's scan
RERANK_BATCH = 256
#: batches whose full vectors may be read ahead of their re-rank (bounds the rows held in RAM to
#: ``(READ_AHEAD + 1) x RERANK_BATCH x EXACT_FACTOR x k`` vectors)
READ_AHEAD = 3


def _is_integer(value) -> bool:
    """An integer, Python's or numpy's, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(value, name: str) -> int:
    """``value`` as an int if it is a positive integer, else a ValueError naming ``name``."""
    if not _is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _count(value, name: str) -> int:
    """``value`` as an int if it is a non-negative integer, else a ValueError naming ``name``."""
    if not _is_integer(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def _check_mergeable(a: "RetrievalIndex", b: "RetrievalIndex") -> None:
    same = (a.kind, a.dim, a.space.to_dict()) == (b.kind, b.dim, b.space.to_dict())
    if not same:
        raise ValueError(
            f"cannot merge a {b.kind} index of {b.space.to_dict()} dim {b.dim} into a {a.kind} index of "
            f"{a.space.to_dict()} dim {a.dim}"
        )
    if a.kind == "flat":
        return
    if not (a.index.is_trained and b.index.is_trained):
        raise ValueError("cannot merge untrained IVF indexes: build both from one trained index")
    centroids = [faiss.downcast_index(i.index.quantizer).reconstruct_n(0, i.nlist) for i in (a, b)]
    codebooks = (
        [
            np.concatenate(
                [faiss.vector_to_array(i.index.pq.centroids), faiss.vector_to_array(i.refine.pq.centroids)]
            )
            for i in (a, b)
        ]
        if a.kind == "ivfpq"
        else [0, 0]
    )
    if a.nlist != b.nlist or not np.array_equal(*centroids) or not np.array_equal(*codebooks):
        raise ValueError(
            "cannot merge IVF indexes trained separately (different centroids or codebooks): "
            "build every shard from the same trained index"
        )


class RetrievalIndex:
    """A faiss inner-product index over embeddings of one :class:`Space`.

    ``kind="flat"`` is exact; ``kind="ivf"`` clusters the gallery into ``nlist`` lists and probes
    ``nprobe`` of them per query (train it with :meth:`train` or let :meth:`add` do it);
    ``kind="ivfpq"`` is the IVF with each vector held in RAM only as product-quantization codes
    (3 bits per dimension) and the full vectors in a memory-mapped
    :class:`~hysafe.index.vector_file.VectorFile` (``vectors``: its path; default a temporary file that
    :meth:`save` moves next to the index): a search takes ``rerank x k`` candidates by the codes,
    refines them and returns the top ``k`` by exact distance (:mod:`hysafe.index.compressed`), so
    galleries larger than RAM are searched with true distances.

    IVF lists are assigned in the space's own geometry: centroids are stored as gallery vectors and
    both gallery items and queries are routed by the inner product of their *query* vectors with
    them (for the Lorentz model, the Lorentzian inner product, i.e. the geodesically nearest
    centroid). faiss's own routing would compare ``[y, -y_t]`` with the centroids, a different
    criterion from the queries', and loses recall.
    """

    def __init__(
        self,
        space: Space,
        dim: int,
        *,
        kind: str = "flat",
        nlist: int = 1024,
        nprobe: int = 32,
        rerank: int = 50,
        route_dims: int = 0,
        vectors: str | Path | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(space, Space):
            raise ValueError(
                "space must be a hysafe.geometry Space (LorentzSpace, EuclideanSpace), "
                f"got {type(space).__name__}"
            )
        self.space, self.dim, self.kind = space, _positive_int(dim, "dim"), kind
        self.nlist, self.nprobe, self.rerank = _positive_int(nlist, "nlist"), nprobe, rerank
        self.route_dims, self._sketch = route_dims, None
        vec_dim = space.gallery_vectors(torch.zeros(1, dim)).shape[-1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(vec_dim)
            return
        codes, code_dim = pq_layout(vec_dim, PQ_DIMS) if kind == "ivfpq" else (0, vec_dim)
        self._quantizer = faiss.IndexFlatIP(code_dim)
        if kind == "ivf":
            self.index = faiss.IndexIVFFlat(self._quantizer, code_dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexIVFPQ(
                self._quantizer, code_dim, nlist, codes, 8, faiss.METRIC_INNER_PRODUCT
            )
            self.refine = RefineCodes(code_dim)
            self._scratch = (
                None if vectors is not None else tempfile.TemporaryDirectory(prefix="hysafe-vectors-")
            )
            self.vectors = VectorFile(
                vectors if vectors is not None else Path(self._scratch.name) / "index.vectors", dim
            )
        self._configure()

    @property
    def nprobe(self) -> int:
        """Lists an IVF search probes per query (settable; saved with the index)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _positive_int(value, "nprobe")
        if self.kind != "flat" and getattr(self, "index", None) is not None:
            self.index.nprobe = self._probed()

    def _probed(self) -> int:
        """Lists a search actually probes: ``nprobe``, at most every list."""
        return min(self._nprobe, self.nlist)

    @property
    def route_dims(self) -> int:
        """IVF routing: 0 (the default) compares each query with every centroid exactly; ``m > 0``
        estimates those inner products in the centroids' ``m`` leading principal directions and
        re-scores the best few exactly (:mod:`hysafe.index.ivf_route`: faster, may miss a list; ``m``
        at the vectors' width is exact). Settable; saved with the index."""
        return self._route_dims

    @route_dims.setter
    def route_dims(self, value: int) -> None:
        self._route_dims = _count(value, "route_dims")

    @property
    def rerank(self) -> int:
        """Candidates per result a compressed search takes from its codes (settable; saved)."""
        return self._rerank_per_result

    @rerank.setter
    def rerank(self, value: int) -> None:
        self._rerank_per_result = _positive_int(value, "rerank")

    def _list_sizes(self) -> np.ndarray:
        """Vectors per IVF list, read from faiss once per index size (adds and merges change it)."""
        cached = getattr(self, "_sizes", None)
        if cached is None or cached[0] != len(self):
            self._sizes = (len(self), list_sizes(self.index.invlists, self.index.nlist))
        return self._sizes[1]

    def _configure(self) -> None:
        """Search settings faiss does not store in the index file."""
        self.index.nprobe = self._probed()
        self.index.parallel_mode = PARALLEL_OVER_QUERIES

    def __len__(self) -> int:
        return self.index.ntotal

    def _check(self, x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (N, {self.dim}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be (N, {self.dim}), got {tuple(x.shape)}")

    def _vectors(self, x: Tensor, side: str) -> np.ndarray:
        """Index vectors of embeddings (``side`` "query" or "gallery"), zero-padded to the index's width."""
        return pad(
            _np(self.space.query_vectors(x) if side == "query" else self.space.gallery_vectors(x)),
            self.index.d,
        )

    def train(self, sample: Tensor, *, niter: int = 20, seed: int = 1) -> None:
        """Train the IVF centroids (k-means on a sample of gallery embeddings) and, for ``ivfpq``,
        the product quantizer on the sample's residuals to its geodesically nearest centroid."""
        self._check(sample, "sample")
        if self.kind == "flat" or self.index.is_trained:
            return
        check_points(sample, "sample")  # NaN/Inf would reach faiss's k-means as a C++ assertion
        if sample.shape[0] < self.nlist:
            raise ValueError(
                f"IVF with nlist={self.nlist} needs at least that many training "
                f"vectors, got {sample.shape[0]}"
            )
        if self.kind == "ivfpq" and sample.shape[0] < PQ_CENTROIDS:
            raise ValueError(
                f"ivfpq needs at least {PQ_CENTROIDS} training vectors (codebooks "
                f"of {PQ_CENTROIDS} entries), "
                f"got {sample.shape[0]}; use kind='flat' for a gallery this small"
            )
        centroids = geodesic_centroids(self.space, _np(sample), self.nlist, niter=niter, seed=seed)
        self._quantizer.add(self._vectors(torch.from_numpy(centroids), "gallery"))
        if self.kind == "ivfpq":
            part = sample[
                torch.randperm(sample.shape[0], generator=torch.Generator().manual_seed(seed))[
                    :PQ_TRAIN_POINTS
                ]
            ]
            residuals = self._residuals(part, self._route(part, 1)[1][:, 0])
            train_pq(self.index.pq, residuals)
            self.refine.train(residuals - self.index.pq.decode(self.index.pq.compute_codes(residuals)))
        self.index.is_trained = True

    def _residuals(self, x: Tensor, lists: np.ndarray) -> np.ndarray:
        """Gallery vectors minus their list's centroid (what the first-stage code encodes)."""
        return np.ascontiguousarray(
            self._vectors(x, "gallery") - self._quantizer.reconstruct_n(0, self.nlist)[lists]
        )

    def _add_compressed(self, chunk: Tensor, lists: np.ndarray) -> np.ndarray:
        """Encode a chunk once: first-stage codes into the IVF lists (faiss's standalone code
        layout, list number + code), the full vectors to disk; returns the refine codes."""
        residuals = self._residuals(chunk, lists)
        codes = self.index.pq.compute_codes(residuals)
        list_bytes = lists.astype("<i8").view(np.uint8).reshape(-1, 8)[:, : self.index.coarse_code_size()]
        ids = np.arange(len(self), len(self) + len(lists), dtype=np.int64)
        self.vectors.append(_np(chunk))
        self.index.add_sa_codes(np.ascontiguousarray(np.hstack([list_bytes, codes])), ids)
        return self.refine.encode(residuals - self.index.pq.decode(codes))

    def _route(
        self, x: Tensor, nprobe: int, vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner products with and ids of the ``nprobe`` nearest centroids, in the space's geometry. ``(N,
        nprobe)`` each. ``vectors``: ``x``'s query vectors, when the caller has them already."""
        quantizer = faiss.downcast_index(self.index.quantizer)
        return quantizer.search(self._vectors(x, "query") if vectors is None else vectors, nprobe)

    def _route_queries(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A search's routing of query ``vectors``: exact, or in a sketch of the centroids
        (``route_dims``). Adding and training always route exactly: a list holds the items nearest
        its centroid."""
        if self.route_dims == 0:
            return self._route(None, self._probed(), vectors)
        sketch = self._sketch
        if sketch is None or sketch.nlist != self._quantizer.ntotal or sketch.requested != self.route_dims:
            centroids = self._quantizer.reconstruct_n(0, self._quantizer.ntotal)
            sketch = self._sketch = RoutingSketch(centroids, self.route_dims)
        return sketch.route(vectors, self._probed())

    def add(self, gallery: Tensor, *, batch_size: int = 65536) -> None:
        """Add gallery embeddings ``(N, D)`` in batches (ids continue from the current size)."""
        self._check(gallery, "gallery")
        check_points(gallery, "gallery")
        if not self.index.is_trained:
            self.train(gallery)
        refine_codes = []
        for i in range(0, gallery.shape[0], batch_size):
            chunk = gallery[i : i + batch_size]
            if self.kind == "flat":
                self.index.add(self._vectors(chunk, "gallery"))
                continue
            lists = self._route(chunk, 1)[1][:, 0]
            if self.kind == "ivfpq":
                refine_codes.append(self._add_compressed(chunk, lists))
            else:
                add_preassigned(self.index, self._vectors(chunk, "gallery"), lists)
        if refine_codes:
            self.refine.append(refine_codes)

    def search(
        self, queries: Tensor, k: int, *, tau: float | Tensor | None = None, batch_size: int = 4096
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(distances, indices)``, each ``(Q, min(k, len(self)))``, nearest first (IVF: index
        -1 and distance inf where the probed lists hold fewer than ``k`` items). ``nprobe`` above
        ``nlist`` probes every list.

        ``tau``: traverse the queries toward the root first (:func:`~hysafe.models.traversal.traverse`).
        """
        self._check(queries, "queries")
        check_points(queries, "queries")
        k = _positive_int(k, "k")
        if len(self) == 0:
            raise ValueError("the index is empty: add() a gallery first")
        k = min(k, len(self))
        if queries.shape[0] == 0:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
        if tau is not None:
            queries = traverse(queries, tau, self.space)
        if self.kind == "ivfpq":
            batch_size = min(batch_size, RERANK_BATCH)
        dists, ids = [], []
        previous = faiss.cvar.distance_compute_blas_database_bs
        if self.kind == "flat":  # IVF routing over a few thousand centroids is 1.8x slower with it
            faiss.cvar.distance_compute_blas_database_bs = max(previous, BLAS_DATABASE_BLOCK)
        try:
            batches = [queries[i : i + batch_size] for i in range(0, queries.shape[0], batch_size)]
            results = (
                self._search_compressed(batches, k)
                if self.kind == "ivfpq"
                else (self._search_chunk(b, k) for b in batches)
            )
            for dist, idx in results:
                # IVF: fewer than k found
                dists.append(torch.where(idx < 0, torch.full_like(dist, float("inf")), dist))
                ids.append(idx)
        finally:
            faiss.cvar.distance_compute_blas_database_bs = previous
        return torch.cat(dists), torch.cat(ids)

    def _search_chunk(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        vectors = self._vectors(queries, "query")
        if self.kind == "flat":
            ip, idx = self.index.search(vectors, k)
        else:
            coarse_ip, lists = self._route_queries(vectors)
            ip, idx = scan_probed(self.index, vectors, lists, coarse_ip, k, self._list_sizes())
        return self.space.distance_from_inner(torch.from_numpy(ip)), torch.from_numpy(idx)

    def _candidates(self, queries: Tensor, k: int) -> np.ndarray:
        """Stages 1 and 2 of the compressed search (:mod:`hysafe.index.compressed`): the ids whose full
        vectors the exact re-rank reads, ``(Q, EXACT_FACTOR x k)`` at most."""
        vectors = self._vectors(queries, "query")
        coarse_ip, lists = self._route_queries(vectors)
        ip, idx = search_preassigned(self.index, vectors, min(len(self), k * self.rerank), lists, coarse_ip)
        return refine_candidates(self.refine, vectors, idx, ip, EXACT_FACTOR * k)

    def _search_compressed(self, batches: list[Tensor], k: int) -> list[tuple[Tensor, Tensor]]:
        """Query batches through the compressed search's three stages. The full vectors of a batch's
        candidates are read from the vector file in the background (threads waiting on the disk)
        while later batches are scanned and refined, up to ``READ_AHEAD`` batches ahead."""
        out, pending = [], deque()
        with ThreadPoolExecutor(1) as reader:
            for queries in batches:
                best = self._candidates(queries, k)
                pending.append((queries, best, reader.submit(self.vectors.take, best)))
                if len(pending) > READ_AHEAD:
                    out.append(self._rerank(*pending.popleft(), k))
            while pending:
                out.append(self._rerank(*pending.popleft(), k))
        return out

    def _rerank(self, queries: Tensor, candidates: np.ndarray, rows: Future, k: int) -> tuple[Tensor, Tensor]:
        return exact_rerank(self.space, queries, candidates, rows.result(), k)

    def merge_from(self, other: "RetrievalIndex") -> None:
        """Append ``other``'s items after this index's (ids of ``other`` shift by ``len(self)``).

        Both must be built from the same trained index (same space, kind, centroids and codebooks):
        the way per-shard indexes built in parallel (:mod:`hysafe.index.shards`) become one."""
        _check_mergeable(self, other)
        if self.kind == "flat":
            self.index.merge_from(other.index)
            return
        self.index.merge_from(other.index, len(self))
        if self.kind == "ivfpq":
            self.vectors.extend_from(other.vectors)
            self.refine.append([other.refine.codes])

    def save(self, path: str | Path, *, vectors: str | Path | None = None) -> Path:
        """Write ``PATH`` (faiss index), ``PATH.json`` (space, dim, kind, settings) and, for
        ``ivfpq``, the full vectors at ``vectors`` (default ``PATH.vectors``; a temporary file is
        moved there, another file copied, the file already there kept). Each file is replaced
        atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "ivfpq":
            self.vectors.relocate(vectors or f"{path}.vectors", move=self._scratch is not None)
            self._scratch = None
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        if self.kind == "ivfpq":
            np.savez(f"{tmp}.refine.npz", **self.refine.state())
            os.replace(f"{tmp}.refine.npz", f"{path}.refine.npz")
        meta = {
            "space": self.space.to_dict(),
            "dim": self.dim,
            "kind": self.kind,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "rerank": self.rerank,
            "route_dims": self.route_dims,
            "size": len(self),
        }
        if self.kind == "ivfpq":
            meta["vectors_fingerprint"] = self.vectors.fingerprint()
        Path(f"{tmp}.json").write_text(json.dumps(meta))
        os.replace(f"{tmp}.json", f"{path}.json")
        return path

    @classmethod
    def load(cls, path: str | Path, *, vectors: str | Path | None = None) -> "RetrievalIndex":
        """Read an index written by :meth:`save`. ``vectors``: for ``ivfpq``, another vector file
        to use (and append to) than ``PATH.vectors``; it must hold the index's rows (an empty
        trained index takes a new file: how shards are built, :mod:`hysafe.index.shards`)."""
        path = Path(path)
        meta_path = Path(f"{path}.json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"index files not found: {path} and {meta_path}")
        try:
            meta = json.loads(meta_path.read_text())
            obj = cls(
                space_from_dict(meta["space"]),
                int(meta["dim"]),
                kind=meta["kind"],
                nlist=int(meta["nlist"]),
                nprobe=int(meta["nprobe"]),
                rerank=int(meta.get("rerank", 50)),
                route_dims=int(meta.get("route_dims", 0)),
                vectors=vectors or f"{path}.vectors",
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta_path}: not a hysafe index description ({type(e).__name__}: {e})") from e
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise ValueError(
                f"{path}: not a readable faiss index (truncated or another format): {str(e).splitlines()[0]}"
            ) from e
        if type(index) is not type(obj.index):
            raise ValueError(
                f"{path}: the faiss file does not hold the {obj.kind!r} index its "
                f"description {meta_path} names"
            )
        expected = obj.index.d
        if index.d != expected or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f"{path}: index vectors have dimension {index.d}, but {meta_path} "
                f"describes a {obj.space.name} "
                f"space of dim {obj.dim} (vectors of {expected}); the two files do not belong together"
            )
        obj.index = index  # read_index returns the concrete class, owning its quantizer
        if obj.kind != "flat":
            obj._configure()
            obj._quantizer = faiss.downcast_index(obj.index.quantizer)
        if obj.kind == "ivfpq":
            obj.vectors = VectorFile(vectors or f"{path}.vectors", obj.dim, rows=len(obj))
            saved = meta.get("vectors_fingerprint")
            if saved is not None and saved != obj.vectors.fingerprint():
                raise ValueError(
                    f"{obj.vectors.path}: not this index's vector file (its rows differ from the ones "
                    f"{path} was saved with)"
                )
            obj.refine.load_state(_read_npz(Path(f"{path}.refine.npz")), f"{path}.refine.npz")
            if len(obj.refine) != len(obj):
                raise ValueError(
                    f"{path}.refine.npz holds codes of {len(obj.refine)} vectors, the index {len(obj)}"
                )
        return obj


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the compressed index's refine codes are missing")
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not readable refine codes ({e})") from e
