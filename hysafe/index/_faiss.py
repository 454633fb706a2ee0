"""faiss, loaded with OpenBLAS kernels that match the CPU.

faiss-cpu's wheels bundle OpenBLAS 0.3.15, which predates recent CPUs and falls back to its generic
"Prescott" (SSE3) kernels on them: on an Intel Sapphire Rapids host its GEMM -- faiss's exact search,
IVF routing, k-means -- ran 4.7x slower than with the SkylakeX kernels the same CPU supports (200k x 512
flat search: 150 vs 706 queries/s; docs/benchmarks.md). OpenBLAS reads ``OPENBLAS_CORETYPE`` once,
when the library loads, so hysafe sets it from the CPU's instruction-set flags before faiss loads,
unless the user has set it (any value, including an empty one, is left alone) or faiss is already
imported. Import faiss (and the faiss.contrib helpers hysafe uses) from here:
``from hysafe.index._faiss import faiss``; a direct ``import faiss`` that runs first loses the choice.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

logger = logging.getLogger(__name__)

__all__ = [
    "faiss",
    "add_preassigned",
    "search_preassigned",
    "openblas_coretype",
    "cpu_flags",
    "choose_openblas_coretype",
]

#: the AVX-512 subsets OpenBLAS's SkylakeX kernels use
_SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})
_HASWELL_FLAGS = frozenset({"avx2", "fma"})


def openblas_coretype(flags: set[str] | frozenset[str]) -> str | None:
    """The OpenBLAS core type whose kernels a CPU with these ``/proc/cpuinfo`` flags runs: ``SkylakeX``
    (AVX-512), ``Haswell`` (AVX2 + FMA), or ``None`` (let OpenBLAS detect it)."""
    if _SKYLAKEX_FLAGS <= flags:
        return "SkylakeX"
    if _HASWELL_FLAGS <= flags:
        return "Haswell"
    return None


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's instruction-set flags (empty where the file is missing or has none)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose_openblas_coretype(environ=os.environ, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Set ``OPENBLAS_CORETYPE`` in ``environ`` from the CPU's flags; returns what was set (``None``:
    nothing, because the user set it, faiss is loaded already, or the CPU is not x86-64 Linux)."""
    if "OPENBLAS_CORETYPE" in environ or "faiss" in sys.modules:
        return None
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    core = openblas_coretype(cpu_flags(cpuinfo))
    if core is not None:
        environ["OPENBLAS_CORETYPE"] = core
        logger.debug("OPENBLAS_CORETYPE=%s (faiss's bundled OpenBLAS does not detect every CPU)", core)
    return core


choose_openblas_coretype()

# only after the choice: faiss's OpenBLAS reads it when it loads
import faiss  # noqa: E402
from faiss.contrib.ivf_tools import add_preassigned, search_preassigned  # noqa: E402
