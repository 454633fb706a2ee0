"""Hugging Face text towers: a CLIP whose text encoder is a transformers model (BERT, RoBERTa, XLM-R).

open_clip builds such CLIPs itself (``CustomTextCLIP`` with its ``HFTextEncoder``: ``hf_model_name``,
``hf_tokenizer_name``, pooler and projection types in the model config); its own configs
``xlm-roberta-base-ViT-B-32``, ``roberta-ViT-B-32`` and the NLLB CLIPs are used by name as they are.
This module adds two things hysafe needs on top:

* a model name for *any* image tower with *any* HF text model, ``"VISION+hf:SOURCE"`` (for example
  ``"hysafe-tiny+hf:/models/all-MiniLM-L6-v2"``): the open_clip config of ``VISION`` with its text tower
  replaced by the HF model at ``SOURCE`` (a local folder with ``config.json`` and the tokenizer files, or
  a hub id), mean pooling and a linear projection to ``VISION``'s embedding width, the context length
  from the HF config. :func:`hf_text_model_cfg` writes that config; the backbone registers it under a
  name open_clip can take (:func:`registered_name`) and checkpoints carry it (``BackboneConfig.model_cfg``);
* which modules LoRA adapts in an HF text tower, by the tower's ``model_type``
  (:data:`HF_LORA_LAYOUTS`), and a text forward that skips the columns every row pads
  (:func:`trimmed_hf_text_features`: equal to open_clip's forward, tested).

Its source (a folder or hub id) is checked in :mod:`.hf_source`; building one without
transformers' expected loading noise: :mod:`.hf_text_load`; a checkpoint whose
text model folder has moved: :func:`relink_text_tower` (:mod:`.sources`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from torch import Tensor, nn

from .hf_source import check_local_files, check_text_model, hf_config, is_local_source

__all__ = [
    "HF_TEXT_MARK",
    "HF_LORA_LAYOUTS",
    "HF_PROJ",
    "TRIMMABLE_POOLERS",
    "split_hf_text_name",
    "hf_text_model_cfg",
    "hf_text_cfg",
    "recorded_text_source",
    "missing_text_folder",
    "relink_text_tower",
    "registered_name",
    "hf_text_type",
    "hf_lora_target",
    "trimmed_hf_text_features",
    "drop_padded_columns",
]

logger = logging.getLogger(__name__)

#: ``VISION + HF_TEXT_MARK + SOURCE`` names a CLIP with an HF text tower
HF_TEXT_MARK = "+hf:"

#: the modules of one encoder layer that each of LoraConfig.modules' names stands for, per HF
#: ``model_type`` (open_clip's "attn" is the attention's projections, "mlp.c_fc" / "mlp.c_proj" the MLP's)
_BERT_LAYOUT = {
    "attn": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    "mlp.c_fc": ("intermediate.dense",),
    "mlp.c_proj": ("output.dense",),
}
HF_LORA_LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "bert": _BERT_LAYOUT,
    "roberta": _BERT_LAYOUT,
    "xlm-roberta": _BERT_LAYOUT,
}
#: LoraConfig's name for the HF text tower's projection to the embedding (adapted alone, it leaves the
#: transformer frozen: the "frozen tower + head" strategy)
HF_PROJ = "proj"
#: the path of the encoder layers inside ``HFTextEncoder.transformer``, per ``model_type``
_LAYERS = {"bert": r"encoder\.layer", "roberta": r"encoder\.layer", "xlm-roberta": r"encoder\.layer"}
#: open_clip poolers whose result does not change when columns that every row pads are dropped
TRIMMABLE_POOLERS = ("MeanPooler", "ClsPooler", "ClsLastHiddenStatePooler")


def split_hf_text_name(model: str) -> tuple[str, str] | None:
    """``(vision model, HF source)`` of a ``"VISION+hf:SOURCE"`` name; ``None`` for any other name."""
    if HF_TEXT_MARK not in model:
        return None
    vision, source = model.split(HF_TEXT_MARK, 1)
    if not vision or not source:
        raise ValueError(
            f"model name {model!r}: write 'VISION{HF_TEXT_MARK}SOURCE', an open_clip image model and a "
            "Hugging Face text model folder or hub id (e.g. 'hysafe-tiny+hf:/models/all-MiniLM-L6-v2')"
        )
    return vision, source


def hf_text_model_cfg(vision: str, source: str, *, pooler: str = "mean_pooler", proj: str = "linear") -> dict:
    """The open_clip model config of ``vision``'s image tower with the HF text model at ``source``
    (its text config: :func:`hf_text_cfg`)."""
    import open_clip

    from .registry import register_model_configs

    register_model_configs()
    base = open_clip.get_model_config(vision)
    if base is None:
        raise ValueError(
            f"unknown open_clip model {vision!r} for the image tower of {vision}{HF_TEXT_MARK}..."
        )
    text_cfg = hf_text_cfg(source, pooler=pooler, proj=proj)
    return {"embed_dim": base["embed_dim"], "vision_cfg": base["vision_cfg"], "text_cfg": text_cfg}


def hf_text_cfg(source: str, *, pooler: str, proj: str) -> dict:
    """open_clip's ``text_cfg`` of the HF text model at ``source``: a local folder (made absolute, so
    the config loads from any working directory) or a hub id. The context length is the HF model's
    ``max_position_embeddings`` (a causal open_clip tower reads 77 tokens; a BERT reads 512), so no
    caption is cut short of what the model can read."""
    if is_local_source(source):
        source = str(Path(source).expanduser().resolve())
    config = hf_config(source)
    check_text_model(source, config)
    if is_local_source(source):
        check_local_files(Path(source))
    text_cfg = {
        "hf_model_name": source,
        "hf_tokenizer_name": source,
        "hf_pooler_type": pooler,
        "hf_proj_type": proj,
    }
    context = getattr(config, "max_position_embeddings", None)
    if isinstance(context, int) and context > 0:
        text_cfg["context_length"] = context
    return text_cfg


def recorded_text_source(model_cfg: dict | None) -> str | None:
    """The HF text model (folder or hub id) a model config reads its text tower from (``None``: none)."""
    return ((model_cfg or {}).get("text_cfg") or {}).get("hf_model_name")


def missing_text_folder(model_cfg: dict | None) -> str | None:
    """The recorded local text model folder of ``model_cfg`` when it is no longer there, else ``None``."""
    source = recorded_text_source(model_cfg)
    if source is None or not is_local_source(source) or Path(source).expanduser().is_dir():
        return None
    return source


def relink_text_tower(model: str, model_cfg: dict, source: str) -> tuple[str, dict]:
    """``(model name, model config)`` of a saved CLIP with its HF text tower (``model_cfg`` has one:
    :func:`recorded_text_source` is not ``None``) read from ``source`` instead of the folder it recorded
    (a text model moved since): the same pooler and projection, the context length of ``source``'s
    config. Checked like a new tower (folder, config, files)."""
    text_cfg = model_cfg["text_cfg"]
    fresh = hf_text_cfg(source, pooler=text_cfg["hf_pooler_type"], proj=text_cfg["hf_proj_type"])
    name = model
    if HF_TEXT_MARK in model:
        name = f"{model.split(HF_TEXT_MARK, 1)[0]}{HF_TEXT_MARK}{fresh['hf_model_name']}"
    return name, {**model_cfg, "text_cfg": {**text_cfg, **fresh}}


def registered_name(model: str, model_cfg: dict) -> str:
    """The name open_clip knows ``model_cfg`` by: ``model`` itself, unless it is not a plain name (an
    HF source holds '/' and ':'), then ``hysafe-hf-`` and a digest of the config."""
    if re.fullmatch(r"[\w.-]+", model):
        return model
    digest = hashlib.sha1(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]
    return f"hysafe-hf-{digest}"


def hf_text_type(model: nn.Module) -> str | None:
    """The ``model_type`` of an open_clip CLIP's HF text tower (``None``: not an HF text tower)."""
    from open_clip.hf_model import HFTextEncoder

    text = getattr(model, "text", None)
    return text.config.model_type if isinstance(text, HFTextEncoder) else None


def hf_text_tower(model: nn.Module) -> nn.Module | None:
    """A hysafe model's HF text tower (open_clip's ``HFTextEncoder``); ``None`` for any other."""
    clip = getattr(getattr(model, "backbone", None), "model", None)
    return clip.text if clip is not None and hf_text_type(clip) is not None else None


def hf_lora_target(model_type: str, modules: tuple[str, ...]) -> str:
    """Regex over the CLIP's module names for the HF text tower's LoRA targets: what each of
    ``modules`` (LoraConfig.modules, open_clip's names) stands for in that ``model_type``'s layers."""
    layout = HF_LORA_LAYOUTS.get(model_type)
    if layout is None:
        raise ValueError(
            f"LoRA on a {model_type!r} Hugging Face text tower: its modules are not mapped (mapped: "
            f"{', '.join(sorted(HF_LORA_LAYOUTS))}); adapt the image tower only "
            "(LoraConfig(towers=('visual',)))"
        )
    unknown = [m for m in modules if m not in layout and m != HF_PROJ]
    if unknown:
        raise ValueError(
            f"LoRA modules {unknown} (LoraConfig.text_modules, --lora-text-modules) have no counterpart "
            f"in a {model_type!r} text tower "
            f"(choose among {sorted([*layout, HF_PROJ])})"
        )
    names = "|".join(re.escape(n) for m in modules if m != HF_PROJ for n in layout[m])
    targets = [rf"text\.transformer\.{_LAYERS[model_type]}\.\d+\.({names})"] if names else []
    if HF_PROJ in modules:  # the projection to the embedding (a Linear for hf_proj_type "linear")
        targets.append(r"text\.proj")
    return "|".join(targets)


def trimmed_hf_text_features(model: nn.Module, tokens: Tensor) -> Tensor | None:
    """``model.encode_text(tokens, normalize=False)`` on the columns up to the last one any row does not
    pad; ``None`` where that would change the result (another pooler, no pad id)."""
    text = model.text
    pad = getattr(text.config, "pad_token_id", None)
    if type(text.pooler).__name__ not in TRIMMABLE_POOLERS or pad is None or tokens.ndim != 2:
        return None
    return model.encode_text(drop_padded_columns(tokens, pad), normalize=False)


def drop_padded_columns(tokens: Tensor, pad: int) -> Tensor:
    """``tokens`` up to the last column any row does not pad (all of it when every column is pad)."""
    used = (tokens != pad).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens
