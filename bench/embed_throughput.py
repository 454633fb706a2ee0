"""Embedding-extraction throughput (images/s, texts/s) with DataLoader workers and torchrun processes.

    python bench/embed_throughput.py --workers 0 2 --out bench/results/embed_cpu.json
    torchrun --nproc_per_node 2 bench/embed_throughput.py --workers 0     # scaling across processes

Images are the synthetic world's PNGs, decoded and preprocessed by the DataLoader (at the model's
resolution); the model is open_clip ViT-B-32 with random weights. Under torchrun every process
embeds its shard; throughput is the whole dataset over the slowest process's time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, sync  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument(
        "--rows", type=int, default=512, help="quadruplets (safe and unsafe image, safe text each)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default: cores / processes)"
    )
    p.add_argument("--world-dir", default=None, help="reuse a generated world here")
    p.add_argument("--out")
    args = p.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))

    from hysafe.data import QuadrupletDataset, WorldConfig, generate_world, load_manifest
    from hysafe.models.safety_model import create_model

    folder = Path(args.world_dir or Path(tempfile.gettempdir()) / f"hysafe-bench-world-{args.rows}")
    if rank == 0:
        generate_world(folder, WorldConfig(n_train=args.rows, n_val=1, n_test=1))
    if world > 1:
        dist.barrier()
    model = create_model("clip", args.model, None, lora=None, device=args.device)
    rows = load_manifest(folder / "manifest.jsonl", split="train")
    ds = QuadrupletDataset(rows, preprocess=model.preprocess, tokenizer=model.tokenizer)
    shard = Subset(ds, range(rank, len(ds), world))
    amp = torch.bfloat16 if args.precision == "bf16" else None
    results = []
    tokens = ds.safe_tokens[rank::world]  # texts are tokenised once; only images need decoding
    for workers in args.workers:
        loaders = {
            "image": DataLoader(shard, batch_size=args.batch_size, num_workers=workers),
            "text": DataLoader(tokens, batch_size=args.batch_size, num_workers=workers),
        }
        timings = {}
        for modality in ("image", "text"):
            encode = model.encode_image if modality == "image" else model.encode_text
            loader = loaders[modality]
            if world > 1:
                dist.barrier()
            t = time.perf_counter()
            with (
                torch.no_grad(),
                torch.autocast(
                    args.device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None
                ),
            ):
                for batch in loader:
                    if modality == "image":  # each item carries its safe and its unsafe image
                        encode(
                            torch.cat([batch["image"], batch["unsafe_image"]]).to(
                                args.device, non_blocking=True
                            )
                        )
                    else:
                        encode(batch.to(args.device, non_blocking=True))
            sync(args.device)
            elapsed = torch.tensor(time.perf_counter() - t)
            if world > 1:
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            timings[modality] = float(elapsed)
        row = {
            "processes": world,
            "workers": workers,
            "images_per_s": 2 * len(ds) / timings["image"],
            "texts_per_s": len(ds) / timings["text"],
            "threads_per_process": torch.get_num_threads(),
            "device": args.device,
            "precision": args.precision,
        }
        results.append(row)
        if rank == 0:
            print(
                f"{world} process(es) x {row['threads_per_process']} threads, {workers} workers: "
                f"{row['images_per_s']:.1f} images/s (incl. PNG decode + "
                f"preprocess), {row['texts_per_s']:.1f} texts/s",
                flush=True,
            )
    if rank == 0 and args.out:
        Path(args.out).write_text(
            json.dumps({"machine": machine(), "model": args.model, "n": args.rows, "rows": results}, indent=2)
        )
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
