"""Training configuration and result.

Every field carries its help text in ``metadata``: the ``hysafe train`` options are generated
from these fields (:mod:`hysafe.cli.options`), so each default exists once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..models.safety_model import SafetyModel

__all__ = ["TrainConfig", "TrainResult"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SELECTIONS = ("auto", "recall", "safety")


def _opt(help: str, **cli) -> dict:
    return {"help": help, **cli}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: HySAC reference code, batch sized for one GPU).

    The optimiser, its weight decay and betas come from the recipe
    (:func:`~hysafe.training.recipes.get_recipe`) unless set here.
    """

    epochs: int = field(default=20, metadata=_opt("training epochs"))
    batch_size: int = field(
        default=32, metadata=_opt("quadruplets per step and process (global batch = batch size x processes)")
    )
    lr: float = field(default=1e-4, metadata=_opt("peak learning rate"))
    optimizer: str | None = field(
        default=None, metadata=_opt("'adamw' or 'adam' (default: the recipe's)", choices=("adamw", "adam"))
    )
    weight_decay: float | None = field(
        default=None,
        metadata=_opt("decoupled weight decay, never on scalars/biases/norms (default: the recipe's)"),
    )
    betas: tuple[float, float] | None = field(
        default=None, metadata=_opt("Adam betas (default: the recipe's)", cli=None)
    )
    warmup_steps: int = field(default=0, metadata=_opt("linear warm-up steps"))
    schedule: str = field(
        default="cosine",
        metadata=_opt("learning-rate schedule after warm-up", choices=("cosine", "constant")),
    )
    grad_accum: int = field(default=1, metadata=_opt("micro-batches accumulated per optimiser step"))
    max_grad_norm: float | None = field(default=None, metadata=_opt("clip the gradient norm to this value"))
    precision: str = field(
        default="fp32",
        metadata=_opt(
            "autocast precision (auto: bf16 on capable GPUs); hyperbolic math stays fp32", choices=PRECISIONS
        ),
    )
    compile: str | None = field(
        default=None,
        metadata=_opt(
            "torch.compile the forward pass and loss with this backend "
            "('inductor': fused kernels; the first steps compile)",
            choices=("inductor", "aot_eager", "eager"),
        ),
    )
    grad_checkpointing: bool = field(
        default=False,
        metadata=_opt(
            "recompute the transformer blocks' activations in the backward pass: "
            "memory for larger batches, ~1/3 more compute"
        ),
    )
    num_workers: int = field(
        default=0, metadata=_opt("DataLoader worker processes (0 preloads images once)", cli="--workers")
    )
    seed: int = field(default=0, metadata=_opt("seed of shuffling, dropout and initialisation"))
    output_dir: str | None = field(
        default=None,
        metadata=_opt(
            "run folder: log.jsonl, config.json, last.safetensors (resume), best.safetensors", cli="--out"
        ),
    )
    checkpoint_every: int | None = field(
        default=200,
        metadata=_opt(
            "optimiser steps between resumable training-state checkpoints (also written after every epoch)"
        ),
    )
    resume: bool = field(
        default=True, metadata=_opt("continue from the run folder's last.safetensors when present")
    )
    validate: bool = field(
        default=True, metadata=_opt("validation recall after every epoch (model selection, early stopping)")
    )
    select: str = field(
        default="auto",
        metadata=_opt(
            "model selection score: 'recall' (validation T->V + V->T recall sum) "
            "or 'safety' (that sum x the root-distance "
            "ordering, 2 ROC-AUC - 1, averaged over text and images; hyperbolic "
            "models); 'auto': safety for HySAC",
            choices=SELECTIONS,
        ),
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_opt("stop after this many epochs without a better selection score", cli="--patience"),
    )
    eval_batch_size: int = field(default=256, metadata=_opt("batch size of validation and bounds"))
    log_every: int = field(default=10, metadata=_opt("optimiser steps between log.jsonl records"))
    tensorboard: bool = field(
        default=False, metadata=_opt("also write TensorBoard scalars (pip install hysafe[tensorboard])")
    )
    progress: bool = field(default=True, metadata=_opt("progress bars"))
    device: str | None = field(
        default=None,
        metadata=_opt(
            "device to train on (default: the model's; under torchrun, cuda gives one GPU per process)"
        ),
    )

    def __post_init__(self):
        if self.betas is not None:
            self.betas = tuple(self.betas)
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": _finite(self.lr) and self.lr > 0,
            "max_grad_norm": self.max_grad_norm is None
            or (_finite(self.max_grad_norm) and self.max_grad_norm > 0),
            "log_every": self.log_every >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "num_workers": self.num_workers >= 0,
            "warmup_steps": self.warmup_steps >= 0,
            "early_stopping_patience": self.early_stopping_patience is None
            or self.early_stopping_patience >= 1,
            "precision": self.precision in PRECISIONS,
            "optimizer": self.optimizer in (None, "adamw", "adam"),
            "schedule": self.schedule in ("cosine", "constant"),
            "select": self.select in SELECTIONS,
            "compile": self.compile in (None, "inductor", "aot_eager", "eager"),
            "weight_decay": self.weight_decay is None or self.weight_decay >= 0,
            "checkpoint_every": self.checkpoint_every is None or self.checkpoint_every >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            named = ", ".join(f"{k}={getattr(self, k)!r} (--{k.replace('_', '-')})" for k in bad)
            raise ValueError(f"invalid TrainConfig field(s): {named}")


@dataclass
class TrainResult:
    model: SafetyModel
    history: list[dict] = field(default_factory=list)  # one dict per validation (epoch)
    best_score: float | None = None  # the selection score of the kept weights (TrainConfig.select)
    best_checkpoint: Path | None = None
    bounds: dict | None = None
    steps: int = 0
    seconds: float = 0.0
    #: epochs an earlier run of the same command had finished (resumed from its run folder): ``seconds``
    #: covers only the rest, so a fully reused run's seconds are the time to load it, not to train it
    reused_epochs: int = 0
