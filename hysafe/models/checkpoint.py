"""Model checkpoints: safetensors only (nothing is ever unpickled), written atomically.

Two forms:

* **adapter** -- the trainable tensors only (LoRA weights and HySAC scalars). The backbone is
  rebuilt from the ``pretrained`` source recorded in the metadata (a tag or a local file).
* **merged** -- LoRA merged into the weights (``merge_and_unload``): the file is a plain
  open_clip state dict, so ``open_clip.create_model_and_transforms(name, pretrained=FILE)``
  loads it in any downstream pipeline; HySAC's scalars live in the metadata.

The metadata always holds the resolved :class:`~hysafe.models.ModelConfig`, the form, the
model's scalars and, when known, the safety bounds (distance-to-root statistics).

Format 2 names tensors after the model's modules (``backbone.model.*``); format-1 files of
hysafe 0.1 (``peft.base_model.model.*`` / ``clip.*``) are read and renamed on load.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbone import CHECKPOINT_META_KEY, BackboneConfig
from .safety_model import ModelConfig, SafetyModel, build_model, trainable_parameters
from .sources import locate_backbone, locate_text_tower
from .text_radius import carry_text_before_lora, check_mergeable, load_text_radius
from .traversal import check_bounds, check_tau_rule

logger = logging.getLogger(__name__)

__all__ = [
    "save_model",
    "load_model",
    "read_metadata",
    "atomic_save_file",
    "uses_adapter_form",
    "inference_copy",
    "FORMAT_VERSION",
]

FORMAT_VERSION = "2"
_READABLE_VERSIONS = ("1", "2")
_META_KEY = CHECKPOINT_META_KEY
#: the metadata key of a training run's resume state (hysafe.training.state), which is not a checkpoint
TRAINING_STATE_META_KEY = "hysafe_train_state"
_V1_PREFIXES = ("peft.base_model.model.", "clip.")


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """``safetensors.save_file`` to a temporary file in the same folder, then ``os.replace``:
    a crash mid-write never leaves a truncated checkpoint under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a checkpoint gets the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def uses_adapter_form(model: SafetyModel) -> bool:
    """The form a trained model is best stored in: adapters when its frozen base can be rebuilt
    from the config and only a small part trains (LoRA, a feature projection); merged otherwise
    (random-init or fully trained open_clip weights)."""
    backbone = model.backbone
    return backbone.rebuildable and (
        backbone.has_adapters or not isinstance(model.config.backbone, BackboneConfig)
    )


def model_origin(model: SafetyModel) -> str | None:
    """The original weights of a model's backbone (before any fine-tune): what a merged copy records
    as its ``origin``, so that a later Safe-CLIP training takes the original CLIP as frozen reference."""
    cfg = model.backbone.config
    if cfg.origin is not None:
        return cfg.origin
    if not model.backbone.has_adapters and model.kind == "clip":
        return None  # nothing was fine-tuned: the weights are their own origin
    return str(Path(cfg.pretrained).resolve()) if cfg.is_local() else cfg.pretrained


def save_model(
    model: SafetyModel,
    path: str | Path,
    *,
    merged: bool = False,
    bounds: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Save ``model`` to ``path`` (``.safetensors``) in adapter or merged form. Returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    check_bounds(bounds, "bounds to save")
    config = copy.deepcopy(model.config)
    if merged:
        if not isinstance(config.backbone, BackboneConfig):
            raise ValueError(
                "merged checkpoints are plain open_clip files; save a "
                "feature-backbone model with merged=False"
            )
        tensors = model.backbone.merged_state_dict()
        config.lora = None
        config.backbone.origin = model_origin(model)
        check_mergeable(model, config.backbone.origin)
        config.backbone.pretrained = str(path.resolve())  # a merged file is its own backbone source
    else:
        # absolute: loads from any working directory
        if isinstance(config.backbone, BackboneConfig) and config.backbone.is_local():
            config.backbone.pretrained = str(Path(config.backbone.pretrained).resolve())
        if not model.backbone.rebuildable:
            raise ValueError(
                "adapter checkpoints need a re-loadable backbone, but this model "
                "was built with pretrained=None "
                "(random init): save with merged=True, or build it from a pretrained tag or checkpoint file"
            )
        tensors = dict(trainable_parameters(model))
    meta = {
        "format_version": FORMAT_VERSION,
        "form": "merged" if merged else "adapter",
        "config": config.to_dict(),
        "scalars": model.scalars(),
        "bounds": bounds,
        "traversal_rule": model.traversal_rule,
        "extra": extra or {},
    }
    head = getattr(model, "text_radius", None)
    if merged and head is not None:  # a plain open_clip file has no place for it: beside the scalars
        meta["text_radius"] = head.to_metadata()
    atomic_save_file(tensors, path, {_META_KEY: json.dumps(meta)})
    logger.info("saved %s checkpoint of %s to %s (%d tensors)", meta["form"], model.kind, path, len(tensors))
    return path


def read_metadata(path: str | Path) -> dict:
    """The hysafe metadata of a checkpoint, with clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    raw = metadata.get(_META_KEY)
    if raw is None and TRAINING_STATE_META_KEY in metadata:
        raise ValueError(
            f"{path}: a training run's resume state (its last.safetensors: weights being trained, optimiser "
            "moments, progress), not a model checkpoint; load the run's best.safetensors, or continue the "
            "run with hysafe train --out FOLDER"
        )
    if raw is None:
        raise ValueError(
            f"{path}: safetensors file without hysafe metadata (not saved by hysafe.save); plain open_clip "
            "weights are built with hysafe.create_model('clip', MODEL, pretrained=PATH)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt hysafe metadata ({e})") from e
    if meta.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint format {meta.get('format_version')!r}, this "
            f"hysafe reads {list(_READABLE_VERSIONS)}"
        )
    if meta.get("form") == "head":
        raise ValueError(
            f"{path}: a feature-head checkpoint of hysafe 0.1; retrain it with create_feature_model (seconds)"
        )
    return meta


def _tensor_name(name: str, version: str) -> str:
    """Tensor names of format-1 files in today's module layout."""
    if version == "1":
        for prefix in _V1_PREFIXES:
            if name.startswith(prefix):
                return "backbone.model." + name[len(prefix) :]
    return name


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", text_tower: str | None = None
) -> SafetyModel:
    """Restore a :class:`CLIP`, :class:`SafeCLIP` or :class:`HySAC` saved by :func:`save_model`.

    ``text_tower``: where the Hugging Face text model of a checkpoint with an HF text tower is now (a
    folder or hub id), when it is no longer where the checkpoint recorded it (the checkpoint holds the
    tower's weights; the folder gives its config and tokenizer)."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig(**meta["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: its model config is not one this hysafe can build ({e})") from e
    locate_text_tower(config, path, text_tower)
    if meta["form"] == "merged":
        config.backbone.pretrained = str(path)  # the file may have moved since it was written
        model = build_model(config, device=device)
        load_text_radius(model, meta, str(path))
    else:
        locate_backbone(config, path)
        model = build_model(config, device=device)
        tensors = {
            _tensor_name(k, meta["format_version"]): v
            for k, v in load_file(str(path), device=str(device)).items()
        }
        expected = {n for n, _ in trainable_parameters(model)}
        missing, unexpected = expected - set(tensors), set(tensors) - expected
        if missing or unexpected:
            raise ValueError(
                f"{path}: checkpoint does not match the model it describes; "
                f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                if params[name].shape != value.shape:
                    raise ValueError(
                        f"{path}: tensor {name} has shape {tuple(value.shape)}, "
                        f"model expects {tuple(params[name].shape)}"
                    )
                params[name].copy_(value)
    _check_finite(dict(model.named_parameters()), path)
    model.load_scalars_(meta["scalars"], source=str(path))
    model.bounds = check_bounds(meta.get("bounds"), str(path))
    model.traversal_rule = check_tau_rule(meta.get("traversal_rule"), str(path))
    model.eval()
    return model


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN/Inf values, naming the file and the tensor (a diverged or damaged run)."""
    for name, value in tensors.items():
        bad = int((~torch.isfinite(value)).sum()) if value.is_floating_point() else 0
        if bad:
            raise ValueError(
                f"{path}: tensor {name} holds {bad} NaN/Inf value(s) of {value.numel()}; the checkpoint "
                "is damaged or comes from a diverged run"
            )


def inference_copy(model: SafetyModel) -> SafetyModel:
    """``model`` with its LoRA merged into plain weights, for inference only (the model itself is
    untouched; a model without adapters is returned as it is).

    peft's LoRA on ``nn.MultiheadAttention`` merges the adapter into ``in_proj_weight`` and
    unmerges it inside every forward: the base weights drift by float rounding call after call,
    and two threads running one model corrupt each other. The copy's forward writes no weight, so
    it is bit-stable over time and may run in several threads at once (the service batches on it).
    """
    backbone = getattr(model, "backbone", None)
    if not getattr(backbone, "has_adapters", False):
        return model
    config = copy.deepcopy(model.config)
    config.lora = None
    config.backbone.origin = model_origin(model)
    config.backbone.pretrained = None  # the weights come from the merged state dict below
    copied = build_model(config, device=model.device)
    copied.backbone.model.load_state_dict(backbone.merged_state_dict(), strict=True)
    if getattr(model, "text_radius", None) is not None:
        copied.text_radius.load_state_dict(model.text_radius.state_dict())
        carry_text_before_lora(model, copied)
    copied.load_scalars_(model.scalars(), source="the model being copied")
    copied.bounds = copy.deepcopy(model.bounds)
    copied.traversal_rule = model.traversal_rule
    copied.requires_grad_(False)
    return copied.eval()
