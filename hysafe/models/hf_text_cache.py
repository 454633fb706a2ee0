"""A frozen Hugging Face text tower runs once per caption: its pooled features are cached.

A 6-layer BERT costs ~100x the tiny CLIP's text tower. When LoRA adapts only the image tower and the
text tower's projection (the "frozen tower + head" strategy: ``LoraConfig(text_modules=("proj",))``),
the transformer's output for a caption never changes, so it is computed once per process and reused
by every epoch, the frozen reference of Safe-CLIP, evaluation and indexing; the projection (trained)
runs on every call. A frozen transformer runs in eval mode here, without dropout, the same features in
training and evaluation.

The cache is keyed by a fingerprint of the transformer's weights (a sum per tensor, recomputed only
when a tensor is replaced or modified in place), so a deep copy with the same weights shares it and a
merged or reloaded tower with other weights never reads a stale entry; each caption by its token ids
up to its last non-pad token (the features do not depend on a batch's padding).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
from torch import Tensor, nn

from .hf_text import drop_padded_columns

__all__ = [
    "cached_hf_text_features",
    "hf_sentence_embeddings",
    "base_sentence_embeddings",
    "base_text_features",
    "tower_sentence_embeddings",
    "clear_text_cache",
    "MAX_CACHED_CAPTIONS",
]

#: captions kept per set of weights (~1.5 KB each at a 384-d MiniLM); past it the cache starts over
MAX_CACHED_CAPTIONS = 500_000
#: sets of weights kept (the fine-tuned tower and its reference are one set when the trunk is frozen)
_MAX_WEIGHT_SETS = 4
_CACHES: OrderedDict[tuple, dict[bytes, Tensor]] = OrderedDict()
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BASE_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: parameter names of LoRA adapters (peft), which the base weights' fingerprint leaves out
_ADAPTER_MARK = "lora_"


def clear_text_cache() -> None:
    """Forget every cached caption (tests; a process that loads many towers)."""
    _CACHES.clear()
    _FINGERPRINTS.clear()
    _BASE_FINGERPRINTS.clear()


def _fingerprint(trunk: nn.Module, tensors: list[Tensor], memo: weakref.WeakKeyDictionary) -> tuple:
    """``tensors`` as a key: shape, dtype and float64 sum of each (memoised per ``trunk`` on the
    tensors' storage and in-place version counters)."""
    state = tuple((t.data_ptr(), t._version) for t in tensors)
    known = memo.get(trunk)
    if known is not None and known[0] == state:
        return known[1]
    with torch.no_grad():
        key = tuple((tuple(t.shape), str(t.dtype), float(t.double().sum())) for t in tensors)
    memo[trunk] = (state, key)
    return key


def _weights_fingerprint(trunk: nn.Module) -> tuple:
    """The trunk's weights (adapters included) as a key."""
    return _fingerprint(trunk, [*trunk.parameters(), *trunk.buffers()], _FINGERPRINTS)


def _base_fingerprint(trunk: nn.Module) -> tuple:
    """The trunk's weights without its LoRA adapters as a key: the key of the same trunk before
    adapters were added, so that both share one cache."""
    named = [*trunk.named_parameters(), *trunk.named_buffers()]
    return _fingerprint(trunk, [t for n, t in named if _ADAPTER_MARK not in n], _BASE_FINGERPRINTS)


def _cache_at(key: tuple) -> dict[bytes, Tensor]:
    cache = _CACHES.get(key)
    if cache is None or len(cache) > MAX_CACHED_CAPTIONS:
        cache = _CACHES[key] = {}
        while len(_CACHES) > _MAX_WEIGHT_SETS:
            _CACHES.popitem(last=False)
    _CACHES.move_to_end(key)
    return cache


def _row_keys(tokens: Tensor, pad: int) -> list[bytes]:
    """Each row's token ids up to its last non-pad token, as bytes."""
    rows = tokens.detach().cpu()
    used = rows != pad
    lengths = torch.where(used.any(dim=1), used.shape[1] - used.flip(1).int().argmax(dim=1), 0)
    return [rows[i, : int(n)].numpy().tobytes() for i, n in enumerate(lengths)]


def _pooled(text: nn.Module, tokens: Tensor) -> Tensor:
    """The frozen trunk and pooler on ``tokens`` (columns every row pads dropped), in eval mode."""
    pad = text.config.pad_token_id
    tokens = drop_padded_columns(tokens, pad)
    mask = (tokens != pad).long()
    was_training = text.transformer.training
    text.transformer.eval()
    try:
        with torch.no_grad():
            return text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
    finally:
        text.transformer.train(was_training)


def _frozen(text: nn.Module) -> bool:
    return not any(p.requires_grad for p in text.transformer.parameters())


def _cached_pooled(text: nn.Module, tokens: Tensor) -> Tensor:
    cache = _cache_at(_weights_fingerprint(text.transformer))
    return _filled(cache, text, tokens, lambda rows: _pooled(text, rows))


def _filled(cache: dict[bytes, Tensor], text: nn.Module, tokens: Tensor, compute) -> Tensor:
    """Each row's cached features, ``compute`` run on the rows not cached yet."""
    keys = _row_keys(tokens, text.config.pad_token_id)
    missing = [i for i, k in enumerate(keys) if k not in cache]
    if missing:
        fresh = compute(tokens[missing])
        for i, row in zip(missing, fresh, strict=True):
            cache[keys[i]] = row
    return torch.stack([cache[k] for k in keys]).to(tokens.device)


def cached_hf_text_features(model: nn.Module, tokens: Tensor) -> Tensor | None:
    """``model.encode_text(tokens)`` with the trunk's pooled output cached per caption; ``None`` where
    the cache does not apply (a trunk with trainable weights, token outputs requested, no pad id)."""
    text = model.text
    pad = getattr(text.config, "pad_token_id", None)
    if pad is None or getattr(text, "output_tokens", False) or tokens.ndim != 2 or not _frozen(text):
        return None
    return _projected(text, _cached_pooled(text, tokens))


def _projected(text: nn.Module, pooled: Tensor) -> Tensor:
    """The text tower's projection of its pooled outputs, in the projection's dtype."""
    weight = next(text.proj.parameters(), None)  # None: an identity projection
    return text.proj(pooled if weight is None else pooled.to(weight.dtype))


def _sentence_tower(model: nn.Module, tokens: Tensor) -> nn.Module:
    """``model``'s HF text tower, or a named error where sentence embeddings cannot be had."""
    return _checked_tower(getattr(model, "text", None), tokens)


def _checked_tower(text: nn.Module | None, tokens: Tensor) -> nn.Module:
    """``text`` if it is an HF text tower that gives sentence embeddings of ``tokens``, else a named error."""
    if text is None or not hasattr(text, "transformer") or not hasattr(text, "pooler"):
        raise ValueError(
            "sentence embeddings need a CLIP with a Hugging Face text tower ('VISION+hf:SOURCE')"
        )
    if getattr(text.config, "pad_token_id", None) is None or tokens.ndim != 2:
        raise ValueError("sentence embeddings need (batch, length) token ids and a tokenizer with a pad id")
    return text


def hf_sentence_embeddings(model: nn.Module, tokens: Tensor) -> Tensor:
    """The HF text model's own sentence embeddings of ``tokens`` (its pooled output, before the CLIP
    projection; mean pooling is what sentence-transformers' all-MiniLM-L6-v2 uses), cached."""
    return _cached_pooled(_sentence_tower(model, tokens), tokens)


def tower_sentence_embeddings(text: nn.Module, tokens: Tensor) -> Tensor:
    """:func:`hf_sentence_embeddings` of an HF text tower ``text`` itself (open_clip's ``HFTextEncoder``,
    not the CLIP holding it), cached."""
    return _cached_pooled(_checked_tower(text, tokens), tokens)


def base_sentence_embeddings(model: nn.Module, tokens: Tensor, peft_model: nn.Module | None) -> Tensor:
    """:func:`hf_sentence_embeddings` of the text model *before* LoRA: with ``peft_model``'s adapters
    switched off, cached by the base weights (the cache of the same model without adapters), so a
    fine-tune computes each caption's once. ``peft_model``: the ``PeftModel`` wrapping ``model``
    (``None``: no adapters)."""
    text = _sentence_tower(model, tokens)
    if peft_model is None:
        return _cached_pooled(text, tokens)

    def unadapted(rows: Tensor) -> Tensor:
        with peft_model.disable_adapter():
            return _pooled(text, rows)

    return _filled(_cache_at(_base_fingerprint(text.transformer)), text, tokens, unadapted)


def base_text_features(model: nn.Module, tokens: Tensor, peft_model: nn.Module | None) -> Tensor:
    """The CLIP text features of ``tokens`` as the text model *before* LoRA gives them: its cached
    :func:`base_sentence_embeddings` through the current (trained) projection, so gradients reach the
    projection only."""
    return _projected(_sentence_tower(model, tokens), base_sentence_embeddings(model, tokens, peft_model))
