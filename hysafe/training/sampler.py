"""Deterministic, resumable batches split across processes."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[list[int]]):
    """Deterministic shuffled batches that can restart mid-epoch and split across ranks.

    Global batch ``b`` of epoch ``e`` is ``perm_e[b*G:(b+1)*G]`` with ``G = batch_size * world``;
    rank ``r`` takes its ``r``-th slice, so ``world`` processes see exactly the batches one process
    with ``batch_size * world`` would. Incomplete final batches are dropped (contrastive losses
    need equal batch sizes on every rank).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"dataset of {n} rows is smaller than one global batch ({batch_size} x {world} processes)"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        G = self.batch_size * self.world
        for b in range(self.start_batch, self.batches_per_epoch):
            start = b * G + self.rank * self.batch_size
            yield perm[start : start + self.batch_size]
