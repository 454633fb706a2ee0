"""Cross-process negatives: gather embeddings from every rank, keeping gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from hysafe.utils.distributed import world_info

__all__ = ["world_info", "gather_with_grad"]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``(B, D)`` from all ranks along dim 0 -> ``(world * B, D)``.

    Gradients flow back to every rank's own slice (``torch.distributed.nn.all_gather``), so
    negatives from other processes shape this process's update. A no-op in one process.
    """
    _, world = world_info()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
