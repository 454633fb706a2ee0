"""The one reader of the distributed environment.

Two questions, one answer each: what the launcher says this process is (:func:`launch_env`:
torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, read before any process group exists, e.g.
to split a collection's chunks), and what the running process group is (:func:`world_info`: the
loss terms gather negatives over it). Training, collections and losses all ask here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch.distributed as dist

__all__ = ["ProcessEnv", "launch_env", "world_info"]


@dataclass(frozen=True)
class ProcessEnv:
    """This process's place among the launched ones: ``rank`` of ``world``, ``local_rank`` on its
    machine (the GPU it takes)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={raw!r} must be >= 0")
    return value


def launch_env(env: Mapping[str, str] = os.environ) -> ProcessEnv:
    """What the launcher (torchrun) says this process is; ``ProcessEnv(0, 1, 0)`` without one."""
    out = ProcessEnv(_env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0))
    if out.world < 1 or out.rank >= out.world:
        raise ValueError(f"RANK={out.rank} with WORLD_SIZE={out.world}: need 0 <= RANK < WORLD_SIZE")
    return out


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group; ``(0, 1)`` when torch.distributed is not
    initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
