"""Input validation and dtype policy shared by the geometry functions.

Validation raises :class:`ValueError` naming the offending argument. It costs one
host/device synchronisation per call, so hot loops (the trainer, a service's requests on
embeddings it has already checked) may switch it off with :func:`validation`, which applies to
the calling thread only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import Callable, Iterator, TypeVar

import torch

__all__ = [
    "validation",
    "validation_enabled",
    "check_points",
    "require_finite",
    "check_same_dim",
    "float32_math",
]

# per thread: one thread's ``validation(False)`` (a request on trusted tensors) must not switch
# off the checks of another thread's call on a user's input
_STATE = threading.local()

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that switches input validation of geometry functions on or off in the
    calling thread (other threads keep their own setting; a new thread starts with it on)."""
    previous = validation_enabled()
    _STATE.enabled = enabled
    try:
        yield
    finally:
        _STATE.enabled = previous


def validation_enabled() -> bool:
    return getattr(_STATE, "enabled", True) and not torch.compiler.is_compiling()


def check_points(x: torch.Tensor, name: str, *, min_dim: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating tensor of rank >= ``min_dim`` with finite values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not validation_enabled():
        return
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (..., D), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty feature dimension, shape {tuple(x.shape)}")
    require_finite(x, name)


def require_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (whatever :func:`validation` says).

    The sum is one fused pass and one host read (``isfinite(x).all()`` is three dispatches and
    ~25x the work); NaN and Inf propagate into it, so only a sum that is not finite (NaN/Inf, or
    finite values whose total overflows) runs the exact elementwise count."""
    if x.numel() and not math.isfinite(x.detach().sum().item()):
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/Inf value(s)")


def check_same_dim(x: torch.Tensor, y: torch.Tensor, xname: str, yname: str) -> None:
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{xname} and {yname} must share the feature dimension, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _upcast(t):
    if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def float32_math(fn: F) -> F:
    """Run ``fn`` with autocast disabled and half-precision tensor arguments upcast to float32.

    Hyperbolic functions (sinh, acosh, ...) overflow or lose all precision in fp16/bf16, so
    they always run in at least float32. float64 inputs stay float64.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(_upcast(a) for a in args)
        kwargs = {k: _upcast(v) for k, v in kwargs.items()}
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if device in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
