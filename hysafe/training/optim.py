"""Optimiser, learning-rate schedule, mixed precision and the optimiser step.

Parameter groups: AdamW/Adam with weight decay on weight matrices only; scalars (the HySAC logs),
biases and norms never decay. Optimiser name, decay and betas come from the recipe unless the
:class:`~hysafe.training.TrainConfig` overrides them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..models.backbone import autocast_dtype
from ..models.safety_model import SafetyModel, trainable_parameters
from .config import TrainConfig
from .distributed import all_reduce_grads
from .recipes import Recipe

__all__ = [
    "Optimization",
    "build_optimization",
    "fused_supported",
    "param_groups",
    "lr_lambda",
]


def _no_decay(name: str, p: Tensor) -> bool:
    return p.ndim < 2 or "log_" in name or "logit_scale" in name


def param_groups(model: SafetyModel, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and a never-decayed group (empty groups dropped)."""
    named = trainable_parameters(model)
    if not named:
        raise ValueError("the model has no trainable parameters (did you build it with lora=None?)")
    groups = [
        {"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def lr_lambda(warmup_steps: int, schedule: str, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 0 at ``total_steps`` (or constant)."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


@dataclass
class Optimization:
    """Everything that turns accumulated gradients into an update, and the resumable state of it."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    params: list[Tensor]
    max_grad_norm: float | None = None

    def backward(self, loss: Tensor, grad_accum: int) -> None:
        self.scaler.scale(loss / grad_accum).backward()

    def step(self, model: SafetyModel, world: int) -> float:
        """All-reduce (several processes), clip, step, schedule, clamp scalars; returns the lr used."""
        if world > 1:
            all_reduce_grads(self.params, world)
        if self.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        model.clamp_parameters_()
        return self.scheduler.get_last_lr()[0]


def fused_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam/AdamW kernel takes these parameters (floating point, on CPU or CUDA).
    It updates every tensor in one pass instead of ~8 elementwise passes: 2.4 vs 20.1 ms per step for
    the tiny CLIP's 3.3M pretraining weights on 2 CPU cores, the same update to float rounding."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def optimizer_settings(recipe: Recipe, cfg: TrainConfig) -> dict:
    """The optimiser a run uses: ``cfg``'s choices, else the recipe's."""
    return {
        "optimizer": cfg.optimizer or recipe.optimizer,
        "weight_decay": cfg.weight_decay if cfg.weight_decay is not None else recipe.weight_decay,
        "betas": list(cfg.betas or recipe.betas),
        "max_grad_norm": cfg.max_grad_norm,
    }


def build_optimization(
    model: SafetyModel, recipe: Recipe, cfg: TrainConfig, total_steps: int, device: torch.device
) -> Optimization:
    """Optimiser + schedule + scaler for ``total_steps`` optimiser steps."""
    settings = optimizer_settings(recipe, cfg)
    cls = torch.optim.AdamW if settings["optimizer"] == "adamw" else torch.optim.Adam
    groups = param_groups(model, settings["weight_decay"])
    optimizer = cls(
        groups,
        lr=cfg.lr,
        betas=tuple(settings["betas"]),
        fused=fused_supported([p for g in groups for p in g["params"]]),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.warmup_steps, cfg.schedule, total_steps)
    )
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Optimization(
        optimizer,
        scheduler,
        scaler,
        amp_dtype,
        [p for _, p in trainable_parameters(model)],
        cfg.max_grad_norm,
    )
