"""Embedding a quadruplet batch with as few forward passes as possible.

Safe and unsafe images go through the image tower in **one** batched pass (likewise texts),
instead of the reference code's four separate passes; frozen-reference embeddings are computed
only when the objective asks for them. With a Hugging Face text tower, the text model's sentence
embeddings (its pooled output, before the CLIP projection) are taken from the same forward pass
(``S``, ``S*``) and, for the un-adapted text model, from a per-caption cache (``S0``, ``S0*``); that
cache through the current projection and lift gives ``F``, ``F*``, which HySAC's root anchor compares
with ``T~``, ``T*~`` (the trained text embeddings from a pass without dropout).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .hf_text import hf_text_tower
from .hf_text_cache import base_sentence_embeddings, base_text_features
from .safety_model import SafetyModel

__all__ = [
    "QUADRUPLET_KEYS",
    "SENTENCE_KEYS",
    "UNADAPTED_TEXT_KEYS",
    "STEADY_TEXT_KEYS",
    "embed_quadruplets",
    "embed_dataset",
]

#: batch key -> (modality, embedding name under the trained towers, under the frozen reference)
QUADRUPLET_KEYS = {
    "image": ("image", "V", "V0"),
    "text": ("text", "T", "T0"),
    "unsafe_image": ("image", "V*", "V0*"),
    "unsafe_text": ("text", "T*", "T0*"),
    "target_image": ("image", None, "V0^"),
    "target_text": ("text", None, "T0^"),
}


#: text batch key -> (the text model's sentence embedding under the trained tower, before LoRA)
SENTENCE_KEYS = {"text": ("S", "S0"), "unsafe_text": ("S*", "S0*")}
#: batch key -> the name of its text embedding from the text model before LoRA (a HySAC model's lift)
UNADAPTED_TEXT_KEYS = {"text": "F", "unsafe_text": "F*"}
#: batch key -> the name of its trained text embedding from a pass with the text tower's dropout off
STEADY_TEXT_KEYS = {"text": "T~", "unsafe_text": "T*~"}


def _encode_many(encode, tensors: list[Tensor]) -> list[Tensor]:
    if not tensors:
        return []
    sizes = [t.shape[0] for t in tensors]
    return list(torch.split(encode(torch.cat(tensors, dim=0)), sizes))


def embed_quadruplets(model: SafetyModel, batch: dict[str, Tensor], needed: set[str]) -> dict[str, Tensor]:
    """Embeddings named as in :mod:`hysafe.losses.objectives` for the ``needed`` names only."""
    trained = [k for k, (s, _) in SENTENCE_KEYS.items() if s in needed]
    with _pooled_outputs(model, enabled=bool(trained)) as pooled:
        out = _tower_embeddings(model, batch, needed)
    if trained:
        out.update(_trained_sentences(model, batch, needed, trained, pooled))
    for key, (_, base) in SENTENCE_KEYS.items():
        if base in needed:
            backbone = model.backbone
            out[base] = base_sentence_embeddings(backbone.model, batch[key], backbone.peft)
    for key, name in UNADAPTED_TEXT_KEYS.items():
        if name in needed:
            out[name] = _unadapted_text(model, batch[key])
    steady = [k for k, name in STEADY_TEXT_KEYS.items() if name in needed]
    if steady:
        out.update(_steady_text(model, batch, steady))
    return out


def _steady_text(model: SafetyModel, batch: dict[str, Tensor], keys: list[str]) -> dict[str, Tensor]:
    """``T~`` / ``T*~``: the trained text embeddings from one more pass with the text tower's dropout (its
    own and LoRA's) off, so that at the start of a fine-tune they equal ``F`` / ``F*`` exactly."""
    with _eval_mode(_hf_text(model)):
        parts = _encode_many(model.encode_text, [batch[k] for k in keys])
    return {STEADY_TEXT_KEYS[k]: part for k, part in zip(keys, parts, strict=True)}


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """``module`` and its parts in eval mode inside, as they were after (Hugging Face attention drops its
    probabilities by the attention module's own mode, not by a dropout layer)."""
    training = [m for m in module.modules() if m.training]
    module.eval()
    try:
        yield
    finally:
        for m in training:
            m.train()


def _unadapted_text(model: SafetyModel, tokens: Tensor) -> Tensor:
    """``F`` / ``F*``: the lifted text embedding of the text model before LoRA (projection and alpha live)."""
    _hf_text(model)
    if not hasattr(model, "lift"):
        raise ValueError(
            "the text embeddings before LoRA (F, F*: the root anchor) are a HySAC model's, "
            f"got a {model.kind!r} model"
        )
    if model.text_radius is not None:
        raise ValueError(
            "the root anchor holds the distance to the root that the projection's norm gives; a HySAC "
            f"model with text_radius={model.config.text_radius!r} reads it elsewhere"
        )
    backbone = model.backbone
    return model.lift(base_text_features(backbone.model, tokens, backbone.peft), model.log_alpha_text)


def _tower_embeddings(model: SafetyModel, batch: dict[str, Tensor], needed: set[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for use_reference in (False, True):
        for modality in ("image", "text"):
            keys = _encoded_keys(modality, needed, use_reference)
            if not keys:
                continue
            missing = [k for k in keys if k not in batch]
            if missing:
                raise ValueError(f"batch lacks {missing} needed for embeddings {sorted(needed)}")
            if use_reference:
                encode = model.encode_image_ref if modality == "image" else model.encode_text_ref
            else:
                encode = model.encode_image if modality == "image" else model.encode_text
            for k, emb in zip(keys, _encode_many(encode, [batch[k] for k in keys]), strict=True):
                out[QUADRUPLET_KEYS[k][2 if use_reference else 1]] = emb
    return out


def _encoded_keys(modality: str, needed: set[str], use_reference: bool) -> list[str]:
    """The batch keys of ``modality`` encoded in one pass, in that pass's order."""
    return [
        k
        for k, (mod, name, ref) in QUADRUPLET_KEYS.items()
        if mod == modality and (ref if use_reference else name) in needed
    ]


def _hf_text(model: SafetyModel):
    text = hf_text_tower(model)
    if text is None:
        raise ValueError(
            "the text model's sentence embeddings (S, S*, S0, S0*, F, F*, T~, T*~: the text and root "
            "anchors) need a CLIP with a Hugging Face text tower ('VISION+hf:SOURCE'), "
            f"got {type(model).__name__} without one"
        )
    return text


@contextlib.contextmanager
def _pooled_outputs(model: SafetyModel, *, enabled: bool):
    """The HF text tower's pooled outputs of the forward passes run inside (a list, in call order)."""
    if not enabled:
        yield []
        return
    outputs: list[Tensor] = []
    handle = _hf_text(model).pooler.register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        yield outputs
    finally:
        handle.remove()


def _trained_sentences(model, batch, needed, trained: list[str], pooled: list[Tensor]) -> dict[str, Tensor]:
    """``S`` / ``S*`` from the pooled output of the text pass (which embedded ``T`` and ``T*`` at once); a
    frozen text model's pass is cached and runs no pooler: its sentence embeddings are the base ones."""
    text = _hf_text(model)
    if not any(p.requires_grad for p in text.transformer.parameters()):
        backbone = model.backbone
        return {
            SENTENCE_KEYS[k][0]: base_sentence_embeddings(backbone.model, batch[k], backbone.peft)
            for k in trained
        }
    keys = _encoded_keys("text", needed, use_reference=False)
    if any(k not in keys for k in trained) or len(pooled) != 1:
        raise ValueError(
            f"sentence embeddings {[SENTENCE_KEYS[k][0] for k in trained]} need the text embeddings "
            "of the same captions (T, T*) in the objective"
        )
    parts = torch.split(pooled[0], [batch[k].shape[0] for k in keys])
    return {SENTENCE_KEYS[k][0]: part for k, part in zip(keys, parts, strict=True) if k in trained}


@torch.no_grad()
def embed_dataset(
    model: SafetyModel, dataset, *, batch_size: int = 256, num_workers: int = 0, progress: bool = False
) -> dict[str, Tensor]:
    """Embed every row of a :class:`~hysafe.data.QuadrupletDataset` in eval mode.

    Returns ``{"T", "T*"}`` and, when the rows have images, ``{"V", "V*"}``, each ``(N, D)`` on CPU.
    """
    from torch.utils.data import DataLoader

    from ..utils.progress import bar

    was_training = model.training
    model.eval()
    needed = {"T", "T*"} | ({"V", "V*"} if getattr(dataset, "has_images", True) else set())
    parts: dict[str, list[Tensor]] = {k: [] for k in needed}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in bar(loader, desc="embedding", enabled=progress):
        batch = {k: v.to(model.device) for k, v in batch.items()}
        for name, emb in embed_quadruplets(model, batch, needed).items():
            parts[name].append(emb.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}
