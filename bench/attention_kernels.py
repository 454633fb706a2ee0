"""Forward + backward time of torch's flash and math attention kernels by sequence length (the data behind
hysafe.models.attention's rule: CPU training forwards take the math kernel up to ``MATH_MAX_TOKENS`` tokens).

    python bench/attention_kernels.py --out bench/results/attention_kernels.json

Each length runs ~3,200 tokens per call (batch = 3200 // length) with 12 heads of 64 dimensions (ViT-B's), in
fp32 and bf16; forward-only times are recorded beside. Figures are medians of timed repeats after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timed  # noqa: E402

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def kernel_times(
    length: int,
    dtype: torch.dtype,
    kernel: SDPBackend,
    *,
    heads: int,
    dim: int,
    tokens: int,
    device: str,
    repeats: int,
) -> dict:
    """Median seconds of one attention call, forward only and forward + backward."""
    g = torch.Generator().manual_seed(0)
    shape = (max(1, tokens // length), heads, length, dim)
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    upstream = torch.randn(shape, generator=g).to(device, dtype)

    def forward():
        with sdpa_kernel([kernel]), torch.no_grad():
            F.scaled_dot_product_attention(q, k, v)

    def both():
        with sdpa_kernel([kernel]):
            out = F.scaled_dot_product_attention(q, k, v)
        torch.autograd.grad(out, (q, k, v), upstream)

    return {
        "forward_s": statistics.median(timed(forward, device=device, repeats=repeats)),
        "forward_backward_s": statistics.median(timed(both, device=device, repeats=repeats)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[17, 50, 77, 100, 128, 160, 197, 257])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--tokens", type=int, default=3200, help="tokens per call (batch = tokens // length)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        for precision in args.precisions:
            row = {"length": length, "precision": precision, "batch": max(1, args.tokens // length)}
            for name, kernel in KERNELS.items():
                times = kernel_times(
                    length,
                    DTYPES[precision],
                    kernel,
                    heads=args.heads,
                    dim=args.dim,
                    tokens=args.tokens,
                    device=args.device,
                    repeats=args.repeats,
                )
                row.update({f"{name}_{key}": value for key, value in times.items()})
            row["math_speedup_forward_backward"] = (
                row["flash_forward_backward_s"] / row["math_forward_backward_s"]
            )
            rows.append(row)
            print(
                f"{length:4d} tokens {precision}: forward + backward flash "
                f"{1e3 * row['flash_forward_backward_s']:7.1f} ms, "
                f"math {1e3 * row['math_forward_backward_s']:7.1f} ms "
                f"({row['math_speedup_forward_backward']:.2f}x); "
                f"forward only flash {1e3 * row['flash_forward_s']:.1f} ms, math "
                f"{1e3 * row['math_forward_s']:.1f} ms",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "heads": args.heads,
                    "dim": args.dim,
                    "tokens_per_call": args.tokens,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
