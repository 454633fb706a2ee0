"""Traversal and classifier-scoring throughput on 1M embeddings (vectorised, no Python loops).

python bench/inference_throughput.py --n 1000000 --dim 512 --out bench/results/inference_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from hysafe.geometry import LorentzSpace, validation
    from hysafe.geometry import lorentz as L
    from hysafe.models.classifier import NSFWClassifier
    from hysafe.models.traversal import traverse

    space = LorentzSpace(curv=1.0)
    g = torch.Generator().manual_seed(0)
    x = L.exp_map0(torch.randn(args.n, args.dim, generator=g) * 0.05, curv=1.0).to(args.device)
    tau = float(space.dist_to_root(x).median())
    clf = NSFWClassifier.root_distance(space, threshold=tau)
    rows = {}
    for validate in (True, False):
        with validation(validate):
            for name, fn in {
                "traverse": lambda: traverse(x, tau, space),
                "score": lambda: clf.score(x),
                "predict": lambda: clf.predict(x),
            }.items():
                t = statistics.median(timed(fn, device=args.device, repeats=args.repeats, warmup=1))
                rows[f"{name}{'' if validate else ' (validation off)'}"] = {
                    "seconds": t,
                    "items_per_s": args.n / t,
                }
                print(
                    f"{name:8s} validation {'on ' if validate else 'off'}: "
                    f"{args.n / t / 1e6:7.2f} M items/s ({t * 1e3:.1f} ms for {args.n})",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"machine": machine(), "n": args.n, "dim": args.dim, "device": args.device, "rows": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
