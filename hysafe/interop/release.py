"""The authors' released HySAC (hub repo ``aimagelab/HySAC``) as a hysafe ``HySAC``.

``hysac_model.pth`` is a plain state dict of the authors' module: peft-wrapped transformers towers
(``visual.base_model.model.*``, ``textual.base_model.model.*``; LoRA on k/v/out projections, MLPs
and the patch embedding) and log-scalars ``curv``, ``visual_alpha``, ``textual_alpha``,
``logit_scale``; ``hysac_bounds.json`` holds the distance-to-root statistics. Read with
``weights_only=True`` (never unpickled), LoRA merged, towers mapped to open_clip.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path

import torch
from torch import Tensor

from ..models.safety_model import HySAC
from ..models.traversal import check_bounds
from .convert import _load_clip_model, _model_on, hf_to_open_clip, open_clip_config_from_hf

logger = logging.getLogger(__name__)

__all__ = ["load_hysac_release", "merge_lora", "HYSAC_REPO", "HYSAC_BASE"]

HYSAC_REPO = "aimagelab/HySAC"
HYSAC_BASE = "openai/clip-vit-large-patch14"


def _local_or_hub(name: str, repo: str, what: str) -> Path:
    """A local file, or ``name`` downloaded from hub ``repo`` (cached; works offline once cached)."""
    if Path(name).is_file():
        return Path(name)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, name))
    except ImportError as e:
        raise ImportError(
            f"{what} {name!r} is not a local file; hub downloads need the 'hf' "
            f"extra: pip install 'hysafe[hf]'"
        ) from e
    except Exception as e:  # offline, unknown repo, missing file: one message that says which
        raise FileNotFoundError(
            f"{what} {name!r} is not a local file, and fetching it from the hub repo {repo!r} "
            f"failed (offline, or not there?): {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from e


def _torch_weights(path: Path) -> dict[str, Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: a pickle that is not plain weights; hysafe never unpickles code") from e
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable torch weights file ({e})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return sd


def merge_lora(sd: dict[str, Tensor], *, alpha: float, source: str) -> dict[str, Tensor]:
    """A peft-wrapped module's state dict with ``W + alpha/r * B A`` merged into each base weight
    (linear and conv layers alike: ``B`` flattened to ``(out, r)``, ``A`` to ``(r, in * k * k)``)."""
    out = {}
    for key, value in sd.items():
        if ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value
    for key in [k for k in sd if k.endswith(".lora_A.default.weight")]:
        module = key[: -len(".lora_A.default.weight")]
        b_key, base_key = f"{module}.lora_B.default.weight", f"{module}.base_layer.weight"
        for needed in (b_key, base_key):
            if needed not in sd:
                raise ValueError(f"{source}: LoRA key {needed!r} missing (have {key!r})")
        a, b, w = sd[key].float(), sd[b_key].float(), sd[base_key]
        delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape) * (alpha / a.shape[0])
        out[f"{module}.weight"] = (w.float() + delta).to(w.dtype)
    return out


def _tower(sd: dict[str, Tensor], prefix: str, source: str) -> dict[str, Tensor]:
    tower = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not tower:
        raise ValueError(
            f"{source}: no {prefix!r} keys: not a HySAC release state dict (keys "
            f"start with {sorted({k.split('.')[0] for k in sd})})"
        )
    return tower


def _read_bounds(path: Path) -> dict:
    try:
        bounds = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON bounds file ({e})") from e
    missing = [pop for pop in ("V", "S") if pop not in (bounds if isinstance(bounds, dict) else {})]
    if missing:
        raise ValueError(
            f"{path}: bounds without {missing} (traversal of text/image queries needs 'V' and 'S')"
        )
    return check_bounds(
        {p: {k: float(v) for k, v in s.items() if isinstance(v, (int, float))} for p, s in bounds.items()},
        str(path),
    )


def load_hysac_release(
    weights: str = "hysac_model.pth",
    bounds: str = "hysac_bounds.json",
    base: str = HYSAC_BASE,
    *,
    repo: str = HYSAC_REPO,
    lora_alpha: float = 1.0,
    device: str | torch.device = "cpu",
) -> HySAC:
    """The released HySAC as a hysafe :class:`~hysafe.models.HySAC` (LoRA merged, open_clip towers).

    ``weights``/``bounds``: local files, or file names in hub ``repo``; ``base``: the transformers
    CLIP it was trained from (a local folder or a hub id). ``lora_alpha`` is the authors' (1; the
    rank is read from the tensors)."""
    weights_path, bounds_path = (
        _local_or_hub(weights, repo, "HySAC weights"),
        _local_or_hub(bounds, repo, "HySAC bounds"),
    )
    sd, safety = _torch_weights(weights_path), _read_bounds(bounds_path)
    missing = [k for k in ("curv", "visual_alpha", "textual_alpha", "logit_scale") if k not in sd]
    if missing:
        raise ValueError(f"{weights_path}: HySAC scalars {missing} missing")
    source = str(weights_path)
    hf = {
        **merge_lora(_tower(sd, "visual.base_model.model.", source), alpha=lora_alpha, source=source),
        **merge_lora(_tower(sd, "textual.base_model.model.", source), alpha=lora_alpha, source=source),
        "logit_scale": sd["logit_scale"],
    }
    config = _load_clip_model(base).config
    scalars = {
        "log_curv": float(sd["curv"]),
        "log_alpha_image": float(sd["visual_alpha"]),
        "log_alpha_text": float(sd["textual_alpha"]),
        "log_logit_scale": float(sd["logit_scale"]),
    }
    scale = math.exp(scalars["log_logit_scale"])
    model = _model_on(
        "hysac",
        open_clip_config_from_hf(config),
        hf_to_open_clip(hf),
        device,
        logit_scale_init=min(1 / 0.07, scale),
        logit_scale_max=max(100.0, scale),
    )
    model.load_scalars_(scalars, source=source)
    model.bounds = safety
    model.traversal_rule = "authors"  # the released code's traverse_to_safe_image/text (paper:up_95)
    return model.eval()
