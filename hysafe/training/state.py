"""Resumable training state in one safetensors file (nothing is unpickled).

Tensors: trainable parameters (``model/*``), the best epoch's parameters (``best/*``), optimiser
moments (``optim/<i>/<key>``) and torch RNG states; metadata (JSON): progress (epoch, batch, step,
best score, history), the run's fingerprint (recipe and model configuration: a resume with other
settings is refused by name), optimiser param groups and scalar state, scheduler, grad scaler,
Python and NumPy RNG states.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hysafe.losses.objectives import ORDER_LOSSES

from ..models.checkpoint import TRAINING_STATE_META_KEY, atomic_save_file
from ..models.safety_model import trainable_parameters
from .optim import Optimization

__all__ = ["save_training_state", "load_training_state", "new_progress", "run_fingerprint"]

_META_KEY = TRAINING_STATE_META_KEY


def new_progress() -> dict:
    """Progress of a run that has not started: where the loop is, the best score, the history."""
    return {"epoch": 0, "batch": 0, "step": 0, "best": None, "bad_epochs": 0, "history": []}


def run_fingerprint(model, recipe, schedule: dict | None = None, settings: dict | None = None) -> dict:
    """What must not change between a run and its resume: recipe and model configuration (the
    backbone's file path may move; its architecture may not), the learning-rate schedule
    (``schedule``: a resume with more epochs would continue a cosine schedule that has ended) and the
    run's other settings (``settings``: optimiser, seed, model selection; a finished run re-run with
    another would return the old result as if it were the new one's)."""
    config = model.config.to_dict()
    config["backbone"].pop("pretrained", None)
    if config.get("text_radius") == "norm":  # as published: absent before the option existed
        del config["text_radius"]
    fingerprint = {
        "recipe": recipe.name,
        "objective": [list(map(str, (t.loss, t.inputs, t.weight))) for t in recipe.objective.terms],
        "cones": [
            recipe.objective.cones.aperture_scale,
            recipe.objective.cones.radius,
            recipe.objective.cones.min_radius,
            recipe.objective.cones.radius_ratio,
        ],
        "redirection_scale": recipe.objective.redirection_scale,
        "model": config,
    }
    if any(t.loss in ORDER_LOSSES for t in recipe.objective.terms):  # absent before the option existed
        fingerprint["order_margin"] = recipe.objective.order_margin
    if schedule is not None:
        fingerprint["schedule"] = schedule
    if settings is not None:
        fingerprint["settings"] = settings
    return fingerprint


def _differences(a, b, prefix: str = "") -> list[str]:
    if prefix == "objective." and a != b:
        return [_objective_change(a or [], b or [])]
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b), key=str)
            for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    name = prefix.rstrip(".")
    if name == "order_margin" and None in (a, b):
        return []  # held only where the objective has order terms: the objective's change says it
    if name == "model.text_radius":  # held only where it is not the published norm
        a, b = a or "norm", b or "norm"
    return [] if a == b else [f"{SETTING_NAMES.get(name, name)}: {a!r} there, {b!r} now"]


def _objective_change(before: list, now: list) -> str:
    """The objective terms only one of two runs has (``loss(inputs) xweight``)."""

    def terms(entries: list) -> list[str]:
        return [f"{loss}{inputs} x{weight}" for loss, inputs, weight in entries]

    old, new = terms(before), terms(now)
    only = {"there": [t for t in old if t not in new], "now": [t for t in new if t not in old]}
    parts = [f"only {when}: {', '.join(names)}" for when, names in only.items() if names]
    return f"objective terms ({'; '.join(parts)})"


#: fingerprint sections that older run files lack (such a file is compared without them)
LATER_SECTIONS = ("schedule", "settings")

#: fingerprint entries a user sets under another name (TrainConfig's field, ``hysafe train``'s option)
SETTING_NAMES = {
    "schedule.epochs": "epochs (--epochs)",
    "schedule.lr": "lr (--lr)",
    "schedule.warmup_steps": "warmup_steps (--warmup-steps)",
    "schedule.schedule": "schedule (--schedule)",
    "schedule.steps_per_epoch": "optimiser steps per epoch (the training rows, --batch-size, --grad-accum)",
    "settings.optimizer": "optimizer (--optimizer)",
    "settings.weight_decay": "weight_decay (--weight-decay)",
    "settings.betas": "betas",
    "settings.max_grad_norm": "max_grad_norm (--max-grad-norm)",
    "settings.seed": "seed (--seed)",
    "settings.select": "select (--select)",
    "model.text_radius": "text_radius (--text-radius)",
}


def _tensors(model, opt: Optimization, best: dict[str, Tensor] | None) -> dict[str, Tensor]:
    tensors = {f"model/{n}": p for n, p in trainable_parameters(model)}
    tensors.update({f"best/{n}": t for n, t in (best or {}).items()})
    for idx, state in opt.optimizer.state_dict()["state"].items():
        for k, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"optim/{idx}/{k}"] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors


def save_training_state(
    path: Path, model, opt: Optimization, progress: dict, *, best: dict[str, Tensor] | None, fingerprint: dict
) -> None:
    opt_sd = opt.optimizer.state_dict()
    scalars = {
        str(i): {k: v for k, v in s.items() if not isinstance(v, Tensor)} for i, s in opt_sd["state"].items()
    }
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "progress": progress,
        "fingerprint": fingerprint,
        "optimizer_groups": opt_sd["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": {k: v for k, v in opt.scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": opt.scaler.state_dict() if opt.scaler.is_enabled() else None,
        "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    atomic_save_file(_tensors(model, opt, best), path, {_META_KEY: json.dumps(meta, default=float)})


def _restore_rng(tensors: dict[str, Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = meta["numpy_rng"]
    np.random.set_state((npr[0], np.array(npr[1], dtype=np.uint32), *npr[2:]))


def _read(path: Path) -> tuple[dict, dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    fresh = "delete it, or pass --no-resume (resume=False) to start this run afresh"
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
        meta = json.loads(raw) if raw is not None else None
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable training state ({type(e).__name__}: {e}); {fresh}") from e
    if meta is None:
        raise ValueError(f"{path}: not a hysafe training-state checkpoint; {fresh}")
    return meta, tensors


def load_training_state(
    path: Path, model, opt: Optimization, fingerprint: dict
) -> tuple[dict, dict[str, Tensor] | None]:
    """Restore model, optimiser, scheduler, scaler and RNGs; returns the saved progress and the
    best epoch's parameters (``None`` if the file holds none)."""
    meta, tensors = _read(path)
    saved = meta.get("fingerprint")
    if saved is not None:  # a file written before the schedule or the settings were recorded
        fingerprint = {k: v for k, v in fingerprint.items() if k in saved or k not in LATER_SECTIONS}
    if saved is not None and saved != fingerprint:
        diff = _differences(saved, fingerprint)
        raise ValueError(
            f"{path.parent} holds a run with a different configuration ({'; '.join(diff[:4])}); "
            "resume it with its own settings, or choose another --out"
        )
    params = dict(trainable_parameters(model))
    missing = {f"model/{n}" for n in params} - set(tensors)
    if missing:
        raise ValueError(
            f"{path}: training state does not match the model (missing {sorted(missing)[:3]}...)"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"model/{n}"])
    state = {}
    for idx, scal in meta["optimizer_scalars"].items():
        s = dict(scal)
        for k in [key.split("/")[2] for key in tensors if key.startswith(f"optim/{idx}/")]:
            s[k] = tensors[f"optim/{idx}/{k}"]
        state[int(idx)] = s
    opt.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    opt.scheduler.load_state_dict({**opt.scheduler.state_dict(), **meta["scheduler"]})
    if meta["scaler"] is not None:
        opt.scaler.load_state_dict(meta["scaler"])
    _restore_rng(tensors, meta)
    best = {n: tensors[f"best/{n}"] for n in params} if all(f"best/{n}" in tensors for n in params) else None
    return meta["progress"], best
