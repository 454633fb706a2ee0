"""A causal text tower reads only as many token columns as the batch's longest caption.

open_clip's built-in text tower (``CLIP.encode_text``) always runs its whole context (77 tokens for CLIP),
although the pooled feature is the one at the end-of-text token and the attention is causal: a position
never sees the positions after it. Columns after the last pooled position of every row therefore change
nothing, and :func:`trimmed_text_features` drops them before the forward: the tower runs as many columns
as the batch's longest caption has tokens (about 21 on the embedded world), not 77.
``bench/text_context.py`` times the 24-token, full 77-token and trimmed forwards.
The result equals ``encode_text`` (tests/test_text_trim.py); towers it does not know (a custom text tower,
a pooling that is not at a token) keep open_clip's forward.
"""

from __future__ import annotations

from open_clip.transformer import text_global_pool
from torch import Tensor, nn

__all__ = ["check_token_batch", "pooled_positions", "trimmable", "trimmed_text_features"]

#: open_clip text poolings that read one token per row, found from the token ids
TOKEN_POOLS = ("argmax", "eos")


def trimmable(model: nn.Module) -> bool:
    """Whether ``model`` has open_clip's built-in causal text tower with a pooling at one token."""
    mask = getattr(model, "attn_mask", None)
    return (
        isinstance(getattr(model, "token_embedding", None), nn.Embedding)
        and isinstance(getattr(model, "positional_embedding", None), Tensor)
        and isinstance(mask, Tensor)
        and getattr(model, "text_pool_type", None) in TOKEN_POOLS
        and getattr(model, "cls_emb", None) is None
    )


def pooled_positions(tokens: Tensor, pool_type: str, eos_id: int | None) -> Tensor:
    """The column each row's feature is pooled from (open_clip's ``text_global_pool`` rule)."""
    if pool_type == "argmax":
        return tokens.argmax(dim=-1)
    if eos_id is None:
        raise ValueError("an 'eos' text pooling needs the tower's eos token id")
    return (tokens == eos_id).int().argmax(dim=-1)


def check_token_batch(tokens: Tensor, context: int) -> None:
    """Raise a clear error unless ``tokens`` is a ``(batch, length <= context)`` integer id tensor (the
    tokenizer's output); open_clip's full forward refuses other widths deep in a broadcast."""
    if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype.is_complex:
        raise ValueError(
            f"token ids must be a (batch, length) integer tensor (model.tokenize's output), "
            f"got shape {tuple(tokens.shape)} of {tokens.dtype}"
        )
    if tokens.shape[1] > context:
        raise ValueError(
            f"token ids are {tokens.shape[1]} wide, past the text tower's {context}-token context"
        )


def trimmed_text_features(model: nn.Module, tokens: Tensor) -> Tensor:
    """``model.encode_text(tokens, normalize=False)``, computed on the columns up to the last pooled one."""
    if not trimmable(model):
        return model.encode_text(tokens, normalize=False)
    check_token_batch(tokens, model.positional_embedding.shape[0])
    if tokens.shape[0] == 0:
        return model.encode_text(tokens, normalize=False)
    eos_id = getattr(model, "text_eos_id", None)
    length = int(pooled_positions(tokens, model.text_pool_type, eos_id).max()) + 1
    text = tokens[:, :length]
    dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(dtype) + model.positional_embedding[:length].to(dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=eos_id)
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
