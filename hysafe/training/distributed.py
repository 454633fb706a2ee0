"""Training across processes.

:func:`init_distributed` asks :mod:`hysafe.utils.distributed` (the one reader of the torchrun
environment) what this process is, picks its device, starts the process group when needed and
returns a :class:`DistributedContext` that the trainer passes on explicitly. (The loss terms gather
negatives over the same process group.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from ..models.backbone import check_device
from ..utils.distributed import launch_env, world_info

__all__ = ["DistributedContext", "init_distributed", "all_reduce_grads"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device, env: Mapping[str, str] = os.environ) -> DistributedContext:
    """Device and (rank, world size) of this process; one GPU per process under torchrun."""
    check_device(device)
    device = torch.device(device)
    launched = launch_env(env)
    world = launched.world
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", launched.local_rank)
        torch.cuda.set_device(device)
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = world_info()  # also right when the caller started the process group itself
    return DistributedContext(rank, world, device)


def all_reduce_grads(params: list[Tensor], world: int) -> None:
    """Average gradients over processes in one flat all-reduce (LoRA grads are small)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
