"""LoRA input dropout that draws only the dropped positions (CPU).

torch's CPU dropout draws one Bernoulli variate per element (~9 ns each on a 2-core Xeon, whatever the dtype),
which made the reference's LoRA dropout (p = 0.1 on every adapted layer's input) 24% of a ViT-B/32 bf16 step
at batch 32 (docs/benchmarks.md). For a small p most of those draws say "keep". :func:`dropped_positions`
draws the gaps between dropped elements instead: i.i.d. geometric variates ``floor(log(1 - U) / log(1 - p))``
from float64 uniforms, about ``p * numel`` of them, so every element is dropped independently with probability
p (to float64 rounding), from torch's generator (``torch.manual_seed`` reproduces it). :class:`SparseDropout`
is ``nn.Dropout`` with that mask on CPU tensors for ``p <= MAX_SPARSE_P`` (beyond it the gaps stop paying) and
torch's own dropout otherwise (CUDA's is one fused kernel); the backward pass keeps only the positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_SPARSE_P = 0.25  # above this, drawing the gaps costs about as much as one Bernoulli draw per element
CHUNK_SIGMAS = 6.0  # gaps drawn at once: the expected number of drops plus this many standard deviations ...
CHUNK_EXTRA = 16  # ... plus this many (a short draw is topped up in a loop, so these only set the speed)


def dropped_positions(numel: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted flat indices in ``[0, numel)``, each index present independently with probability ``p``."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0 or numel == 0:
        return torch.empty(0, dtype=torch.int64)
    log_keep = math.log1p(-p)
    parts, start = [], 0
    while start < numel:
        expected = (numel - start) * p
        u = torch.rand(
            int(expected + CHUNK_SIGMAS * math.sqrt(expected)) + CHUNK_EXTRA,
            dtype=torch.float64,
            generator=generator,
        )
        # geometric, P(>= k) = (1-p)^k
        kept_run = torch.floor(u.neg_().log1p_().div_(log_keep)).clamp_(max=numel)
        steps = kept_run.to(torch.int64).add_(1)  # the kept run and the drop after it
        positions = torch.cumsum(steps, 0).add_(start - 1)
        parts.append(positions)
        start = int(positions[-1]) + 1
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions[: int(torch.searchsorted(positions, numel))]  # sorted: the ones in range are a prefix


class _ZeroAt(torch.autograd.Function):
    """``x * scale`` with the given flat positions zeroed, in both passes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return _scaled_zeroed(x, positions, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positions,) = ctx.saved_tensors
        return _scaled_zeroed(grad, positions, ctx.scale), None, None


def _scaled_zeroed(x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
    out = x.mul(scale).contiguous()
    out.view(-1).index_fill_(0, positions, 0)
    return out


@torch.compiler.disable  # data-dependent sizes: runs eagerly inside a compiled step, with the same draws
def sparse_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout of a CPU tensor (kept elements scaled by 1 / (1 - p)) with
    :func:`dropped_positions`."""
    if p == 0:
        return x
    return _ZeroAt.apply(x, dropped_positions(x.numel(), p, generator), 1.0 / (1.0 - p))


class SparseDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks come from :func:`dropped_positions` (same distribution, for small p)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0 < self.p <= MAX_SPARSE_P or x.device.type != "cpu":
            return super().forward(x)
        return sparse_dropout(x, self.p)


def use_sparse_dropout(model: nn.Module, enable: bool = True) -> int:
    """Give every peft LoRA layer of ``model`` a :class:`SparseDropout` (``enable``) or torch's ``nn.Dropout``
    back (the reference loop's), same ``p``; returns how many were replaced."""
    old, new = (nn.Dropout, SparseDropout) if enable else (SparseDropout, nn.Dropout)
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is old:
                dropouts[name] = new(dropout.p)
                replaced += 1
    return replaced
