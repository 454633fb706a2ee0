"""Exact and IVF Lorentz top-10 retrieval with faiss vs brute-force torch geodesic distance + topk.

    python bench/retrieval.py --sizes 100000 1000000 --dims 512 768 --out bench/results/retrieval_cpu.json

Galleries are clustered Lorentz points (a mixture of 4096 Gaussian clusters lifted with exp_map0,
like real embeddings; IVF recall on structureless Gaussian noise is meaningless). Each method runs
in its own process; peak memory is the search phase's high-water mark (stored gallery included). Queries/s
are medians over repeats; recall@10 is measured against the exact (float64-checked) ranking of the same run.
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
from common import current_rss_mib, machine, peak_hwm_mib, reset_peak_rss, run_isolated  # noqa: E402

CURV = 1.0


def make_data(n: int, dim: int, n_queries: int, seed: int = 0):
    from hysafe.geometry import lorentz as L

    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4096, dim, generator=g) / dim**0.5 * 1.5
    assign = torch.randint(0, 4096, (n,), generator=g)
    gallery = torch.empty(n, dim)
    for i in range(0, n, 200_000):  # chunked to keep the generator's temporary small
        j = min(n, i + 200_000)
        gallery[i:j] = centers[assign[i:j]] + 0.35 / dim**0.5 * torch.randn(j - i, dim, generator=g)
    gallery = L.exp_map0(gallery, curv=CURV)
    pick = torch.randint(0, n, (n_queries,), generator=g)
    queries = gallery[pick] + 0.2 / dim**0.5 * torch.randn(n_queries, dim, generator=g)
    return gallery, queries


def brute_force(gallery, queries, k, chunk):
    from hysafe.geometry import lorentz as L

    out = []
    for i in range(0, queries.shape[0], chunk):
        d = L.dist_pairwise(queries[i : i + chunk], gallery, curv=CURV)
        out.append(torch.topk(d, k, dim=1, largest=False).indices)
    return torch.cat(out)


def child(args) -> None:
    from hysafe.geometry import LorentzSpace, validation
    from hysafe.index.retrieval import RetrievalIndex

    torch.set_num_threads(args.threads)
    from hysafe.index._faiss import faiss

    faiss.omp_set_num_threads(args.threads)
    gallery, queries = make_data(args.n, args.dim, args.queries)
    import gc

    space = LorentzSpace(curv=CURV)
    with validation(False):
        t0 = time.perf_counter()
        if args.method == "brute":
            build = 0.0
            run = lambda: brute_force(gallery, queries, 10, args.chunk)  # noqa: E731
        else:
            index = RetrievalIndex(
                space,
                args.dim,
                kind="flat" if args.method == "flat" else "ivf",
                nlist=args.nlist,
                nprobe=args.nprobe,
            )
            if args.method == "ivf":
                index.train(
                    gallery[
                        torch.randperm(args.n, generator=torch.Generator().manual_seed(1))[: 50 * args.nlist]
                    ]
                )
            index.add(gallery)
            del gallery  # the index holds its own copy
            build = time.perf_counter() - t0
            run = lambda: index.search(queries, 10)[1]  # noqa: E731
        gc.collect()
        base_rss = current_rss_mib()  # the stored gallery (tensor or index) and the queries
        reset_peak_rss()  # the peak below is the search phase's own
        ids = run()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    np.save(args.ids_out, ids.numpy())
    print(
        json.dumps(
            {
                "method": args.method,
                "n": args.n,
                "dim": args.dim,
                "queries": args.queries,
                "qps": args.queries / statistics.median(times),
                "build_s": build,
                "peak_rss_mib": peak_hwm_mib(),
                "data_rss_mib": base_rss,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=256, help="brute-force query chunk")
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ids-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import tempfile

    rows = []
    tmp = Path(tempfile.mkdtemp())
    for n in args.sizes:
        for dim in args.dims:
            res = {}
            for method in ("brute", "flat", "ivf"):
                ids_path = tmp / f"{method}-{n}-{dim}.npy"
                argv = [
                    __file__,
                    "--child",
                    "--method",
                    method,
                    "--n",
                    str(n),
                    "--dim",
                    str(dim),
                    "--queries",
                    str(args.queries),
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                    "--chunk",
                    str(args.chunk),
                    "--nlist",
                    str(min(args.nlist, n // 50)),
                    "--nprobe",
                    str(args.nprobe),
                    "--ids-out",
                    str(ids_path),
                ]
                r = run_isolated(argv)
                r["ids"] = np.load(ids_path)
                res[method] = r
            exact = res["brute"]["ids"]
            for method, r in res.items():
                found = r.pop("ids")
                r["recall@10_vs_exact"] = float(
                    np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)])
                )
                r["speedup_vs_brute"] = r["qps"] / res["brute"]["qps"]
                rows.append(r)
                print(
                    f"n={n:>8d} dim={dim}: {method:5s} {r['qps']:9.1f} q/s  x{r['speedup_vs_brute']:6.1f}  "
                    f"recall@10 {r['recall@10_vs_exact']:.3f}  peak RSS {r['peak_rss_mib']:.0f} MiB "
                    f"(stored gallery {r['data_rss_mib']:.0f})  build {r['build_s']:.1f} s",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
