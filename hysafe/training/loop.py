"""``hysafe.train``: the loop, top to bottom. Each piece it calls has a module of its own:
datasets (:mod:`.data`), batches (:mod:`.sampler`), processes (:mod:`.distributed`), optimiser
and precision (:mod:`.optim`), resume (:mod:`.state`), selection and bounds (:mod:`.validation`),
logs (:mod:`.logs`); what to optimise comes from the recipe (:mod:`hysafe.training.recipes`).
(Over 300 lines: the step, the epoch, resume and the finish, read in the order they run.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from hysafe.geometry import validation as geometry_validation
from hysafe.losses import Objective

from ..models.checkpoint import read_metadata
from ..models.embed import embed_quadruplets
from ..models.safety_model import SafetyModel, create_model, trainable_parameters
from ..utils.progress import bar, report
from .config import TrainConfig, TrainResult
from .data import training_datasets
from .distributed import DistributedContext, init_distributed
from .logs import RunLog
from .optim import Optimization, build_optimization, optimizer_settings
from .radius_probe import check_probe_data, fit_probe_radius, needs_probe_fit
from .recipes import Recipe, as_recipe
from .run_folder import locked_run_folder
from .sampler import ResumableBatchSampler
from .state import load_training_state, new_progress, run_fingerprint, save_training_state
from .validation import BestWeights, check_select, safety_bounds, save_best, validation_recalls

logger = logging.getLogger(__name__)

__all__ = ["train", "compute_loss"]


def compute_loss(
    model: SafetyModel, objective: Objective, batch: dict[str, Tensor], amp_dtype: torch.dtype | None = None
) -> tuple[Tensor, Mapping[str, float]]:
    """Forward pass of one training step: batched embeddings (autocast when ``amp_dtype``) and the
    objective's weighted total with per-term values, in the model's live space."""
    device_type = batch[next(iter(batch))].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        emb = embed_quadruplets(model, batch, objective.inputs)
        return objective(emb, model.live_space, model.logit_scale)


@contextlib.contextmanager
def grad_checkpointing(model: SafetyModel, enable: bool):
    """Activation checkpointing of the backbone while training (off again afterwards)."""
    if not enable:
        yield
        return
    model.backbone.set_grad_checkpointing(True)
    try:
        yield
    finally:
        model.backbone.set_grad_checkpointing(False)


@contextlib.contextmanager
def compiled_loss(model: SafetyModel, backend: str | None):
    """:func:`compute_loss` compiled with ``backend`` (itself when ``None``).

    peft's LoRA on ``nn.MultiheadAttention`` adds the adapter to the attention weights and takes
    it off again inside every forward (module attributes swapped, which torch.compile cannot
    capture): those modules run eagerly while compiling, the rest of the step is compiled."""
    if backend is None:
        yield compute_loss
        return
    from peft.tuners.lora.layer import MultiheadAttention as LoraAttention

    eager = [m for m in model.modules() if isinstance(m, LoraAttention)]
    for m in eager:
        m.forward = torch.compiler.disable(m.forward)
    try:
        yield torch.compile(compute_loss, backend=backend)
    finally:
        for m in eager:
            del m.forward  # back to the class's method


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (model creation, LoRA init, dropout, sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainingRun:
    """The fixed parts of one run and its mutable ``progress`` (what :mod:`.state` saves)."""

    model: SafetyModel
    objective: Objective
    opt: Optimization
    data: Dataset
    sampler: ResumableBatchSampler
    cfg: TrainConfig
    dist: DistributedContext
    folder: Path | None
    best: BestWeights
    fingerprint: dict
    callbacks: Sequence[Callable[[dict], None]] = ()
    progress: dict = field(default_factory=new_progress)
    loss_fn: Callable[..., tuple[Tensor, Mapping[str, float]]] = (
        compute_loss  # compiled when TrainConfig.compile
    )

    def save_state(self) -> None:
        if self.folder is not None and self.dist.is_main:
            save_training_state(
                self.folder / "last.safetensors",
                self.model,
                self.opt,
                self.progress,
                best=self.best.weights,
                fingerprint=self.fingerprint,
            )

    def resume(self) -> None:
        """Continue from the run folder's state when there is one (and resuming is on)."""
        last = self.folder / "last.safetensors" if self.folder else None
        best = None
        if self.cfg.resume and last is not None and last.is_file():
            self.progress, best = load_training_state(last, self.model, self.opt, self.fingerprint)
            logger.info(
                "resumed from %s at epoch %d, step %d", last, self.progress["epoch"], self.progress["step"]
            )
        self.best.start(self.model, self.progress, best)

    def fit(self, val_set: Dataset | None, log: RunLog) -> bool:
        """Epochs from where the progress stands to the end (or early stopping); returns whether
        any epoch ran (a finished run re-run with the same command runs none)."""
        if self.progress["epoch"] >= self.cfg.epochs:
            return False
        self.model.train()
        for epoch in range(self.progress["epoch"], self.cfg.epochs):
            self.run_epoch(epoch, log)
            stop = self.best.update(self.model, self.validate(val_set, log), epoch + 1)
            self.save_state()
            if stop:
                logger.info(
                    "early stopping after epoch %d (no improvement for %d epochs)",
                    epoch + 1,
                    self.progress["bad_epochs"],
                )
                break
        return True

    def run_epoch(self, epoch: int, log: RunLog) -> None:
        """One pass over the (remaining) batches of ``epoch``."""
        cfg, p = self.cfg, self.progress
        self.sampler.set_epoch(epoch, p["batch"] if epoch == p["epoch"] else 0)
        loader = DataLoader(
            self.data,
            batch_sampler=self.sampler,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
            persistent_workers=False,
        )
        shown = cfg.progress and self.dist.is_main
        batches = bar(loader, desc=f"{self.objective.name} epoch {epoch + 1}/{cfg.epochs}", enabled=shown)
        start, losses = time.time(), {"total": float("nan")}
        for micro, batch in enumerate(batches, start=1):
            batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}
            try:
                loss, losses = self.loss_fn(self.model, self.objective, batch, self.opt.amp_dtype)
            except ValueError as e:  # a diverged model fails a geometry check (curv NaN) here
                self._check_diverged(epoch, e)
                raise
            self.opt.backward(loss, cfg.grad_accum)
            p["batch"] += 1
            if micro % cfg.grad_accum == 0:
                self._after_step(epoch, self.opt.step(self.model, self.dist.world), losses, log)
                if shown and p["step"] % cfg.log_every == 0:  # reading a loss waits for the device
                    batches.set_postfix(loss=f"{losses['total']:.3f}")
        p["epoch"], p["batch"] = epoch + 1, 0
        self._check_diverged(epoch, None, losses["total"])
        report(
            shown,
            "%s epoch %d/%d: step %d, loss %.4f, %.1f s",
            self.objective.name,
            epoch + 1,
            cfg.epochs,
            p["step"],
            losses["total"],
            time.time() - start,
        )

    def _check_diverged(self, epoch: int, cause: Exception | None, loss: float = 0.0) -> None:
        """Stop with a named cause when the weights or the loss are no longer finite (a learning rate
        far too high): before any NaN weights are validated or saved as the best."""
        bad = [n for n, t in trainable_parameters(self.model) if not bool(torch.isfinite(t).all())]
        if bad or not math.isfinite(float(loss)):
            what = f"{len(bad)} weight tensor(s) ({bad[0]}, ...)" if bad else f"the loss ({loss})"
            raise ValueError(
                f"training diverged in epoch {epoch + 1} (step {self.progress['step']}): {what} not finite; "
                f"lower --lr (now {self.cfg.lr:g}) or set --max-grad-norm; the best weights so far are kept"
            ) from cause

    def _after_step(self, epoch: int, lr: float, losses: Mapping[str, float], log: RunLog) -> None:
        """Count the step; log, checkpoint and call back. Loss values are read (one device sync)
        only on logged steps or when there are callbacks."""
        p, cfg = self.progress, self.cfg
        p["step"] += 1
        logged = p["step"] % cfg.log_every == 0
        record = {"step": p["step"], "epoch": epoch, "lr": lr, **losses} if logged or self.callbacks else None
        if logged:
            log.step(record, dict(losses))
        if cfg.checkpoint_every and p["step"] % cfg.checkpoint_every == 0:
            self.save_state()
        for cb in self.callbacks:
            cb(record)

    def validate(self, val_set: Dataset | None, log: RunLog) -> dict | None:
        if val_set is None:
            return None
        self.model.eval()
        recalls = validation_recalls(
            self.model, val_set, batch_size=self.cfg.eval_batch_size, select=self.cfg.select
        )
        self.model.train()
        metrics = {"epoch": self.progress["epoch"], "step": self.progress["step"], **recalls}
        self.progress["history"].append(metrics)
        logger.info("epoch %d validation: %s", metrics["epoch"], {k: round(v, 2) for k, v in metrics.items()})
        log.validation(metrics)
        return metrics


#: training rows that set a fresh run's data-dependent initial scales (the first ones: every process the same)
CALIBRATION_ROWS = 256


def calibrate(model: SafetyModel, train_set) -> None:
    """Data-dependent initial scales of a fresh run, for models that have them (:meth:`HySAC.calibrate`)."""
    if not hasattr(model, "calibrate"):
        return
    rows = min(CALIBRATION_ROWS, len(train_set))
    batch = default_collate([train_set[i] for i in range(rows)])
    changed = model.calibrate({k: v.to(model.device) for k, v in batch.items() if isinstance(v, Tensor)})
    if changed:
        logger.info("initial scales from the first %d training rows: %s", rows, changed)


def train(
    model: SafetyModel | str,
    /,
    data,
    recipe: str | Recipe | Objective | None = None,
    config: TrainConfig | None = None,
    *,
    val_data=None,
    callbacks: Sequence[Callable[[dict], None]] = (),
    **model_kwargs,
) -> TrainResult:
    """Train ``model`` on quadruplets with a recipe (:func:`~hysafe.training.recipes.get_recipe`).

    ``model``: a :class:`~hysafe.models.SafetyModel`, or a kind (``"hysac"``, ``"safeclip"``) built
    with :func:`~hysafe.models.create_model` and ``model_kwargs`` (``model=``, ``pretrained=``, ...;
    ``model`` is positional-only here, so that ``model=`` names the open_clip architecture).
    ``data``: a dataset (:class:`~hysafe.data.QuadrupletDataset`,
    :class:`~hysafe.models.features.FeatureDataset`),
    a manifest path (its ``train`` split; its ``validation`` split validates unless ``val_data``
    is given), or a list of rows. ``recipe``: ``"hysac"``, ``"safeclip"``, ``"safer-clip"``,
    ``"clip-pretrain"``, a :class:`~hysafe.training.recipes.Recipe` or a bare objective; default from the
    model kind. ``callbacks`` receive a dict after every optimiser step (step, epoch, lr, losses).
    """
    cfg = config or TrainConfig()
    model = _model_to_train(model, model_kwargs)
    recipe = as_recipe(recipe, model)
    dist = init_distributed(cfg.device or model.device)
    model.to(dist.device)
    recipe.check_model(model)
    check_select(cfg.select, model)
    seed_everything(cfg.seed)
    train_set, val_set = training_datasets(
        data,
        val_data,
        model,
        recipe.objective,
        preload=cfg.num_workers == 0,
        validate=cfg.validate,
        progress=cfg.progress,
    )
    check_probe_data(model, val_set, validate=cfg.validate)
    run = _training_run(model, recipe, cfg, dist, train_set, callbacks)
    start = time.time()
    with (
        locked_run_folder(run.folder if dist.is_main else None),
        grad_checkpointing(model, cfg.grad_checkpointing),
        compiled_loss(model, cfg.compile) as run.loss_fn,
    ):
        ran, reused = _resume_and_fit(run, recipe, val_set)
        _keep_best(run, val_set, ran)
    return TrainResult(
        model=model,
        history=run.progress["history"],
        best_score=run.progress["best"],
        best_checkpoint=run.best.path if run.best.path and run.best.path.is_file() else None,
        bounds=model.bounds,
        steps=run.progress["step"],
        seconds=time.time() - start,
        reused_epochs=reused,
    )


def _model_to_train(model: SafetyModel | str, model_kwargs: dict) -> SafetyModel:
    """``model``, or the model of kind ``model`` built with ``model_kwargs`` (refused beside a built one)."""
    if isinstance(model, str):
        return create_model(model, **model_kwargs)
    if model_kwargs:
        raise ValueError(
            f"train() got {sorted(model_kwargs)} for building a model, but the model is already built "
            f"({type(model).__name__}): pass a kind ('hysac', 'safeclip') to build one, or leave them out"
        )
    return model


def _training_run(model, recipe: Recipe, cfg: TrainConfig, dist, train_set, callbacks) -> TrainingRun:
    """The fixed parts of a run: batch sampler, optimisation, run folder and best-weights keeper."""
    sampler = ResumableBatchSampler(
        len(train_set), cfg.batch_size, seed=cfg.seed, rank=dist.rank, world=dist.world
    )
    steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"grad_accum={cfg.grad_accum} exceeds the {sampler.batches_per_epoch} batches of an epoch"
        )
    opt = build_optimization(model, recipe, cfg, steps_per_epoch * cfg.epochs, dist.device)
    folder = Path(cfg.output_dir) if cfg.output_dir else None
    best_path = folder / "best.safetensors" if folder and dist.is_main else None
    best = BestWeights(path=best_path, patience=cfg.early_stopping_patience)
    schedule = {
        "epochs": cfg.epochs,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": cfg.warmup_steps,
        "schedule": cfg.schedule,
        "lr": cfg.lr,
    }
    settings = {**optimizer_settings(recipe, cfg), "seed": cfg.seed, "select": cfg.select}
    fingerprint = run_fingerprint(model, recipe, schedule, settings)
    return TrainingRun(
        model, recipe.objective, opt, train_set, sampler, cfg, dist, folder, best, fingerprint, callbacks
    )


def _resume_and_fit(run: TrainingRun, recipe: Recipe, val_set) -> tuple[bool, int]:
    """Resume from the run folder's state, then run the remaining epochs; whether any ran, and how
    many epochs the resumed state had already finished."""
    run.resume()
    reused = run.progress["epoch"]
    if run.progress["step"] == 0:
        calibrate(run.model, run.data)
    config_record = {"train": asdict(run.cfg), "recipe": recipe.name, "objective": recipe.objective.name}
    log = RunLog(
        run.folder if run.dist.is_main else None,
        config=config_record,
        tensorboard=run.cfg.tensorboard,
        resumed_at_step=run.progress["step"],
    )
    # no per-call finiteness syncs in the hot loop (geometry validation off)
    with log, geometry_validation(False):
        return run.fit(val_set, log), reused


def _keep_best(run: TrainingRun, val_set, ran: bool) -> None:
    """The best weights back into the model (a probe text radius fitted on them), with safety bounds
    from validation (else training) rows, saved as ``best.safetensors``. A finished run re-run keeps its
    files as they are."""
    model, best_path = run.model, run.best.path
    run.best.restore(model)
    model.eval()
    kept = read_metadata(best_path) if best_path is not None and best_path.is_file() else None
    extra = {"best_validation_score": run.progress["best"], "select": run.cfg.select}
    if needs_probe_fit(model):  # deterministic: a re-run fits the restored weights' head the same way
        extra["text_radius_probe"] = fit_probe_radius(
            model, run.data, val_set, batch_size=run.cfg.eval_batch_size
        )
    saved_fit = not needs_probe_fit(model) or "text_radius_probe" in (kept or {}).get("extra", {})
    if not ran and kept is not None and saved_fit:
        model.bounds = kept.get("bounds")
        return
    model.bounds = safety_bounds(model, val_set or run.data, batch_size=run.cfg.eval_batch_size)
    if best_path is not None:
        save_best(model, best_path, extra=extra)
