"""Which scaled-dot-product-attention kernel a bf16 training forward uses on CPU.

torch runs its CPU flash-attention kernel at every sequence length, but in bf16 that kernel's *backward* is
slow for short sequences: at CLIP's lengths (50 image tokens of ViT-B/32, 77 text tokens) forward + backward
through the math kernel (two matrix products and a softmax) takes 2.9-3.4x less time on a 2-core Xeon, and
flash wins only from ~200 tokens (``bench/attention_kernels.py``, docs/benchmarks.md section 1). In fp32 the
two are within 0.97-1.3x of each other up to 128 tokens, so fp32 keeps torch's choice.
:func:`training_attention` picks the
math kernel for a tower's call when autograd is recording a bf16 computation on CPU (autocast or bf16 weights)
over at most ``max_tokens`` tokens (``MATH_MAX_TOKENS``); forward-only calls keep flash, whose forward is the
faster one at every length, and so does every CUDA call. Both kernels compute the same attention (to bf16
rounding; tested).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

MATH_MAX_TOKENS = 160  # bf16 on the Xeon: math 1.7x faster at 128-160 tokens, even at ~200, slower at 257


def training_attention(
    tokens: int | None, device: torch.device | str, dtype: torch.dtype, max_tokens: int = MATH_MAX_TOKENS
) -> AbstractContextManager:
    """The math SDPA kernel for a bf16 CPU forward that autograd records over at most ``max_tokens`` tokens;
    torch's choice otherwise (``tokens=None``: unknown length, or ``max_tokens=0``: rule off)."""
    if (
        tokens is None
        or tokens > max_tokens
        or dtype != torch.bfloat16
        or torch.device(device).type != "cpu"
        or not torch.is_grad_enabled()
    ):
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def compute_dtype(tower: nn.Module, device: torch.device | str) -> torch.dtype:
    """The dtype a tower's matrix products run in: autocast's where it is on for ``device``, else the
    weights'."""
    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    weight = next(tower.parameters(), None)
    return weight.dtype if weight is not None else torch.get_default_dtype()


def image_tokens(visual: nn.Module) -> int | None:
    """The attention sequence length of an open_clip image tower: patches + class token (ViT), the attention
    pool's positions (ModifiedResNet); None for a tower without a known one (timm)."""
    for owner in (visual, getattr(visual, "attnpool", None)):
        embedding = getattr(owner, "positional_embedding", None)
        if isinstance(embedding, torch.Tensor):
            return int(embedding.shape[0])
    return None
