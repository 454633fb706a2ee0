r"""hysafe's indexes against the faiss indexes a user would pick instead, on the same data.

    python bench/peers.py --section ivf --out bench/results/peers/ivf_1m_512.json
    python bench/peers.py --section compressed --n 1000000 --dim 768 --nprobe 1 2 4 8 \
        --repeats 2 --out bench/results/peers/compressed_1m_768.json

Every method runs in its own process (its own build time and memory) on the same deterministic
gallery and queries, trained on the same sample, with the same threads; each child builds once and
sweeps its search setting. Recall@10 is measured against the exact geodesic ranking of the same run.

``--section ivf`` (default 1M x 512, the clustered points of bench/retrieval.py): exact brute
force (torch), hysafe's flat and IVF indexes, and faiss's own ``IndexIVFFlat`` (inner product) on
the very index vectors hysafe's flat index uses (``space.gallery_vectors`` / ``space.query_vectors``),
trained by faiss's k-means; both IVFs sweep ``nprobe``, hysafe's also its routing (``--route-dims``: 0 exact,
``m`` the centroids' m-dimensional sketch of hysafe.index.ivf_route).

``--section compressed`` (the low-rank clusters of bench/compressed_index.py): exact brute force,
hysafe's ``ivfpq`` (codes in RAM, full vectors in a memory-mapped file for the exact re-rank; cold =
first search after the file is evicted from the page cache) and faiss's ``IndexIVFPQ`` wrapped in
``IndexRefine``: with an ``IndexPQ`` re-scoring the candidates at the same code bytes per vector as
hysafe's two codes (equal memory: IVF-PQ at 1 bit per dimension finds candidates, a 2-bit PQ of the
whole vector re-scores them; the other order, which mirrors hysafe's layout, re-scores with the coarser
code and measured recall@10 0.23 at 1M x 768), and with ``IndexRefineFlat`` (every float32 vector in
RAM, the accuracy faiss reaches with 4 x d more bytes per vector); and ``IndexIVFPQ`` alone with the
2-bit residual code (less memory, no re-rank). The re-ranking ones sweep ``nprobe`` x candidates
re-ranked per result (faiss's ``k_factor``, hysafe's ``rerank``). (faiss's ``IndexIVFPQR``, whose refine
code is a residual one like hysafe's, ranks by L2 distance only and cannot serve a Lorentz inner product.)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import current_rss_mib, machine, peak_hwm_mib, reset_peak_rss, run_isolated  # noqa: E402

CURV = 1.0
K = 10
METHODS = {
    "ivf": ("exact", "hysafe-flat", "hysafe-ivf", "faiss-ivfflat"),
    "compressed": (
        "exact",
        "hysafe-ivfpq",
        "faiss-ivfpq-refine-pq",
        "faiss-ivfpq-refine-flat",
        "faiss-ivfpq",
    ),
}


# ---------------------------------------------------------------- data (identical in every child)


def ivf_data(args) -> tuple[torch.Tensor, torch.Tensor]:
    from retrieval import make_data

    return make_data(args.n, args.dim, args.queries)


def compressed_data(args) -> tuple[torch.Tensor, torch.Tensor]:
    from compressed_index import Gallery

    from hysafe.geometry import lorentz as L

    gallery = Gallery(args.n, args.dim, "lowrank")
    chunk = 500_000
    rows = [L.exp_map0(gallery.chunk(i, chunk)[0], curv=CURV) for i in range(0, args.n, chunk)]
    return torch.cat(rows), gallery.queries(args.queries, chunk)


def training_sample(gallery: torch.Tensor, size: int) -> torch.Tensor:
    pick = torch.randperm(gallery.shape[0], generator=torch.Generator().manual_seed(1))[:size]
    return gallery[pick]


# ---------------------------------------------------------------- methods: build, then search(setting)


def build_exact(gallery, args):
    from retrieval import brute_force

    return lambda queries, _setting, cold=False: brute_force(gallery, queries, K, 256).numpy(), [None]


def build_hysafe(gallery, args, kind: str):
    from hysafe.geometry import LorentzSpace
    from hysafe.index.retrieval import RetrievalIndex

    work = tempfile.TemporaryDirectory(prefix="hysafe-peers-")  # removed when the child exits
    index = RetrievalIndex(
        LorentzSpace(curv=CURV),
        args.dim,
        kind=kind,
        nlist=args.nlist,
        vectors=Path(work.name) / "v" if kind == "ivfpq" else None,
    )
    if kind != "flat":
        index.train(training_sample(gallery, args.train))
    index.add(gallery)

    def search(queries, setting, cold=False):
        nprobe, second = setting if kind != "flat" else (None, None)
        if nprobe is not None:
            index.nprobe = nprobe
        if kind == "ivfpq":
            index.rerank = second
        if kind == "ivf":
            index.route_dims = second
        if kind == "ivfpq" and cold:
            evict_vectors(index)
        return index.search(queries, K)[1].numpy()

    second = args.route_dims if kind == "ivf" else args.k_factors
    settings = [None] if kind == "flat" else [(p, f) for p in args.nprobe for f in second]
    search.work = work  # the vector file's folder lives as long as the index
    return search, settings, index


def evict_vectors(index) -> None:
    from compressed_index import evict

    index.vectors.release()  # pages still mapped would stay cached
    evict(index.vectors.path)


def index_vectors(gallery, queries, pad_to: int = 0):
    from hysafe.geometry import LorentzSpace

    space = LorentzSpace(curv=CURV)
    g, q = space.gallery_vectors(gallery).numpy(), space.query_vectors(queries).numpy()
    width = max(pad_to, g.shape[1])
    return [np.ascontiguousarray(np.pad(x, ((0, 0), (0, width - x.shape[1])))) for x in (g, q)]


def faiss_index(method: str, d: int, nlist: int):
    """``(index, base IVF, quantizer, refine index or None)`` of a faiss method, untrained.

    faiss's refine index re-scores the base's candidates on its own (it does not add to the first
    estimate as hysafe's residual code does), so at equal memory the finer code is the refine one:
    1 bit per dimension finds candidates, 2 bits re-score them. ``faiss-ivfpq`` is the 2-bit residual
    code alone (less memory than hysafe's two codes, no re-rank)."""
    from hysafe.index._faiss import faiss
    from hysafe.index.compressed import PQ_CENTROIDS, PQ_TRAIN_ITERATIONS, PQ_TRAIN_POINTS

    quantizer, ip = faiss.IndexFlatIP(d), faiss.METRIC_INNER_PRODUCT
    if method == "faiss-ivfflat":
        base = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        return base, base, quantizer, None
    equal_memory = method == "faiss-ivfpq-refine-pq"
    base = faiss.IndexIVFPQ(quantizer, d, nlist, d // 8 if equal_memory else d // 4, 8, ip)
    refine = faiss.IndexPQ(d, d // 4, 8, ip) if equal_memory else None
    for pq in (base.pq, refine.pq if refine is not None else None):
        if pq is not None:  # hysafe's codebook budget: PQ_TRAIN_POINTS residuals, its iterations
            pq.cp.niter = PQ_TRAIN_ITERATIONS
            pq.cp.max_points_per_centroid = PQ_TRAIN_POINTS // PQ_CENTROIDS
    if method == "faiss-ivfpq":
        return base, base, quantizer, None
    index = faiss.IndexRefine(base, refine) if refine is not None else faiss.IndexRefineFlat(base)
    return index, base, quantizer, refine


def build_faiss(gallery, queries, args, method: str):
    from hysafe.index._faiss import faiss

    pad_to = 8 * -(-(args.dim + 1) // 8) if method != "faiss-ivfflat" else 0
    g, q = index_vectors(gallery, queries, pad_to)
    index, base, quantizer, refine = faiss_index(method, g.shape[1], args.nlist)
    index.train(np.ascontiguousarray(g[training_sample(torch.arange(len(g)), args.train).numpy()]))
    index.add(g)

    def search(_queries, setting, cold=False):
        nprobe, k_factor = setting
        base.nprobe = nprobe
        if k_factor is None:
            return index.search(q, K)[1]
        params = faiss.IndexRefineSearchParameters(
            k_factor=k_factor, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe)
        )
        return index.search(q, K, params=params)[1]

    settings = (
        [(p, None) for p in args.nprobe]
        if method in ("faiss-ivfflat", "faiss-ivfpq")
        else [(p, f) for p in args.nprobe for f in args.k_factors]
    )
    search.keep = (quantizer, base, refine)  # the SWIG objects must outlive the index
    return search, settings, index


def ram_bytes_per_vector(method: str, index, n: int) -> float:
    """What a method keeps in RAM per indexed vector (codes or vectors, ids), without the centroids."""
    from hysafe.index._faiss import faiss

    if method == "hysafe-ivfpq":
        return index.index.code_size + 8 + index.refine.codes_per_vector
    if method in ("hysafe-ivf", "faiss-ivfflat", "faiss-ivfpq"):
        ivf = index.index if method == "hysafe-ivf" else index
        return ivf.code_size + 8
    if method == "hysafe-flat":
        return index.index.d * 4
    if method.startswith("faiss-ivfpq"):
        refine = faiss.downcast_index(index.refine_index)
        per = refine.code_size if hasattr(refine, "code_size") else refine.d * 4
        return faiss.downcast_index(index.base_index).code_size + 8 + per
    raise ValueError(f"unknown method {method!r}")


# ---------------------------------------------------------------- one child: build, sweep, report


def build(method: str, gallery, queries, args):
    if method == "exact":
        search, settings = build_exact(gallery, args)
        return search, settings, None
    if method.startswith("hysafe-"):
        return build_hysafe(gallery, args, method.removeprefix("hysafe-"))
    return build_faiss(gallery, queries, args, method)


def time_setting(search, queries, setting, repeats: int) -> dict:
    t = time.perf_counter()
    ids = search(queries, setting, cold=True)
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        search(queries, setting)
        times.append(time.perf_counter() - t)
    warm = statistics.median(times) if times else first
    return {"ids": ids, "first_s": first, "warm_s": warm}


def child(args) -> None:
    from hysafe.geometry import validation
    from hysafe.index._faiss import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    gallery, queries = (compressed_data if args.section == "compressed" else ivf_data)(args)
    with validation(False):
        t0 = time.perf_counter()
        search, settings, index = build(args.method, gallery, queries, args)
        build_s = time.perf_counter() - t0
        per_vector = ram_bytes_per_vector(args.method, index, args.n) if index is not None else 4 * args.dim
        if args.method != "exact":
            del gallery
        gc.collect()
        base_rss = current_rss_mib()
        reset_peak_rss()
        rows = []
        repeats = 0 if args.method == "exact" else args.repeats
        for i, setting in enumerate(settings):
            r = time_setting(search, queries, setting, repeats)
            np.save(Path(args.ids_dir) / f"{args.method}-{i}.npy", r.pop("ids"))
            rows.append({"setting": setting, **r})
    out = {
        "method": args.method,
        "build_s": build_s,
        "ram_bytes_per_vector": per_vector,
        "rss_mib": base_rss,
        "search_peak_rss_mib": peak_hwm_mib(),
        "rows": rows,
    }
    print(json.dumps(out))


# ---------------------------------------------------------------- parent: run each method, score


def recall(exact: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(exact, found, strict=True)]))


def child_argv(args, method: str, ids_dir: Path) -> list[str]:
    argv = [__file__, "--child", "--method", method, "--ids-dir", str(ids_dir)]
    for name in ("section", "n", "dim", "queries", "nlist", "train", "threads", "repeats"):
        argv += [f"--{name}", str(getattr(args, name))]
    argv += ["--nprobe", *map(str, args.nprobe), "--k-factors", *map(str, args.k_factors)]
    argv += ["--route-dims", *map(str, args.route_dims)]
    return argv


def score(results: dict, ids_dir: Path, queries: int) -> list[dict]:
    exact = np.load(ids_dir / "exact-0.npy")
    rows = []
    for method, res in results.items():
        for i, row in enumerate(res["rows"]):
            found = np.load(ids_dir / f"{method}-{i}.npy")
            rows.append(
                {
                    "method": method,
                    "setting": row["setting"],
                    "recall@10": recall(exact, found),
                    "qps_warm": queries / row["warm_s"],
                    "qps_first": queries / row["first_s"],
                }
            )
    return rows


def dominates(rows: list[dict], ours: str, theirs: str) -> list[dict]:
    """For each of ``theirs``' (recall, q/s) points: the fastest of ``ours`` with recall at least as high."""
    out = []
    for peer in (r for r in rows if r["method"] == theirs):
        fit = [r for r in rows if r["method"] == ours and r["recall@10"] >= peer["recall@10"]]
        best = max(fit, key=lambda r: r["qps_warm"], default=None)
        out.append(
            {
                "peer": peer,
                "ours": best,
                "dominated": best is not None and best["qps_warm"] >= peer["qps_warm"],
            }
        )
    return out


def print_rows(rows: list[dict], results: dict) -> None:
    for r in rows:
        res = results[r["method"]]
        print(
            f"{r['method']:24s} {str(r['setting']):12s} recall@10 {r['recall@10']:.4f}  "
            f"{r['qps_warm']:9.0f} q/s warm  {r['qps_first']:9.0f} first  build {res['build_s']:.0f} s  "
            f"{res['ram_bytes_per_vector']:.0f} B/vector  RSS {res['rss_mib']:.0f} MiB",
            flush=True,
        )


def parse_args() -> argparse.Namespace:
    from hysafe.cli.options import non_negative_int, positive_int

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=tuple(METHODS), default="ivf")
    p.add_argument("--n", type=positive_int, default=1_000_000)
    p.add_argument("--dim", type=positive_int, default=512)
    p.add_argument("--queries", type=positive_int, default=1000)
    p.add_argument("--nlist", type=positive_int, default=4096)
    p.add_argument("--train", type=positive_int, default=204_800, help="training sample (both indexes)")
    p.add_argument("--nprobe", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument(
        "--k-factors", type=positive_int, nargs="+", default=[10, 50], help="candidates re-ranked per result"
    )
    p.add_argument(
        "--route-dims",
        type=non_negative_int,
        nargs="+",
        default=[0, 96, 128],
        help="hysafe IVF routing: 0 exact, m > 0 in the centroids' m-dimensional sketch",
    )
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument(
        "--repeats",
        type=non_negative_int,
        default=3,
        help="warm searches per setting (0: the first search only)",
    )
    every = sorted({m for ms in METHODS.values() for m in ms[1:]})
    p.add_argument(
        "--methods", nargs="+", choices=every, help="a subset of the section's (exact always runs)"
    )
    p.add_argument("--out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--ids-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.child:
        check_sizes(p, args)
    return args


def check_sizes(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any process builds anything, what would fail (or lose the run) later."""
    from compressed_index import SUBSPACE

    other = sorted(set(args.methods or ()) - set(METHODS[args.section]))
    if other:
        known = ", ".join(METHODS[args.section][1:])
        p.error(f"--section {args.section} has no method {', '.join(other)}; it has {known}")
    if args.nlist > min(args.n, args.train):
        p.error(
            f"--nlist {args.nlist} needs at least as many points in --n ({args.n}) and --train ({args.train})"
        )
    if args.section == "compressed" and args.dim < SUBSPACE:
        p.error(
            f"--section compressed generates {SUBSPACE}-dimensional clusters: --dim must be >= {SUBSPACE}"
        )
    if args.out and not Path(args.out).resolve().parent.is_dir():
        p.error(f"--out {args.out}: its folder does not exist")


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="hysafe-peers-ids-") as ids:
        compare(args, Path(ids))


def compare(args: argparse.Namespace, ids_dir: Path) -> None:
    """Run each method of the section in its own process, score and print them, write ``--out``."""
    methods = ["exact", *[m for m in METHODS[args.section][1:] if not args.methods or m in args.methods]]
    results = {}
    for method in methods:
        results[method] = run_isolated(child_argv(args, method, ids_dir))
        print(f"{method}: built in {results[method]['build_s']:.0f} s", flush=True)
    rows = score(results, ids_dir, args.queries)
    print_rows(rows, results)
    ours, peers = (
        ("hysafe-ivf", ["faiss-ivfflat"])
        if args.section == "ivf"
        else ("hysafe-ivfpq", ["faiss-ivfpq-refine-pq", "faiss-ivfpq-refine-flat", "faiss-ivfpq"])
    )
    verdict = [v for theirs in peers if {ours, theirs} <= set(results) for v in dominates(rows, ours, theirs)]
    for v in verdict:
        print(f"{v['peer']['method']} {v['peer']['setting']}: dominated={v['dominated']}", flush=True)
    if args.out:
        meta = {k: v for k, v in results.items()}
        for m in meta.values():
            m.pop("rows")
        Path(args.out).write_text(
            json.dumps(
                {"machine": machine(), "args": vars(args), "methods": meta, "rows": rows, "verdict": verdict},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
