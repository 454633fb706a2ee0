"""The parts of a compressed (``ivfpq``) :class:`~hysafe.index.retrieval.RetrievalIndex` that faiss does
not provide as such: code layouts, a second-stage refine code and the exact re-rank.

A query is answered in three stages, each on fewer candidates and more precisely:

1. faiss's IVF-PQ scan of the probed lists, by the residual's product-quantization code
   (``PQ_DIMS`` dimensions per byte): ``rerank x k`` candidates;
2. the candidates' first-stage scores plus the score of a second product-quantization code of what
   the first one left over (``REFINE_DIMS`` dimensions per byte, kept in RAM in id order), from
   per-query lookup tables: the best ``EXACT_FACTOR x k``;
3. those read from the memory-mapped full vectors (:class:`~hysafe.index.vector_file.VectorFile`),
   their inner products computed in float32, and the best ``FLOAT64_POOL x k`` ranked by the exact
   distance of the space in float64 (the same top-k as float64 throughout: the float32 rounding
   bound is checked at the pool's edge).

Both codes together take 8 / ``PQ_DIMS`` + 8 / ``REFINE_DIMS`` = 3 bits per dimension (plus the
8-byte id faiss stores per vector): 298 bytes for a 768-d Lorentz embedding, 1/10 of the flat
index's 3,076 bytes of float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from hysafe.geometry import Space

from ._faiss import faiss

__all__ = [
    "PQ_CENTROIDS",
    "PQ_DIMS",
    "REFINE_DIMS",
    "EXACT_FACTOR",
    "FLOAT64_POOL",
    "PQ_TRAIN_POINTS",
    "pq_layout",
    "train_pq",
    "RefineCodes",
    "refine_candidates",
    "exact_rerank",
]

#: entries of every 8-bit codebook (the fewest training vectors a product quantizer takes)
PQ_CENTROIDS = 256
#: index-vector dimensions per byte of the first-stage (IVF-PQ) code: 2 bits per dimension
PQ_DIMS = 4
#: dimensions per byte of the second-stage (refine) code: 1 bit per dimension (faiss encodes
#: 4- and 8-dim sub-vectors with SIMD kernels; 5 dims take 11x longer)
REFINE_DIMS = 8
#: candidates per result read back at full precision for the exact distance (10M x 768 low-rank
#: gallery, balanced lists, nprobe 2, rerank 50: recall@10 0.971 / 0.983 at 10 / 20, and every row
#: read costs ~20 us from disk; docs/benchmarks.md section 5)
EXACT_FACTOR = 10
#: residuals a product quantizer trains on (128 per centroid), and its k-means iterations:
#: faiss's sub-quantizer k-means at 4-5 dims is memory-bound, ~90 s per 20k x 193 codes x 25 iterations
PQ_TRAIN_POINTS = 32768
PQ_TRAIN_ITERATIONS = 15


def train_pq(pq: faiss.ProductQuantizer, x: np.ndarray) -> None:
    """Train ``pq`` on at most ``PQ_TRAIN_POINTS`` rows of ``x`` (already padded to ``pq.d``)."""
    pq.cp.niter = PQ_TRAIN_ITERATIONS
    pq.train(np.ascontiguousarray(x[:PQ_TRAIN_POINTS]))


def pq_layout(dim: int, dims_per_code: int) -> tuple[int, int]:
    """``(codes, padded dim)``: one 8-bit sub-quantizer per ``dims_per_code`` dimensions, the
    vectors zero-padded to a multiple of it."""
    codes = math.ceil(dim / dims_per_code)
    return codes, codes * dims_per_code


def pad(x: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad rows ``(N, d <= dim)`` to ``dim`` columns."""
    return np.pad(x, ((0, 0), (0, dim - x.shape[1]))) if x.shape[1] < dim else x


class RefineCodes:
    """A product quantizer of residuals ``(N, dim)`` and the codes of every indexed vector, by id."""

    def __init__(self, dim: int, dims_per_code: int = REFINE_DIMS):
        self.dim = dim
        self.codes_per_vector, self.padded = pq_layout(dim, dims_per_code)
        self.pq = faiss.ProductQuantizer(self.padded, self.codes_per_vector, 8)
        # rows past len(self) are spare capacity
        self._buffer = np.zeros((0, self.codes_per_vector), np.uint8)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory the codes hold, spare capacity included."""
        return self._buffer.nbytes

    @property
    def codes(self) -> np.ndarray:
        """``(len(self), codes_per_vector)`` uint8, row ``i`` = id ``i`` (a view: valid until the next
        append)."""
        return self._buffer[: self._size]

    def train(self, residuals: np.ndarray) -> None:
        train_pq(self.pq, pad(residuals, self.padded))

    def encode(self, residuals: np.ndarray) -> np.ndarray:
        return self.pq.compute_codes(np.ascontiguousarray(pad(residuals, self.padded)))

    def append(self, codes: list[np.ndarray]) -> None:
        """Add the codes of the next ids. Capacity grows geometrically, so many appends (chunks of an
        add, shards of a merge) copy each code O(1) times on average."""
        need = self._size + sum(len(c) for c in codes)
        if need > len(self._buffer):
            grown = np.empty((max(need, len(self._buffer) * 3 // 2), self.codes_per_vector), np.uint8)
            grown[: self._size] = self.codes
            self._buffer = grown
        for c in codes:
            self._buffer[self._size : self._size + len(c)] = c
            self._size += len(c)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Decoded residuals of ids ``(n,)`` (all valid): ``(n, dim)``."""
        return self.pq.decode(np.ascontiguousarray(self.codes[ids]))[:, : self.dim]

    def state(self) -> dict[str, np.ndarray]:
        return {"centroids": faiss.vector_to_array(self.pq.centroids), "codes": self.codes}

    def load_state(self, state: dict[str, np.ndarray], source: str) -> None:
        centroids, codes = state["centroids"], state["codes"]
        if (
            centroids.size != self.pq.centroids.size()
            or codes.ndim != 2
            or codes.shape[1] != self.codes_per_vector
        ):
            raise ValueError(
                f"{source}: refine codes of another layout than the index's "
                f"({self.codes_per_vector} codes of {self.padded // self.codes_per_vector} dims)"
            )
        faiss.copy_array_to_vector(centroids.astype(np.float32), self.pq.centroids)
        self._buffer, self._size = codes, len(codes)


#: queries whose candidates' lookup-table scores are summed at once: keeps the gathered indices
#: (``REFINE_BLOCK x candidates x codes`` int64, ~3 MB at 1,000 x 97) in cache
REFINE_BLOCK = 4


def refine_candidates(
    refine: RefineCodes, query_vectors: np.ndarray, candidates: np.ndarray, first_ip: np.ndarray, keep: int
) -> np.ndarray:
    """Stage 2: the ``keep`` best candidate ids ``(Q, C)`` of each query (``-1`` = none) by the
    first stage's inner product ``first_ip`` ``(Q, C)`` (centroid + first code) plus the refine
    code's, from per-query lookup tables. ``(Q, min(keep, C))``."""
    n_q, n_c = candidates.shape
    if n_c <= keep:  # every candidate goes on to the exact stage
        return candidates
    m = refine.codes_per_vector
    q = torch.from_numpy(pad(query_vectors, refine.padded).reshape(n_q, m, -1))
    centroids = torch.from_numpy(faiss.vector_to_array(refine.pq.centroids).reshape(m, PQ_CENTROIDS, -1))
    tables = torch.einsum("qmd,mkd->qmk", q, centroids).reshape(n_q, m * PQ_CENTROIDS)  # (Q, codes x 256)
    offsets = torch.arange(m) * PQ_CENTROIDS  # code j of sub-quantizer i is table column i x 256 + j
    estimate = torch.from_numpy(np.array(first_ip, dtype=np.float32, copy=True))
    for i in range(0, n_q, REFINE_BLOCK):
        # (b, C, codes) uint8
        codes = torch.from_numpy(refine.codes[np.maximum(candidates[i : i + REFINE_BLOCK], 0)])
        columns = (codes.long() + offsets).reshape(len(codes), -1)
        estimate[i : i + REFINE_BLOCK] += (
            tables[i : i + REFINE_BLOCK].gather(1, columns).view(len(codes), n_c, m).sum(2)
        )
    estimate = torch.where(torch.from_numpy(candidates) < 0, torch.tensor(-float("inf")), estimate)
    best = torch.topk(estimate, min(keep, n_c), dim=1).indices.numpy()
    return np.take_along_axis(candidates, best, axis=1)


#: candidates per result kept by the float32 pre-selection of the exact stage for the float64 ranking
FLOAT64_POOL = 2


def _float32_margin(q: Tensor, g_norm: Tensor) -> Tensor:
    """Bound on the rounding error of float32 inner products ``q . g`` over ``D`` terms, per query
    ``(Q,)``, from the gallery vectors' norms ``(Q, C)``: twice ``D x 2^-24 x |q| x max|g|`` (the dot
    product's worst case, each product and partial sum rounding once, doubled for the rounding of the
    vectors' own float32 coordinates)."""
    return 2 * q.shape[-1] * 2.0**-24 * q.norm(dim=-1) * g_norm.amax(dim=-1)


def exact_rerank(
    space: Space, queries: Tensor, candidates: np.ndarray, rows: np.ndarray, k: int
) -> tuple[Tensor, Tensor]:
    """Stage 3: the ``k`` nearest of each query's candidate ids ``(Q, C)`` (``-1`` = none) by exact
    distance in ``space``, from their stored full vectors ``rows`` ``(Q, C, D)``
    (:meth:`VectorFile.take <hysafe.index.vector_file.VectorFile.take>`). ``(distances, ids)``, ``(Q, k)``.

    Inner products with every candidate in float32, then the float64 distance of the best
    ``FLOAT64_POOL x k`` (in candidate order, so ties keep it): the same top-k as float64 throughout
    wherever the float32 rounding bound cannot reorder the pool's edge (a query where it could is
    ranked wholly in float64)."""
    rows = torch.from_numpy(rows)  # (Q, C, D) float32
    ids = torch.from_numpy(candidates).long()
    n_q, n_c = ids.shape
    pool = min(n_c, FLOAT64_POOL * k)
    if pool < n_c:  # with a pool of every candidate the float32 pre-selection would choose nothing
        ip, margin = _float32_inner(space, queries, rows)
        ip = ip.masked_fill(ids < 0, -float("inf"))
        top, best = ip.topk(pool + 1, dim=1)
        unsafe = top[:, pool] >= top[:, min(k, pool) - 1] - 2 * margin
        keep = best[:, :pool].sort(dim=1).values
        keep[unsafe] = torch.arange(pool)  # placeholder rows, replaced below
    else:
        unsafe = torch.zeros(n_q, dtype=torch.bool)
        keep = None
    ids_kept = ids if keep is None else ids.gather(1, keep)
    dist, order = _float64_topk(space, queries, rows, keep, ids_kept, k)
    out_d, out_i = dist, ids_kept.gather(1, order)
    if unsafe.any():  # ties within the rounding bound at the pool's edge: rank every candidate in float64
        d_all, o_all = _float64_topk(space, queries[unsafe], rows[unsafe], None, ids[unsafe], k)
        out_d[unsafe], out_i[unsafe] = d_all, ids[unsafe].gather(1, o_all)
    return out_d.float(), out_i


#: candidate rows whose inner products are computed at once, in whole queries (the block's rows,
#: 1,200 x 768 float32 = 3.7 MB, stay in cache between the product and the norm)
EXACT_BLOCK_ROWS = 1200


def _float32_inner(space: Space, queries: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Float32 index inner products of each query with its candidate rows ``(Q, C, D)``, and the
    rounding bound of each query's products (:func:`_float32_margin`). ``(Q, C)``, ``(Q,)``."""
    q = space.query_vectors(queries.float())
    ip, margin = torch.empty(rows.shape[:2]), torch.empty(len(rows))
    step = max(1, EXACT_BLOCK_ROWS // max(1, rows.shape[1]))
    for i in range(0, len(rows), step):
        ip[i : i + step], g_norm = space.index_inner_rows(q[i : i + step], rows[i : i + step])
        margin[i : i + step] = _float32_margin(q[i : i + step], g_norm)
    return ip, margin


def _float64_topk(
    space: Space, queries: Tensor, rows: Tensor, positions: Tensor | None, ids: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Float64 distances of the ``k`` nearest of each query's rows ``(Q, C, D)`` at ``positions``
    ``(Q, P)`` (``None``: every row, in order; ids ``(Q, P)`` below 0 are none), and their places in
    ``positions``; a stable sort keeps candidate order among ties. Computed in blocks of whole
    queries, so the float64 copy of the rows stays small."""
    q = space.query_vectors(queries.double())
    dist = torch.empty(ids.shape, dtype=torch.float64)
    step = max(1, EXACT_BLOCK_ROWS // max(1, ids.shape[1]))
    for i in range(0, len(q), step):
        picked = rows[i : i + step]
        if positions is not None:
            block = positions[i : i + step]
            picked = picked[torch.arange(len(block)).unsqueeze(1), block]
        inner = space.index_inner_rows(q[i : i + step], picked.double())[0]
        dist[i : i + step] = space.distance_from_inner(inner)
    dist = torch.where(ids < 0, torch.full_like(dist, float("inf")), dist)
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    return dist.gather(1, order), order
