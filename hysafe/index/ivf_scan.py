"""List-major scanning of an IVF index's flat lists: each probed list is read once per query batch.

faiss scans an ``IndexIVFFlat`` query by query, so a list probed by m queries of a batch is read from
memory m times, one vector at a time. On clustered galleries k-means leaves some lists far larger
than the mean (1M x 512, 4,096 lists: the largest held 38,058 vectors, 156x the mean), queries fall
into the large lists most often, and that scan is memory-bound: 2.8 s for 1,000 queries at nprobe 4.
:func:`scan_lists` groups the batch's (query, list) pairs by list and scores each list against all
of its queries with one matrix product (torch's GEMM, the list read once), then keeps the top-k of
every query: 0.40 s on the same index (docs/benchmarks.md). The results equal faiss's
``search_preassigned`` (tested); ties between equal inner products may come back in another order.

With balanced lists (:mod:`hysafe.index.ivf_train`) most lists of a batch are probed by one or two
of its queries, and there faiss's per-query scan is faster: each list's product costs a fixed
~55 us of Python and torch dispatch. :func:`scan_probed` therefore picks the scan per batch by a
cost model in units of the vector floats faiss scans per unit time (:func:`list_major_faster`):
list-major where its lists are shared by enough queries for the reads it saves to pay for its
per-list cost, faiss's scan (parallel over queries) elsewhere (docs/benchmarks.md section 8).
"""

from __future__ import annotations

import numpy as np
import torch

from ._faiss import faiss, search_preassigned

__all__ = [
    "scan_lists",
    "scan_probed",
    "list_major_faster",
    "list_sizes",
    "SCORE_BLOCK",
    "PARALLEL_OVER_QUERIES",
]

#: inner products computed at once per list (queries x list vectors): bounds the temporary to 64 MB
SCORE_BLOCK = 1 << 24
#: the list-major scan's cost, in vector floats faiss's per-query scan reads in the same time: each
#: distinct list is read once (its floats) plus a fixed cost, and each (query, list) pair adds a fixed
#: cost and a share of the list's floats (the product and top-k). Fitted on four galleries (100k x 32
#: to 1M x 512, 1,000 queries, nprobe 1-64, 2 threads): the predicted time ratio to faiss's scan is
#: within 0.8-1.4x of the measured one on 13 of 16 cases (0.83 vs 0.83 at 1M x 512, nprobe 16)
LIST_MAJOR_FIXED_FLOATS = 550_000
LIST_MAJOR_PAIR_FLOATS = 15_000
LIST_MAJOR_READ_SHARE = 0.1
#: faiss's ``parallel_mode`` under which ``search_preassigned`` itself runs queries in parallel
#: (mode 0, faiss's default, parallelises only inside ``search``: preassigned searches ran on one thread)
PARALLEL_OVER_QUERIES = 3


def _list_view(invlists, lst: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One inverted list's vectors ``(size, d)`` and ids ``(size,)``, as zero-copy views."""
    size = invlists.list_size(lst)
    codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * d * 4).view(np.float32).reshape(size, d)
    ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).view(np.int64)
    return torch.from_numpy(codes), torch.from_numpy(ids)


def _score_list(queries: torch.Tensor, vectors: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` inner products of ``queries`` with one list's ``vectors`` (blocks of queries, bounded
    temporaries)."""
    step = max(1, SCORE_BLOCK // max(1, vectors.shape[0]))
    tops, args = [], []
    for i in range(0, queries.shape[0], step):
        top, arg = (queries[i : i + step] @ vectors.T).topk(k, dim=1)
        tops.append(top)
        args.append(arg)
    return torch.cat(tops), torch.cat(args)


def scan_lists(index, queries: np.ndarray, lists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products and ids of ``queries`` ``(Q, d)`` over the lists ``(Q, nprobe)`` each probes
    (``-1``: none) of the ``IndexIVFFlat`` ``index``, best first; ``-inf`` and id ``-1`` where the
    probed lists hold fewer than ``k`` vectors (faiss: the lowest float and -1)."""
    invlists = index.invlists
    if not isinstance(faiss.downcast_InvertedLists(invlists), faiss.ArrayInvertedLists):
        raise TypeError("scan_lists reads in-memory (ArrayInvertedLists) IVF lists")
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    n_queries, nprobe = lists.shape
    # one (k)-slot of candidates per (query, probe), filled list by list
    best_ip = torch.full((n_queries * nprobe, k), -float("inf"))
    best_id = torch.full((n_queries * nprobe, k), -1, dtype=torch.long)
    flat = torch.from_numpy(np.ascontiguousarray(lists, dtype=np.int64).reshape(-1))
    order = torch.argsort(flat, stable=True)
    lists_sorted, counts = torch.unique_consecutive(flat[order], return_counts=True)
    for lst, slots in zip(lists_sorted.tolist(), torch.split(order, counts.tolist()), strict=True):
        if lst < 0 or invlists.list_size(lst) == 0:
            continue
        vectors, ids = _list_view(invlists, lst, index.d)
        kk = min(k, vectors.shape[0])
        top, arg = _score_list(q[slots // nprobe], vectors, kk)
        best_ip[slots, :kk] = top
        best_id[slots, :kk] = ids[arg]
    top, arg = best_ip.view(n_queries, nprobe * k).topk(k, dim=1)
    return top.numpy(), best_id.view(n_queries, nprobe * k).gather(1, arg).numpy()


def list_sizes(invlists, nlist: int) -> np.ndarray:
    """Vectors held by each of the ``nlist`` inverted lists, ``(nlist,)`` int64."""
    return np.fromiter((invlists.list_size(i) for i in range(nlist)), np.int64, nlist)


def list_major_faster(lists: np.ndarray, sizes: np.ndarray, d: int) -> bool:
    """Whether list-major scanning of the probed ``lists`` ``(Q, nprobe)`` (``-1``: none) is the faster
    scan, by the module's cost model; ``sizes``: vectors per list, ``d``: floats per vector."""
    probed = lists[lists >= 0]
    if probed.size == 0:
        return False
    pair_floats = float(sizes[probed].mean()) * d
    distinct = np.unique(probed).size
    list_major = distinct * (LIST_MAJOR_FIXED_FLOATS + pair_floats) + probed.size * (
        LIST_MAJOR_PAIR_FLOATS + LIST_MAJOR_READ_SHARE * pair_floats
    )
    return list_major < probed.size * pair_floats


def scan_probed(
    index, queries: np.ndarray, lists: np.ndarray, coarse_ip: np.ndarray, k: int, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over the probed lists, by whichever scan is faster for this batch
    (:func:`list_major_faster`): :func:`scan_lists`, or faiss's ``search_preassigned``."""
    if list_major_faster(lists, sizes, index.d):
        return scan_lists(index, queries, lists, k)
    return search_preassigned(index, queries, k, lists, coarse_ip)
