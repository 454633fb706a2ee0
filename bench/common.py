"""Shared helpers of the benchmarks: timing, peak memory, machine description."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    try:
        model = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
        info["cpu"] = model
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import hysafe.index._faiss  # noqa: F401  (sets OPENBLAS_CORETYPE for faiss's OpenBLAS unless the user did)

    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    return info


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def current_rss_mib() -> float:
    return _status_mib("VmRSS")


def reset_peak_rss() -> None:
    """Reset this process's resident-memory high-water mark (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_hwm_mib() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (or process start)."""
    return _status_mib("VmHWM")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, *, device: str = "cpu", repeats: int = 3, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def matmul_peak_flops(device: str, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Measured dense matmul throughput (FLOP/s), the denominator of model FLOPs utilisation."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = timed(lambda: a @ b, device=device, repeats=repeats, warmup=2)
    return 2 * n**3 / statistics.median(times)


def run_isolated(argv: list[str]) -> dict:
    """Run ``python argv...`` in a fresh process (its own peak memory) and parse its JSON line."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(argv)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
