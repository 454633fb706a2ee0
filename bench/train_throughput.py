"""Training-step throughput and peak memory: hysafe's step vs the naive reference-style step.

    python bench/train_throughput.py --device cpu --batch-sizes 8 32 --out bench/results/train_cpu.json

Each (model, batch, implementation) runs in its own process (isolated peak memory), on open_clip
ViT-B-32 with random weights (compute does not depend on the weights) and LoRA r=16 on both towers.
Figures are medians over timed steps after warm-up; the speed-up is measured in the same run, against
the reference-style step at the same precision where one was run (``--naive-precisions fp32 bf16``;
its bf16 rows run it under autocast), else against its fp32 rows. FLOPs are counted once per model
kind and step (forward + backward through frozen weights + LoRA, torch's FlopCounterMode) and scale
with the batch; MFU is against the matmul peak measured in the same run at the row's precision.
``--compile inductor`` and ``--grad-checkpointing`` add hysafe rows with the training loop's own
options (``TrainConfig.compile`` / ``grad_checkpointing``) beside the plain ones; ``--torch-dropout`` and
``--torch-attention`` add hysafe rows with torch's LoRA dropout or attention kernel choice (the reference
loop's, which its rows always use) instead of hysafe's (hysafe.models.lora_dropout, hysafe.models.attention).
On a GPU, ``--in-process`` builds one model per kind and resets the peak-memory counter per row (rows that run
out of memory are recorded as such), ``--deadline-s`` skips the rows that would start late, and
``--profile`` writes where the step's time goes:

    python bench/train_throughput.py --model ViT-L-14 --device cuda --batch-sizes 128 64 32 --precisions bf16
    \
        --naive-precisions bf16 fp32 --grad-checkpointing --compile inductor --in-process --steps 8 --warmup
        3 \
        --profile bench/results/profiles/vitl_hysac_b128.txt --out bench/results/train_gpu_vitl.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
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
    "torch-dropout": lambda args: [],
    "torch-attention": lambda args: [],
}


def build(args, kind: str):
    """The model under test (LoRA r=16 on both towers, random weights), its optimiser and objective."""
    from hysafe.losses import get_objective
    from hysafe.models.backbone import LoraConfig
    from hysafe.models.safety_model import create_model, trainable_parameters

    torch.manual_seed(0)
    model = create_model(
        kind, args.model, None, lora=LoraConfig(r=16, alpha=1.0, dropout=0.1), device=args.device
    )
    model.train()
    opt = torch.optim.AdamW([p for _, p in trainable_parameters(model)], lr=1e-4)
    return model, opt, get_objective(kind)


def image_size(model) -> int:
    size = model.backbone.model.visual.image_size
    return size[0] if isinstance(size, tuple) else size


def use_kernels(model, *, sparse_dropout: bool, math_attention: bool) -> None:
    """hysafe's CPU kernels on or off: the LoRA dropout that draws the dropped positions
    (hysafe.models.lora_dropout) and the math attention kernel for short bf16 training sequences
    (hysafe.models.attention). The reference-style rows run
    torch's (per-element dropout draws, torch's kernel choice)."""
    from hysafe.models.attention import MATH_MAX_TOKENS
    from hysafe.models.lora_dropout import use_sparse_dropout

    use_sparse_dropout(model, enable=sparse_dropout)
    model.backbone.math_attention_max_tokens = MATH_MAX_TOKENS if math_attention else 0


def hysafe_step(model, opt, objective, batch: dict, amp, loss_fn) -> None:
    """One optimiser step of hysafe's training loop (``loss_fn``: compute_loss, possibly compiled)."""
    loss, _ = loss_fn(model, objective, batch, amp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    model.clamp_parameters_()


def measure(
    args,
    model,
    opt,
    objective,
    kind: str,
    batch_n: int,
    impl: str,
    precision: str,
    variant: str,
    count_flops: bool,
) -> dict:
    """Median step time (and FLOPs of one eager step when ``count_flops``) of one configuration."""
    from naive_reference import naive_step
    from torch.utils.flop_counter import FlopCounterMode

    from hysafe.geometry import validation
    from hysafe.training import compute_loss
    from hysafe.training.loop import compiled_loss, grad_checkpointing

    batch = make_batch(model, batch_n, args.device, image_size(model))
    amp = {"fp32": None, "bf16": torch.bfloat16}[precision]
    backend = args.compile if variant == "compile" else None
    use_kernels(
        model,
        sparse_dropout=impl == "hysafe" and variant != "torch-dropout",
        math_attention=impl == "hysafe" and variant != "torch-attention",
    )

    def ours(loss_fn=compute_loss):
        hysafe_step(model, opt, objective, batch, amp, loss_fn)

    def naive():  # the reference-style loop, under autocast for its bf16 rows
        with torch.autocast(args.device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
            naive_step(model, batch, opt, kind)

    with (
        validation(False),
        grad_checkpointing(model, variant == "checkpointing"),
        compiled_loss(model, backend) as loss_fn,
    ):
        step = (lambda: ours(loss_fn)) if impl == "hysafe" else naive
        flops = None
        # counted on the eager step: compiling or checkpointing changes kernels, not the model's work
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                ours() if impl == "hysafe" else naive()
            flops = counter.get_total_flops()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = timed(step, device=args.device, repeats=args.steps, warmup=args.warmup)
    sync(args.device)
    med = statistics.median(times)
    out = {
        "kind": kind,
        "batch": batch_n,
        "impl": impl,
        "precision": precision,
        "device": args.device,
        "variant": variant,
        "step_s": med,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "quadruplets_per_s": batch_n / med,
        "flops_per_step": flops,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def child(args) -> None:
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    model, opt, objective = build(args, args.kind)
    print(
        json.dumps(
            measure(
                args,
                model,
                opt,
                objective,
                args.kind,
                args.batch,
                args.impl,
                args.precision,
                args.variant,
                args.count_flops,
            )
        )
    )


def profile_step(args, model, opt, objective, kind: str, batch_n: int, precision: str, path: Path) -> None:
    """torch.profiler table of one hysafe step (after two warm-up steps): where the step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    from hysafe.geometry import validation
    from hysafe.training import compute_loss

    batch = make_batch(model, batch_n, args.device, image_size(model))
    amp = {"fp32": None, "bf16": torch.bfloat16}[precision]
    # hysafe's own step (a naive row may have run before)
    use_kernels(model, sparse_dropout=True, math_attention=True)
    step = lambda: hysafe_step(model, opt, objective, batch, amp, compute_loss)  # noqa: E731
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with validation(False):
        for _ in range(2):
            step()
        sync(args.device)
        with profile(activities=activities) as prof:
            step()
            sync(args.device)
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    path.write_text(
        f"{kind} batch {batch_n} {precision} hysafe step, {args.model}\n"
        + prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)
    )


def plan(args) -> list[tuple[str, int, str, str, str]]:
    """(kind, batch, impl, precision, variant) rows in run order; compiled rows come last (slowest to set
    up), at the largest batch only (each new batch size recompiles)."""
    variants = (
        ["plain"]
        + (["checkpointing"] if args.grad_checkpointing else [])
        + (["torch-dropout"] if args.torch_dropout else [])
        + (["torch-attention"] if args.torch_attention else [])
    )
    steps = [("naive", p, "plain") for p in args.naive_precisions] + [
        ("hysafe", p, v) for p in args.precisions for v in variants
    ]
    rows = [(k, b, *s) for k in args.kinds for b in args.batch_sizes for s in steps]
    if args.compile:
        rows += [
            (k, max(args.batch_sizes), "hysafe", p, "compile") for k in args.kinds for p in args.precisions
        ]
    return rows


def run_isolated_row(args, row, count_flops: bool) -> dict:
    kind, batch, impl, precision, variant = row
    argv = [
        __file__,
        "--child",
        "--kind",
        kind,
        "--batch",
        str(batch),
        "--impl",
        impl,
        "--precision",
        precision,
        "--device",
        args.device,
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--variant",
        variant,
        *VARIANT_ARGS[variant](args),
    ]
    return run_isolated(argv + (["--count-flops"] if count_flops else []))


class InProcess:
    """Rows measured in this process, one model per kind at a time (GPU: peak memory is reset per row;
    a row that runs out of memory is recorded as such and the next one runs)."""

    def __init__(self, args):
        self.args, self.kind, self.model = args, None, None

    def use(self, kind: str) -> None:
        """A freshly built model of ``kind`` (the previous one released first)."""
        self.model = self.opt = self.objective = None
        release(self.args.device)
        self.kind, (self.model, self.opt, self.objective) = kind, build(self.args, kind)

    def __call__(self, row, count_flops: bool) -> dict:
        kind, batch, impl, precision, variant = row
        if kind != self.kind:
            self.use(kind)
        try:
            return measure(self.args, self.model, self.opt, self.objective, *row, count_flops)
        except torch.OutOfMemoryError as e:
            self.opt.zero_grad(set_to_none=True)
            release(self.args.device)
            return {
                "kind": kind,
                "batch": batch,
                "impl": impl,
                "precision": precision,
                "device": self.args.device,
                "variant": variant,
                "oom": str(e).splitlines()[0][:200],
            }


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def summarise(rows: list[dict], peaks: dict) -> None:
    """FLOPs (linear in the batch, counted once per kind and step), MFU and speed-ups, in place."""
    per_item = {
        (r["kind"], r["impl"]): r["flops_per_step"] / r["batch"] for r in rows if r.get("flops_per_step")
    }
    for r in rows:
        if "oom" in r or (r["kind"], r["impl"]) not in per_item:
            continue
        r["flops_per_step"] = per_item[(r["kind"], r["impl"])] * r["batch"]
        # against the same precision's peak
        r["mfu"] = r["flops_per_step"] / r["step_s"] / peaks[r["precision"]]
    for r in rows:
        if r["impl"] != "hysafe" or "oom" in r:
            continue
        naive = {
            n["precision"]: n
            for n in rows
            if (n["kind"], n["batch"], n["impl"]) == (r["kind"], r["batch"], "naive") and "oom" not in n
        }
        ref = naive.get(r["precision"]) or naive.get("fp32")
        if ref:
            r["speedup_vs_naive"] = r["quadruplets_per_s"] / ref["quadruplets_per_s"]
            r["naive_precision"] = ref["precision"]


def row_line(r: dict) -> str:
    head = f"{r['kind']:8s} batch {r['batch']:3d} {r['impl']:6s} {r['precision']} {r['variant']:13s}"
    if "oom" in r:
        return f"{head}: out of memory"
    line = (
        f"{head}: {r['quadruplets_per_s']:8.2f} quadruplets/s, step "
        f"{r['step_s']:.3f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
    )
    if "peak_gpu_mib" in r:
        line += f", peak GPU {r['peak_gpu_mib']:.0f} MiB"
    if "mfu" in r:
        line += f", {r['flops_per_step'] / 1e9:.0f} GFLOP/step, MFU {100 * r['mfu']:.1f}%"
    if "speedup_vs_naive" in r:
        line += f", {r['speedup_vs_naive']:.2f}x naive {r['naive_precision']}"
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--kinds", nargs="+", default=["hysac", "safeclip"])
    p.add_argument("--precisions", nargs="+", default=["fp32"], help="precisions of the hysafe step")
    p.add_argument(
        "--naive-precisions",
        nargs="+",
        default=["fp32"],
        help="precisions of the reference-style step (bf16: under autocast)",
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here (rewritten after every row)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure every row in this process, one model per kind (GPU: peak "
        "memory reset per row; saves model builds)",
    )
    p.add_argument("--deadline-s", type=float, help="skip the rows that would start after this many seconds")
    p.add_argument(
        "--profile",
        help="write a torch.profiler table of the first kind's hysafe step at the largest batch here",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument(
        "--compile",
        choices=("inductor", "aot_eager"),
        help="also time the hysafe step compiled with this backend",
    )
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="also time the hysafe step with activation checkpointing",
    )
    p.add_argument(
        "--torch-dropout",
        action="store_true",
        help="also time the hysafe step with torch's LoRA dropout (the "
        "reference's) instead of hysafe's sparse one",
    )
    p.add_argument(
        "--torch-attention",
        action="store_true",
        help="also time the hysafe step with torch's attention kernel choice "
        "(the reference's) instead of hysafe's rule",
    )
    p.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    start = time.perf_counter()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    n = 2048 if args.device == "cpu" else 8192
    peaks = {
        p: matmul_peak_flops(args.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[p], n=n)
        for p in sorted({"fp32", *args.precisions, *args.naive_precisions})
    }
    print(
        "measured matmul peaks: " + ", ".join(f"{p} {v / 1e9:,.0f} GFLOP/s" for p, v in peaks.items()),
        flush=True,
    )
    runner = InProcess(args) if args.in_process else (lambda row, count: run_isolated_row(args, row, count))
    rows, skipped, counted, profiled = [], [], set(), not (args.profile and args.in_process)
    for row in plan(args):
        if args.deadline_s and time.perf_counter() - start > args.deadline_s:
            skipped.append(dict(zip(("kind", "batch", "impl", "precision", "variant"), row, strict=True)))
            continue
        if row[4] == "compile" and not profiled:  # before compiling: dynamo state stays with the model
            profiled = profile_largest(args, runner)
        count = (row[0], row[2]) not in counted and row[4] == "plain"
        r = runner(row, count)
        if r.get("flops_per_step"):
            counted.add((row[0], row[2]))
        rows.append(r)
        summarise(rows, peaks)
        print(row_line(r), flush=True)
        write(
            args.out,
            {
                "machine": machine(),
                "model": args.model,
                "matmul_peak_flops": peaks,
                "rows": rows,
                "skipped": skipped,
            },
        )
    if not profiled and not (args.deadline_s and time.perf_counter() - start > args.deadline_s):
        profiled = profile_largest(args, runner)
    write(
        args.out,
        {
            "machine": machine(),
            "model": args.model,
            "matmul_peak_flops": peaks,
            "rows": rows,
            "skipped": skipped,
        },
    )
    print(
        f"{len(rows)} rows in {time.perf_counter() - start:.0f} s"
        + (f"; {len(skipped)} skipped past the deadline" if skipped else "")
    )
    for r in rows:
        print(row_line(r))


def profile_largest(args, runner: InProcess) -> bool:
    """Profile the first kind's hysafe step at the largest batch (``--profile``)."""
    kind, batch = args.kinds[0], max(args.batch_sizes)
    if runner.kind != kind:
        runner.use(kind)
    profile_step(
        args, runner.model, runner.opt, runner.objective, kind, batch, args.precisions[0], Path(args.profile)
    )
    print(f"profile of {kind} at batch {batch}: {args.profile}", flush=True)
    return True


def write(out: str | None, result: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
