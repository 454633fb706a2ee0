"""Collection throughput: ``score`` and ``index build`` items/s and peak RSS at two sizes, and
single-query search latency on a 1M-item index.

    python bench/collection_throughput.py --out bench/results/collection_cpu.json
    python bench/collection_throughput.py --plan gpu --device cuda --precision bf16 --workers 8 --threads 16 \
        --out bench/results/collection_gpu.json

Every (model, modality, size, command) runs in its own process (isolated peak RSS). Images are
generated PNGs at the model's resolution (decoding included, by the DataLoader workers); texts are
generated captions. Models have random weights (throughput does not depend on them). ``--plan gpu``
runs ViT-B-32 and ViT-L-14 at GPU-sized collections (no search row: that part runs on the CPU);
``--plan smoke`` checks the pipeline in seconds.
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
from common import machine, peak_rss_mib, run_isolated  # noqa: E402


def make_collection(folder: Path, modality: str, n: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if modality == "text":
        path = folder / f"texts-{n}.txt"
        if not path.exists():
            rng = np.random.default_rng(0)
            words = [
                "red",
                "blue",
                "circle",
                "square",
                "large",
                "small",
                "at the top",
                "covered in blood",
                "on a beach",
                "a photo of",
            ]
            path.write_text("".join(" ".join(rng.choice(words, 8)) + "\n" for _ in range(n)))
        return path
    root = folder / f"images-{n}-{size}"
    if not root.exists():
        import shutil
        from concurrent.futures import ProcessPoolExecutor

        # renamed when complete: an interrupted run leaves no half collection
        part = folder / f"{root.name}.part"
        shutil.rmtree(part, ignore_errors=True)
        with ProcessPoolExecutor() as pool:  # one folder of 1,000 images per task
            list(
                pool.map(
                    _write_images,
                    [(part / f"{i // 1000:04d}", i, min(i + 1000, n), size) for i in range(0, n, 1000)],
                )
            )
        part.rename(root)
    return root


def _write_images(task) -> None:
    from PIL import Image

    sub, start, stop, size = task
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(sub / f"{i:07d}.png")


#: (model, modality, sizes, image pixels) per plan
PLANS = {
    "cpu": [
        ("hysafe-tiny", "text", [20_000, 100_000], 32),
        ("hysafe-tiny", "image", [5_000, 20_000], 32),
        ("ViT-B-32", "text", [1_000, 2_000], 224),
        ("ViT-B-32", "image", [250, 500], 224),
    ],
    "gpu": [
        ("ViT-B-32", "text", [20_000], 224),
        ("ViT-B-32", "image", [5_000], 224),
        ("ViT-L-14", "text", [20_000], 224),
        ("ViT-L-14", "image", [5_000], 224),
    ],
    "smoke": [
        ("hysafe-tiny", "text", [500], 32),
        ("hysafe-tiny", "image", [1_200], 32),
    ],  # checks the pipeline in seconds
}


def child(args) -> None:
    from hysafe.collection import ImageFolder, TextFile, build_index, score_collection
    from hysafe.models.safety_model import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("hysac", args.model, None, lora=None, device=args.device)
    model.bounds = {p: {"avg": 1.0, "low_05": 0.5, "up_95": 1.5} for p in "SVUG"}
    source = TextFile(args.source) if args.modality == "text" else ImageFolder(args.source)
    out = Path(args.tmp) / f"{args.command}-{args.model}-{args.modality}-{args.n}"
    import shutil

    for stale in (out, Path(f"{out}.parquet"), Path(f"{out}.parquet.parts"), Path(f"{out}.skipped.csv")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    t = time.perf_counter()
    if args.command == "score":
        score_collection(
            model,
            source,
            f"{out}.parquet",
            batch_size=256,
            num_workers=args.workers,
            progress=False,
            precision=args.precision,
        )
    else:
        build_index(
            model,
            source,
            out,
            batch_size=256,
            num_workers=args.workers,
            progress=False,
            precision=args.precision,
        )
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "command": args.command,
                "model": args.model,
                "modality": args.modality,
                "items": args.n,
                "workers": args.workers,
                "device": args.device,
                "precision": args.precision,
                "seconds": seconds,
                "items_per_s": args.n / seconds,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def search_child(args) -> None:
    """Per-query latency of CollectionIndex.search on a 1M-item flat index (random clustered embeddings)."""
    import pyarrow as pa

    from hysafe.collection import CollectionIndex
    from hysafe.index.retrieval import RetrievalIndex
    from hysafe.models.safety_model import create_model

    torch.set_num_threads(args.threads)
    model = create_model("hysac", "hysafe-tiny", None, lora=None)
    dim, n = model.embed_dim, args.n
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(1000, dim, generator=g) * 0.3
    emb = centers[torch.randint(0, 1000, (n,), generator=g)] + 0.05 * torch.randn(n, dim, generator=g)
    index = RetrievalIndex(model.space, dim)
    index.add(emb)
    items = pa.table(
        {
            "index": np.arange(n),
            "id": [f"item-{i}" for i in range(n)],
            "path": [f"/data/{i}.jpg" for i in range(n)],
            "modality": ["image"] * n,
            "score": np.zeros(n),
            "row": np.arange(n),
        }
    )
    from hysafe.collection.embed import model_fingerprint

    col = CollectionIndex(Path(args.tmp), {"model": model_fingerprint(model)}, index, items)
    with torch.no_grad():
        q = model.encode_text(model.tokenize(["a red circle, covered in blood"]))
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        col.search(model, q, 10, modality="text")
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "command": "search",
                "items": n,
                "dim": dim,
                "median_ms": 1000 * statistics.median(times[1:]),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/results/collection_cpu.json")
    p.add_argument("--data", default="/tmp/hysafe-bench-collection")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16", "auto"),
        help="the towers' autocast precision",
    )
    p.add_argument("--commands", nargs="+", default=["score", "index"], choices=["score", "index"])
    p.add_argument(
        "--plan", default="cpu", choices=sorted(PLANS), help="which models and sizes (default: %(default)s)"
    )
    p.add_argument("--child", choices=["run", "search"])
    for name in ("command", "model", "modality", "source", "tmp"):
        p.add_argument(f"--{name}")
    p.add_argument("--n", type=int)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--resume", action="store_true", help="keep the results already in --out and run the rest")
    args = p.parse_args()
    if args.child == "run":
        return child(args)
    if args.child == "search":
        return search_child(args)
    data, out = Path(args.data), Path(args.out)
    results = json.loads(out.read_text())["results"] if args.resume and out.is_file() else []
    done = {
        (r["model"], r["modality"], r["items"], r["command"]) for r in results if r["command"] != "search"
    }
    for model, modality, sizes, px in PLANS[args.plan]:
        for n in sizes:
            source = make_collection(data, modality, n, px)
            for command in args.commands:
                if (model, modality, n, command) in done:
                    continue
                res = run_isolated(
                    [
                        __file__,
                        "--child",
                        "run",
                        "--command",
                        command,
                        "--model",
                        model,
                        "--modality",
                        modality,
                        "--source",
                        str(source),
                        "--n",
                        str(n),
                        "--tmp",
                        str(data / "out"),
                        "--threads",
                        str(args.threads),
                        "--workers",
                        str(args.workers),
                        "--device",
                        args.device,
                        "--precision",
                        args.precision,
                    ]
                )
                print(res, flush=True)
                results.append(res)
                # kept if interrupted
                out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    if args.plan != "cpu":
        return
    res = run_isolated(
        [
            __file__,
            "--child",
            "search",
            "--n",
            "1000000",
            "--tmp",
            str(data / "out"),
            "--threads",
            str(args.threads),
        ]
    )
    print(res, flush=True)
    results.append(res)
    Path(args.out).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
