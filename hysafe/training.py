"""``hysafe.train(...)``: one training loop for HySAC, Safe-CLIP, SafeR-CLIP and CLIP pretraining.

Features: AdamW with no weight decay on scalars/biases/norms, warmup + cosine schedule, bf16/fp16
autocast (hyperbolic math stays fp32), gradient accumulation, DataLoader workers, progress bar,
per-term JSONL logs (TensorBoard optional), validation recall each epoch with early stopping and
best-checkpoint selection, atomic training-state checkpoints every N steps with exact resume
(model, optimiser, scheduler, scaler, sampler position, RNG), and multi-process training under
``torchrun`` (gradient all-reduce + cross-process negatives in the contrastive terms).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from hysafe.geometry import validation as geometry_validation
from hysafe.losses import LossContext, Objective, get_objective, world_info

from .checkpoint import atomic_save_file, save_model
from .data.dataset import QuadrupletDataset
from .data.manifest import Quadruplet, load_manifest
from .embed import embed_dataset, embed_quadruplets
from .metrics import recall_at_k
from .models import SafetyModel, create_model, trainable_parameters

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "compute_loss", "safety_bounds", "validation_recalls", "nearest_safe_targets"]

DEFAULT_OBJECTIVE = {"hysac": "hysac", "safeclip": "safeclip", "clip": "clip-pretrain"}


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: HySAC reference code, batch sized for one GPU)."""

    epochs: int = 20
    batch_size: int = 32  # per process; the global batch is batch_size * world_size
    lr: float = 1e-4
    weight_decay: float = 0.2  # not applied to scalars, biases and norms
    betas: tuple[float, float] = (0.9, 0.98)
    optimizer: str = "adamw"  # "adamw" or "adam" (Safe-CLIP's choice)
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" or "constant" after warmup
    grad_accum: int = 1
    max_grad_norm: float | None = None
    precision: str = "fp32"  # "fp32", "bf16", "fp16" or "auto" (bf16 on capable GPUs)
    num_workers: int = 0
    seed: int = 0
    aperture_scale: float = 1.0  # entailment cones
    min_radius: float = 0.1
    output_dir: str | None = None  # logs and checkpoints; None keeps everything in memory
    checkpoint_every: int | None = None  # optimiser steps between training-state checkpoints
    resume: bool = True  # continue from output_dir/last.safetensors when present
    validate: bool = True
    early_stopping_patience: int | None = None  # epochs without a better validation recall sum
    eval_batch_size: int = 256
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    device: str | None = None  # default: the model's device

    def __post_init__(self):
        self.betas = tuple(self.betas)
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr > 0,
            "precision": self.precision in ("fp32", "bf16", "fp16", "auto"),
            "optimizer": self.optimizer in ("adamw", "adam"),
            "schedule": self.schedule in ("cosine", "constant"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig field(s) {bad}: {[getattr(self, k) for k in bad]}")


@dataclass
class TrainResult:
    model: SafetyModel
    history: list[dict] = field(default_factory=list)  # one dict per validation (epoch)
    best_score: float | None = None
    best_checkpoint: Path | None = None
    bounds: dict | None = None
    steps: int = 0
    seconds: float = 0.0


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
            raise ValueError(f"dataset of {n} rows is smaller than one global batch ({batch_size} x {world} processes)")

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


def _maybe_init_distributed(device: torch.device) -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world_info()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _no_decay(name: str, p: Tensor) -> bool:
    return p.ndim < 2 or "log_" in name or "logit_scale" in name


def _make_optimizer(model: SafetyModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    named = trainable_parameters(model)
    if not named:
        raise ValueError("the model has no trainable parameters (did you build it with lora=None?)")
    decay = [p for n, p in named if not _no_decay(n, p)]
    no_decay = [p for n, p in named if _no_decay(n, p)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _loss_context(model: SafetyModel, objective: Objective, cfg: TrainConfig) -> LossContext:
    scale = objective.fixed_logit_scale if objective.fixed_logit_scale is not None else model.logit_scale
    curv = model.curv if objective.geometry == "lorentz" else None
    return LossContext(objective.geometry, scale, curv, cfg.aperture_scale, cfg.min_radius)


def compute_loss(model: SafetyModel, objective: Objective, batch: dict[str, Tensor], cfg: TrainConfig,
                 amp_dtype: torch.dtype | None = None) -> tuple[Tensor, dict[str, float]]:
    """Forward pass of one training step: batched embeddings (autocast when ``amp_dtype``) and the
    objective's weighted total with per-term values."""
    device_type = batch[next(iter(batch))].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        emb = embed_quadruplets(model, batch, objective.inputs)
        return objective(emb, _loss_context(model, objective, cfg))


# ----------------------------------------------------------------------------------- state I/O


def _state_tensors(model, optimizer, scaler) -> dict[str, Tensor]:
    tensors = {f"model/{n}": p for n, p in trainable_parameters(model)}
    for idx, state in optimizer.state_dict()["state"].items():
        for k, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"optim/{idx}/{k}"] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors


def _save_training_state(path: Path, model, optimizer, scheduler, scaler, progress: dict) -> None:
    opt_sd = optimizer.state_dict()
    scalars = {str(i): {k: v for k, v in s.items() if not isinstance(v, Tensor)} for i, s in opt_sd["state"].items()}
    np_state = np.random.get_state()
    meta = {
        "progress": progress,
        "optimizer_groups": opt_sd["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    atomic_save_file(_state_tensors(model, optimizer, scaler), path, {"hysafe_train_state": json.dumps(meta, default=float)})


def _load_training_state(path: Path, model, optimizer, scheduler, scaler) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("hysafe_train_state")
    if raw is None:
        raise ValueError(f"{path}: not a hysafe training-state checkpoint")
    meta = json.loads(raw)
    tensors = load_file(str(path))
    params = dict(trainable_parameters(model))
    missing = {f"model/{n}" for n in params} - set(tensors)
    if missing:
        raise ValueError(f"{path}: training state does not match the model (missing {sorted(missing)[:3]}...)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"model/{n}"])
    state = {}
    for idx, scal in meta["optimizer_scalars"].items():
        s = dict(scal)
        for k in [key.split("/")[2] for key in tensors if key.startswith(f"optim/{idx}/")]:
            s[k] = tensors[f"optim/{idx}/{k}"]
        state[int(idx)] = s
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    if scaler is not None and meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = meta["numpy_rng"]
    np.random.set_state((npr[0], np.array(npr[1], dtype=np.uint32), *npr[2:]))
    return meta["progress"]


# ------------------------------------------------------------------------------ data helpers


def _as_dataset(data, model: SafetyModel, split: str, preload: bool):
    from .features import FeatureDataset

    if data is None or isinstance(data, (QuadrupletDataset, FeatureDataset)):
        return data
    if isinstance(data, (str, Path)):
        try:
            rows = load_manifest(data, split=split)
        except ValueError as e:
            if split == "validation" and "no usable rows" in str(e):
                return None
            raise
    elif isinstance(data, Sequence) and data and isinstance(data[0], Quadruplet):
        rows = [r for r in data if r.split == split] or (list(data) if split == "train" else [])
        if not rows:
            return None
    else:
        raise TypeError(f"data must be a QuadrupletDataset, a manifest path or a list of Quadruplet, got {type(data).__name__}")
    return QuadrupletDataset(rows, preprocess=model.preprocess, tokenizer=model.tokenizer, preload=preload)


@torch.no_grad()
def nearest_safe_targets(model: SafetyModel, dataset: QuadrupletDataset, *, batch_size: int = 512) -> list[int]:
    """SafeR-CLIP's proximal targets: for each unsafe caption, the row of the most similar safe
    caption under the *frozen* text tower (cosine), computed once before training."""
    encode = model.encode_text_ref if hasattr(model, "encode_text_ref") else model.encode_text
    dev = model.device
    safe = torch.cat([encode(dataset.safe_tokens[i : i + batch_size].to(dev)) for i in range(0, len(dataset), batch_size)])
    unsafe = torch.cat([encode(dataset.unsafe_tokens[i : i + batch_size].to(dev)) for i in range(0, len(dataset), batch_size)])
    safe, unsafe = torch.nn.functional.normalize(safe.float(), dim=-1), torch.nn.functional.normalize(unsafe.float(), dim=-1)
    return torch.cat([(unsafe[i : i + batch_size] @ safe.T).argmax(1) for i in range(0, len(unsafe), batch_size)]).tolist()


def _with_targets(dataset: QuadrupletDataset, targets: list[int]) -> QuadrupletDataset:
    clone = object.__new__(QuadrupletDataset)
    clone.__dict__.update(dataset.__dict__)
    clone.targets = torch.as_tensor(targets, dtype=torch.long)
    return clone


# ------------------------------------------------------------------------------- evaluation


def validation_recalls(model: SafetyModel, dataset: QuadrupletDataset, *, batch_size: int = 256, ks=(1, 5, 10)) -> dict:
    """Safe retrieval recalls (T->V, V->T) on a validation set and their sum (model selection)."""
    emb = embed_dataset(model, dataset, batch_size=batch_size)
    space, out = model.space, {}
    idx = torch.arange(len(dataset))
    if "V" in emb:
        for name, (q, g) in {"T->V": (emb["T"], emb["V"]), "V->T": (emb["V"], emb["T"])}.items():
            for k, v in recall_at_k(q, g, idx, space, ks).items():
                out[f"{name} R@{k}"] = v
    else:  # text-only data: safe/unsafe caption retrieval
        for k, v in recall_at_k(emb["T*"], emb["T"], idx, space, ks).items():
            out[f"T*->T R@{k}"] = v
    out["recall_sum"] = sum(out.values())
    return out


def _stats(d: Tensor) -> dict[str, float]:
    return {
        "avg": d.mean().item(),
        "low_05": torch.quantile(d, 0.05).item(),
        "up_95": torch.quantile(d, 0.95).item(),
    }


def safety_bounds(model: SafetyModel, dataset: QuadrupletDataset, *, batch_size: int = 256) -> dict:
    """Distance-to-root statistics per population: ``V`` safe image, ``S`` safe text, ``G`` unsafe
    image, ``U`` unsafe text; each ``{"avg", "low_05", "up_95"}`` (the paper's bounds)."""
    emb = embed_dataset(model, dataset, batch_size=batch_size)
    names = {"S": "T", "U": "T*", "V": "V", "G": "V*"}
    return {key: _stats(model.space.dist_to_root(emb[name])) for key, name in names.items() if name in emb}


# ------------------------------------------------------------------------------------ train


def train(
    model: SafetyModel | str,
    data,
    objective: str | Objective | None = None,
    config: TrainConfig | None = None,
    *,
    val_data=None,
    callbacks: Sequence[Callable[[dict], None]] = (),
    **model_kwargs,
) -> TrainResult:
    """Train ``model`` on quadruplets with ``objective``.

    ``model``: a :class:`~hysafe.models.SafetyModel`, or a kind (``"hysac"``, ``"safeclip"``) built
    with :func:`~hysafe.models.create_model` and ``model_kwargs`` (``model=``, ``pretrained=``, ...).
    ``data``: a :class:`~hysafe.data.QuadrupletDataset`, a manifest path (its ``train`` split; its
    ``validation`` split is used for validation unless ``val_data`` is given), or a list of rows.
    ``objective``: ``"hysac"``, ``"safeclip"``, ``"safer-clip"``, ``"clip-pretrain"`` or an
    :class:`~hysafe.losses.Objective`; default from the model kind.
    ``callbacks`` receive a dict after every optimiser step (step, epoch, losses).
    """
    cfg = config or TrainConfig()
    if isinstance(model, str):
        model = create_model(model, **model_kwargs)
    objective = get_objective(objective or DEFAULT_OBJECTIVE[model.kind])
    device = torch.device(cfg.device) if cfg.device else model.device
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per torchrun process
        torch.cuda.set_device(device)
    model.to(device)
    rank, world = _maybe_init_distributed(device)
    is_main = rank == 0
    if objective.geometry == "lorentz" and model.kind != "hysac":
        raise ValueError(f"objective {objective.name!r} needs a HySAC model, got {model.kind!r}")
    if objective.needs_reference and not hasattr(model, "encode_image_ref"):
        raise ValueError(f"objective {objective.name!r} needs a frozen reference (a SafeCLIP model), got {model.kind!r}")

    _seed_everything(cfg.seed)
    preload = cfg.num_workers == 0
    train_set = _as_dataset(data, model, "train", preload)
    val_source = val_data if val_data is not None else (data if isinstance(data, (str, Path)) else None)
    val_set = _as_dataset(val_source, model, "validation", preload) if cfg.validate else None
    if objective.inputs & {"T0^", "V0^"}:
        if not isinstance(train_set, QuadrupletDataset):
            raise ValueError(f"objective {objective.name!r} needs captions to pick proximal targets; cached features carry none")
        train_set = _with_targets(train_set, nearest_safe_targets(model, train_set))
    if not train_set.has_images and objective.inputs & {"V", "V*", "V0", "V0*", "V0^"}:
        raise ValueError(f"objective {objective.name!r} needs images, but the training rows are text-only")

    sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, seed=cfg.seed, rank=rank, world=world)
    steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"grad_accum={cfg.grad_accum} exceeds the {sampler.batches_per_epoch} batches of an epoch")
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))
    amp_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    params = [p for _, p in trainable_parameters(model)]

    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    last_path = out_dir / "last.safetensors" if out_dir else None
    best_path = out_dir / "best.safetensors" if out_dir else None
    progress = {"epoch": 0, "batch": 0, "step": 0, "best": None, "bad_epochs": 0, "history": []}
    if out_dir and cfg.resume and last_path.is_file():
        progress = _load_training_state(last_path, model, optimizer, scheduler, scaler)
        logger.info("resumed from %s at epoch %d, step %d", last_path, progress["epoch"], progress["step"])
    if out_dir and is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_file = (out_dir / "log.jsonl").open("a") if out_dir and is_main else None
    if out_dir and is_main:
        (out_dir / "config.json").write_text(json.dumps({"train": asdict(cfg), "objective": objective.name}, indent=2, default=str))
    tb = _tensorboard(out_dir) if cfg.tensorboard and out_dir and is_main else None
    best_state = {n: p.detach().clone() for n, p in trainable_parameters(model)} if progress["best"] is None else None

    def save_state():
        if last_path is not None and is_main:
            _save_training_state(last_path, model, optimizer, scheduler, scaler, progress)

    start_time = time.time()
    model.train()
    try:
        with geometry_validation(False):  # no per-call finiteness syncs in the hot loop
            for epoch in range(progress["epoch"], cfg.epochs):
                sampler.set_epoch(epoch, progress["batch"] if epoch == progress["epoch"] else 0)
                loader = DataLoader(
                    train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                    generator=torch.Generator().manual_seed(cfg.seed + epoch), persistent_workers=False,
                )
                bar = tqdm(loader, desc=f"{objective.name} epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and is_main), leave=False)
                micro = 0
                for batch in bar:
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    loss, logs = compute_loss(model, objective, batch, cfg, amp_dtype)
                    scaler.scale(loss / cfg.grad_accum).backward()
                    micro += 1
                    progress["batch"] += 1
                    if micro % cfg.grad_accum:
                        continue
                    if world > 1:
                        _all_reduce_grads(params, world)
                    if cfg.max_grad_norm:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    model.clamp_parameters_()
                    progress["step"] += 1
                    record = {"step": progress["step"], "epoch": epoch, "lr": scheduler.get_last_lr()[0], **logs}
                    bar.set_postfix(loss=f"{logs['total']:.3f}")
                    if log_file and progress["step"] % cfg.log_every == 0:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        if tb:
                            for k, v in logs.items():
                                tb.add_scalar(f"train/{k}", v, progress["step"])
                    if cfg.checkpoint_every and progress["step"] % cfg.checkpoint_every == 0:
                        save_state()
                    for cb in callbacks:
                        cb(record)
                progress["epoch"], progress["batch"] = epoch + 1, 0
                stop = False
                if val_set is not None:
                    model.eval()
                    metrics = {"epoch": epoch + 1, "step": progress["step"], **validation_recalls(model, val_set, batch_size=cfg.eval_batch_size)}
                    model.train()
                    progress["history"].append(metrics)
                    logger.info("epoch %d validation: %s", epoch + 1, {k: round(v, 2) for k, v in metrics.items()})
                    if log_file:
                        log_file.write(json.dumps({"validation": metrics}) + "\n")
                        log_file.flush()
                    if progress["best"] is None or metrics["recall_sum"] > progress["best"]:
                        progress["best"], progress["bad_epochs"] = metrics["recall_sum"], 0
                        best_state = {n: p.detach().clone() for n, p in trainable_parameters(model)}
                        if best_path and is_main:
                            _save_best(model, best_path, extra={"epoch": epoch + 1, "validation": metrics})
                    else:
                        progress["bad_epochs"] += 1
                        stop = cfg.early_stopping_patience is not None and progress["bad_epochs"] >= cfg.early_stopping_patience
                else:
                    best_state = {n: p.detach().clone() for n, p in trainable_parameters(model)}
                save_state()
                if stop:
                    logger.info("early stopping after epoch %d (no improvement for %d epochs)", epoch + 1, progress["bad_epochs"])
                    break
    finally:
        if log_file:
            log_file.close()
        if tb:
            tb.close()
    # best weights back into the model; bounds from the validation split (else the training split)
    if best_state is not None:
        with torch.no_grad():
            for n, p in trainable_parameters(model):
                p.copy_(best_state[n])
    model.eval()
    bounds = safety_bounds(model, val_set or train_set, batch_size=cfg.eval_batch_size)
    model.bounds = bounds
    if best_path and is_main:
        _save_best(model, best_path, extra={"best_validation_recall_sum": progress["best"]})
    return TrainResult(
        model=model,
        history=progress["history"],
        best_score=progress["best"],
        best_checkpoint=best_path if best_path and best_path.is_file() else None,
        bounds=bounds,
        steps=progress["step"],
        seconds=time.time() - start_time,
    )


def _save_best(model: SafetyModel, path: Path, extra: dict) -> None:
    from .features import FeatureHead, save_head

    if isinstance(model, FeatureHead):
        save_head(model, path)
        return
    # models trained from random init cannot be rebuilt from an adapter: store them merged
    merged = model.config.backbone.pretrained is None or model.peft is None
    save_model(model, path, merged=merged, bounds=model.bounds, extra=extra)


def _all_reduce_grads(params: list[Tensor], world: int) -> None:
    """Average gradients over processes in one flat all-reduce (LoRA grads are small)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard requested but not installed (pip install hysafe[tensorboard]); skipping")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
