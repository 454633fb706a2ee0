"""Training-step throughput and peak memory: hysafe's step vs the naive reference-style step.

    python bench/train_throughput.py --device cpu --batch-sizes 8 32 --out docs/bench_train_cpu.json

Each (model, batch, implementation) runs in its own process (isolated peak memory), on open_clip
ViT-B-32 with random weights (compute does not depend on the weights) and LoRA r=16 on both towers.
Figures are medians over timed steps after warm-up; the speed-up is measured in the same run.
``--compile inductor`` and ``--grad-checkpointing`` add hysafe rows with the training loop's own
options (``TrainConfig.compile`` / ``grad_checkpointing``) beside the plain ones:

    python bench/train_throughput.py --model ViT-L-14 --device cuda --batch-sizes 32 64 128 --precisions bf16 \
        --compile inductor --grad-checkpointing --out docs/bench_train_gpu_vitl.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, matmul_peak_flops, peak_rss_mib, run_isolated, sync, timed  # noqa: E402


def make_batch(model, n: int, device: str, image_size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    words = [f"a photo of object number {i}" for i in range(n)]
    return {
        "image": torch.randn(n, 3, image_size, image_size, generator=g).to(device),
        "unsafe_image": torch.randn(n, 3, image_size, image_size, generator=g).to(device),
        "text": model.tokenize(words).to(device),
        "unsafe_text": model.tokenize([w + " covered in blood" for w in words]).to(device),
    }


#: the child options of each hysafe-step variant
VARIANT_ARGS = {
    "plain": lambda args: [],
    "compile": lambda args: ["--compile", args.compile],
    "checkpointing": lambda args: ["--grad-checkpointing"],
}


def child(args) -> None:
    from naive_reference import naive_step

    from hysafe.backbone import LoraConfig
    from hysafe.geometry import validation
    from hysafe.losses import get_objective
    from hysafe.models import create_model, trainable_parameters
    from hysafe.training import compute_loss

    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    model = create_model(args.kind, args.model, None, lora=LoraConfig(r=16, alpha=1.0, dropout=0.1), device=args.device)
    model.train()
    params = [p for _, p in trainable_parameters(model)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    size = model.backbone.model.visual.image_size
    batch = make_batch(model, args.batch, args.device, size[0] if isinstance(size, tuple) else size)
    objective = get_objective(args.kind)
    amp = {"fp32": None, "bf16": torch.bfloat16}[args.precision]

    def ours(loss_fn=compute_loss):
        loss, _ = loss_fn(model, objective, batch, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.clamp_parameters_()

    def naive():
        naive_step(model, batch, opt, args.kind)

    from torch.utils.flop_counter import FlopCounterMode

    from hysafe.training.loop import compiled_loss, grad_checkpointing

    with validation(False), grad_checkpointing(model, args.grad_checkpointing), compiled_loss(model, args.compile) as loss_fn:
        step = (lambda: ours(loss_fn)) if args.impl == "hysafe" else naive
        flops = None
        if args.count_flops:  # counted on the eager step: compiling changes kernels, not the work
            with FlopCounterMode(display=False) as counter:
                ours() if args.impl == "hysafe" else naive()
            flops = counter.get_total_flops()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = timed(step, device=args.device, repeats=args.steps, warmup=args.warmup)
    sync(args.device)
    med = statistics.median(times)
    out = {"kind": args.kind, "batch": args.batch, "impl": args.impl, "precision": args.precision, "device": args.device,
           "variant": args.variant,
           "step_s": med, "quadruplets_per_s": args.batch / med, "flops_per_step": flops,
           "peak_rss_mib": peak_rss_mib()}
    if args.device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--kinds", nargs="+", default=["hysac", "safeclip"])
    p.add_argument("--precisions", nargs="+", default=["fp32"], help="precisions of the hysafe step (naive is fp32)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--compile", choices=("inductor", "aot_eager"), help="also time the hysafe step compiled with this backend")
    p.add_argument("--grad-checkpointing", action="store_true", help="also time the hysafe step with activation checkpointing")
    p.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    n = 2048 if args.device == "cpu" else 8192
    peaks = {p: matmul_peak_flops(args.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[p], n=n)
             for p in sorted({"fp32", *args.precisions})}
    rows, flops_per_quadruplet = [], {}
    variants = ["plain"] + (["compile"] if args.compile else []) + (["checkpointing"] if args.grad_checkpointing else [])
    for kind in args.kinds:
        for batch in args.batch_sizes:
            for impl, precision, variant in [("naive", "fp32", "plain")] + [("hysafe", pr, v) for pr in args.precisions for v in variants]:
                argv = [__file__, "--child", "--kind", kind, "--batch", str(batch), "--impl", impl, "--precision", precision,
                        "--device", args.device, "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
                        "--threads", str(args.threads), "--variant", variant, *VARIANT_ARGS[variant](args)]
                smallest = batch == min(args.batch_sizes)
                r = run_isolated(argv + (["--count-flops"] if smallest else []))
                key = (kind, impl, precision, variant)
                if smallest:
                    flops_per_quadruplet[key] = r["flops_per_step"] / batch
                else:  # FLOPs are linear in the batch: counted once (FlopCounterMode costs a step)
                    r["flops_per_step"] = flops_per_quadruplet[key] * batch
                r["mfu"] = r["flops_per_step"] / r["step_s"] / peaks[precision]  # against the same precision's peak
                rows.append(r)
                print(f"{kind:8s} batch {batch:3d} {impl:6s} {precision} {variant:13s}: {r['quadruplets_per_s']:8.2f} quadruplets/s, "
                      f"step {r['step_s']:.3f} s, {r['flops_per_step'] / 1e9:.1f} GFLOP/step, MFU {100 * r['mfu']:.1f}%, "
                      f"peak RSS {r['peak_rss_mib']:.0f} MiB" + (f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else ""), flush=True)
    for kind in args.kinds:
        for batch in args.batch_sizes:
            naive = next(r for r in rows if r["kind"] == kind and r["batch"] == batch and r["impl"] == "naive")
            for r in rows:
                if r["kind"] == kind and r["batch"] == batch and r["impl"] == "hysafe":
                    r["speedup_vs_naive"] = r["quadruplets_per_s"] / naive["quadruplets_per_s"]
                    print(f"speed-up {kind} batch {batch} {r['precision']} {r['variant']}: {r['speedup_vs_naive']:.2f}x")
    result = {"machine": machine(), "matmul_peak_flops": peaks, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print("measured matmul peaks: " + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()))


if __name__ == "__main__":
    main()
