"""A Lorentz gallery larger than RAM: the compressed index (``kind="ivfpq"``) against exact search.

    python bench/compressed_index.py --n 10000000 --dim 768 --work /data/cidx --out
    bench/results/compressed_cpu.json

The gallery is generated chunk by chunk straight into the index (its full vectors go to the
index's memory-mapped vector file, 4 x (dim) bytes per item on disk), so the run needs about
n x dim x 4 bytes of free disk and never the whole gallery in RAM. Two data models:
``lowrank`` (default): 4096 clusters whose members vary in a 32-dimensional subspace of their
own plus faint isotropic noise, like real embeddings whose neighbourhoods have a low intrinsic
dimension; ``isotropic``: the clusters of bench/retrieval.py (isotropic Gaussian members), where
the 10 nearest of ~2,400 members in 768-d differ from the rest by ~1% of the distance and no code
shorter than the vectors separates them.

Exact search is what a flat index would do if it fit: the stored vectors streamed from disk in
blocks through faiss's exhaustive inner-product search, top-10 per query confirmed in float64.
Both are timed on the same 1,000 queries in one run; the compressed index is timed cold (first
search, the vector file evicted from the page cache first) and warm (median of repeats). Index RAM counts
what the compressed index keeps in memory (codes, ids, centroids, codebooks, refine codes), against the flat
index's float32 index vectors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

CURV = 1.0
CLUSTERS = 4096
SUBSPACE = 32


class Gallery:
    """Deterministic clustered Lorentz points, generated in chunks (``chunk(i)`` is always the same)."""

    def __init__(self, n: int, dim: int, data: str, seed: int = 0):
        self.n, self.dim, self.data, self.seed = n, dim, data, seed
        g = torch.Generator().manual_seed(seed)
        self.centers = torch.randn(CLUSTERS, dim, generator=g) / dim**0.5 * 1.5
        self.bases = (
            torch.linalg.qr(torch.randn(CLUSTERS, dim, SUBSPACE, generator=g)).Q
            if data == "lowrank"
            else None
        )

    def _spatial(self, assign: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
        """Cluster centre + within-cluster variation of total scale ``scale``."""
        x = self.centers[assign].clone()
        if self.bases is None:
            return x + scale / self.dim**0.5 * torch.randn(len(assign), self.dim, generator=g)
        z = scale / SUBSPACE**0.5 * torch.randn(len(assign), SUBSPACE, generator=g)
        order = torch.argsort(assign)
        groups = torch.unique_consecutive(assign[order], return_counts=True)
        for c, rows in zip(groups[0].tolist(), torch.split(order, groups[1].tolist()), strict=True):
            x[rows] += z[rows] @ self.bases[c].T
        return x + 0.02 / self.dim**0.5 * torch.randn(len(assign), self.dim, generator=g)

    def chunk(self, i: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``[i, i + size)``: spatial points before the lift and their clusters."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i + 1)
        assign = torch.randint(0, CLUSTERS, (min(size, self.n - i),), generator=g)
        return self._spatial(assign, 0.35, g), assign

    def queries(self, count: int, chunk: int) -> torch.Tensor:
        """Perturbed copies of gallery points (from the first chunk)."""
        from hysafe.geometry import lorentz as L

        x, assign = self.chunk(0, chunk)
        g = torch.Generator().manual_seed(self.seed + 7)
        pick = torch.randint(0, x.shape[0], (count,), generator=g)
        if self.bases is None:
            noise = 0.2 / self.dim**0.5 * torch.randn(count, self.dim, generator=g)
        else:
            noise = torch.einsum(
                "qdk,qk->qd",
                self.bases[assign[pick]],
                0.2 / SUBSPACE**0.5 * torch.randn(count, SUBSPACE, generator=g),
            )
        return L.exp_map0(x[pick] + noise, curv=CURV)


def load_or_build(args, gallery: Gallery):
    """The index saved in ``--work`` by an earlier run of the same settings (``--reuse``), else a new
    build."""
    from hysafe.index.retrieval import RetrievalIndex

    saved = Path(args.work) / "index.faiss"
    if args.reuse and saved.is_file():
        index = RetrievalIndex.load(saved)
        if len(index) != args.n or index.dim != args.dim:
            raise SystemExit(f"{saved} holds {len(index)} x {index.dim}, not {args.n} x {args.dim}")
        index.nprobe = index.index.nprobe = args.nprobe
        return index, float("nan"), float("nan")
    return build(args, gallery)


def build(args, gallery: Gallery):
    from hysafe.geometry import LorentzSpace
    from hysafe.geometry import lorentz as L
    from hysafe.index.retrieval import RetrievalIndex

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    index = RetrievalIndex(
        LorentzSpace(curv=CURV),
        args.dim,
        kind="ivfpq",
        nlist=args.nlist,
        nprobe=args.nprobe,
        rerank=args.rerank,
        vectors=work / "index.faiss.vectors",
    )
    t0 = time.perf_counter()
    sample = L.exp_map0(gallery.chunk(0, args.train)[0], curv=CURV)
    index.train(sample)
    train_s = time.perf_counter() - t0
    for i in range(0, args.n, args.chunk):
        index.add(L.exp_map0(gallery.chunk(i, args.chunk)[0], curv=CURV))
        print(
            f"added {min(args.n, i + args.chunk):,} / {args.n:,} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    build_s = time.perf_counter() - t0
    index.save(work / "index.faiss")
    return index, train_s, build_s


def index_ram_bytes(index) -> dict:
    """What the compressed index holds in RAM, by part."""
    ivf = index.index
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    return {
        "codes": int(sizes.sum()) * ivf.code_size,
        "ids": int(sizes.sum()) * 8,
        "centroids": ivf.nlist * ivf.d * 4,
        "codebooks": int(ivf.pq.centroids.size() + index.refine.pq.centroids.size()) * 4,
        "refine_codes": int(index.refine.nbytes),
    }


def exact_search(index, queries: torch.Tensor, k: int, block: int) -> tuple[np.ndarray, float]:
    """Exhaustive search over the stored vectors, streamed from disk in blocks; top-``k`` confirmed in
    float64."""
    from hysafe.index._faiss import faiss

    space = index.space
    qv = np.ascontiguousarray(space.query_vectors(queries).numpy())
    rows_total, dim = len(index.vectors), index.dim
    pool = 2 * k
    heap = faiss.ResultHeap(len(qv), pool, keep_max=True)
    from hysafe.index.retrieval import BLAS_DATABASE_BLOCK

    faiss.cvar.distance_compute_blas_database_bs = BLAS_DATABASE_BLOCK  # what the flat index searches with
    t0 = time.perf_counter()
    # plain sequential reads: memory-mapped page faults stream 30 GB far slower
    for i in range(0, rows_total, block):
        count = min(block, rows_total - i) * dim
        rows = torch.from_numpy(
            np.fromfile(index.vectors.path, dtype="<f4", count=count, offset=i * dim * 4).reshape(-1, dim)
        )
        gv = np.ascontiguousarray(space.gallery_vectors(rows).numpy())
        ip, ids = faiss.knn(qv, gv, pool, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(ip, ids + i)
    heap.finalize()
    seconds = time.perf_counter() - t0
    from hysafe.index.compressed import exact_rerank

    return exact_rerank(space, queries, heap.I, index.vectors.take(heap.I), k)[1].numpy(), seconds


def cached_exact_search(cache: str | None, index, queries: torch.Tensor) -> tuple[np.ndarray, float]:
    """:func:`exact_search`'s top 10, read from ``cache`` when an earlier run of the same gallery left it
    there."""
    if cache and Path(cache).is_file():
        saved = np.load(cache)
        return saved["ids"], float(saved["seconds"])
    exact, seconds = exact_search(index, queries, 10, 262_144)
    if cache:
        np.savez(cache, ids=exact, seconds=seconds)
    return exact, seconds


def stage_seconds(index, queries: torch.Tensor, k: int) -> dict[str, float]:
    """Seconds per search stage (routing, IVF-PQ scan, refine codes, reading the candidates' full
    vectors, exact re-rank) over ``queries``, in ``RetrievalIndex.search``'s batches, one stage after
    another (the search itself reads a batch's vectors while it scans the next)."""
    from faiss.contrib.ivf_tools import search_preassigned

    import hysafe.index.retrieval as R
    from hysafe.index.compressed import exact_rerank, refine_candidates

    out = dict.fromkeys(("route", "scan", "refine", "read rows", "exact"), 0.0)
    for i in range(0, len(queries), R.RERANK_BATCH):
        q = queries[i : i + R.RERANK_BATCH]
        t0 = time.perf_counter()
        vectors = index._vectors(q, "query")
        coarse_ip, lists = index._route(q, index.nprobe)
        t1 = time.perf_counter()
        ip, idx = search_preassigned(
            index.index, vectors, min(len(index), k * index.rerank), lists, coarse_ip
        )
        t2 = time.perf_counter()
        best = refine_candidates(index.refine, vectors, idx, ip, R.EXACT_FACTOR * k)
        t3 = time.perf_counter()
        rows = index.vectors.take(best)
        t4 = time.perf_counter()
        exact_rerank(index.space, q, best, rows, k)
        t5 = time.perf_counter()
        for name, a, b in (
            ("route", t0, t1),
            ("scan", t1, t2),
            ("refine", t2, t3),
            ("read rows", t3, t4),
            ("exact", t4, t5),
        ):
            out[name] += b - a
    return out


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache, so the next search reads its rows from disk."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def recall(exact: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(exact, found, strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--data", choices=("lowrank", "isotropic"), default="lowrank")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[4],
        help="lists probed per query (several: one row each, same build)",
    )
    p.add_argument("--rerank", type=int, nargs="+", default=[30, 100])
    p.add_argument(
        "--train", type=int, default=131072, help="gallery points the centroids and codebooks train on"
    )
    p.add_argument("--chunk", type=int, default=500_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--work", required=True, help="folder for the index and its vector file (needs n x dim x 4 bytes)"
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="search the index an earlier run saved in --work instead of rebuilding it",
    )
    p.add_argument(
        "--exact-factors",
        type=int,
        nargs="+",
        help="vectors read back for the exact re-rank per result "
        "(hysafe.index.compressed.EXACT_FACTOR by default; several: one row each)",
    )
    p.add_argument(
        "--exact-cache", help="keep the exact search's result here (.npz) and reuse it when it exists"
    )
    p.add_argument(
        "--build-only",
        action="store_true",
        help="build and save the index in --work, search nothing (search it later with --reuse)",
    )
    p.add_argument("--out")
    args = p.parse_args()
    from hysafe.index._faiss import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    from hysafe.geometry import validation

    gallery = Gallery(args.n, args.dim, args.data)
    queries = gallery.queries(args.queries, min(args.chunk, args.n))
    args.rerank, reranks = args.rerank[0], args.rerank
    args.nprobe, nprobes = args.nprobe[0], args.nprobe
    with validation(False):
        index, train_s, build_s = load_or_build(args, gallery)
        if args.build_only:
            print(json.dumps({"train_s": train_s, "build_s": build_s, "work": args.work}))
            return
        ram = index_ram_bytes(index)
        exact, exact_s = cached_exact_search(args.exact_cache, index, queries)
        rows = []
        import hysafe.index.retrieval

        factors = args.exact_factors or [hysafe.index.retrieval.EXACT_FACTOR]
        for nprobe, rerank, factor in [(p, r, f) for p in nprobes for r in reranks for f in factors]:
            index.rerank, index.nprobe, index.index.nprobe = rerank, nprobe, nprobe
            hysafe.index.retrieval.EXACT_FACTOR = factor
            index.vectors.release()  # pages still mapped would stay cached
            evict(index.vectors.path)  # cold: every row read back comes from disk
            t = time.perf_counter()
            found = index.search(queries, 10)[1].numpy()
            cold = time.perf_counter() - t
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                index.search(queries, 10)
                times.append(time.perf_counter() - t)
            warm = statistics.median(times)
            rows.append(
                {
                    "nprobe": nprobe,
                    "rerank": rerank,
                    "exact_factor": factor,
                    "recall@10": recall(exact, found),
                    "search_s_cold": cold,
                    "search_s_warm": warm,
                    "speedup_cold": exact_s / cold,
                    "speedup_warm": exact_s / warm,
                    "qps_warm": args.queries / warm,
                    "stage_s_warm": {n: round(v, 3) for n, v in stage_seconds(index, queries, 10).items()},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    flat_bytes = args.n * (args.dim + 1) * 4
    ram_total = sum(ram.values())
    result = {
        "machine": machine(),
        "args": vars(args) | {"rerank": reranks, "nprobe": nprobes},
        "train_s": train_s,
        "build_s": build_s,
        "exact_search_s": exact_s,
        "exact_qps": args.queries / exact_s,
        "index_ram_bytes": ram,
        "index_ram_total": ram_total,
        "flat_index_bytes": flat_bytes,
        "ram_fraction_of_flat": ram_total / flat_bytes,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
