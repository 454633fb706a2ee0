"""A torch Dataset over quadruplet rows: preprocessed images and pre-tokenised captions."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..utils.progress import bar
from .manifest import Quadruplet, load_manifest

logger = logging.getLogger(__name__)

__all__ = ["QuadrupletDataset", "load_image", "pad_id", "tokenize_captions", "truncated_count"]


def load_image(
    path: str, preprocess: Callable, *, row_id: str = "?", field: str = "image", manifest: str | None = None
) -> torch.Tensor:
    """Open an image file and preprocess it; unreadable files (corrupt, not an image, a
    decompression bomb) raise ``ValueError`` naming the manifest, row and field."""
    try:
        with Image.open(path) as im:
            return preprocess(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        where = f"{manifest}, " if manifest else ""
        raise ValueError(f"{where}row {row_id}, field {field!r}: unreadable image {path} ({e})") from e


def pad_id(tokenizer: Callable) -> int:
    """The padding id of an open_clip tokenizer: a Hugging Face tokenizer's own (RoBERTa's is 1),
    0 for open_clip's BPE tokenizer."""
    pad = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None)
    return pad if isinstance(pad, int) else 0


def truncated_count(tokens: torch.Tensor, pad: int = 0) -> int:
    """How many rows of token ids ``(N, context)`` fill the whole context: they were cut there (or
    fit it exactly; open_clip's tokenizers end a cut caption with the end token at the last place).
    ``pad``: the tokenizer's padding id (:func:`pad_id`)."""
    return int((tokens[:, -1] != pad).sum()) if tokens.dim() == 2 else 0


def tokenize_captions(tokenizer: Callable, texts: Sequence[str], *, what: str = "texts") -> torch.Tensor:
    """Token ids of ``texts``; empty or blank texts are refused (they would be scored, not
    rejected), and captions cut at the model's context length are counted in one warning."""
    texts = list(texts)
    blank = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if blank:
        raise ValueError(
            f"{what}: {len(blank)} empty or blank text(s) (first at position {blank[0]}); give non-empty text"
        )
    tokens = tokenizer(texts)
    truncated = truncated_count(tokens, pad_id(tokenizer))
    if truncated:
        logger.warning(
            "%s: %d of %d reach the model's context length of %d tokens and were truncated",
            what,
            truncated,
            len(texts),
            tokens.shape[-1],
        )
    return tokens


class QuadrupletDataset(Dataset):
    """Items are dicts with ``index``, ``text``, ``unsafe_text`` (token ids) and, for rows with
    images, ``image`` and ``unsafe_image`` (preprocessed tensors).

    ``preload=True`` decodes every image once up front (fast epochs for small datasets);
    ``targets[i]`` (optional) names the row whose safe caption/image is row ``i``'s proximal safe
    target (SafeR-CLIP), yielded as ``target_text``/``target_image``.
    """

    def __init__(
        self,
        rows: Sequence[Quadruplet],
        *,
        preprocess: Callable | None,
        tokenizer: Callable,
        preload: bool = False,
        targets: Sequence[int] | None = None,
        progress: bool = True,
    ):
        if not rows:
            raise ValueError("QuadrupletDataset needs at least one row")
        self.rows = list(rows)
        self.preprocess = preprocess
        self.has_images = all(r.safe_image is not None for r in self.rows)
        if not self.has_images and any(r.safe_image is not None for r in self.rows):
            raise ValueError("mixing rows with and without images in one dataset is not supported")
        if self.has_images and preprocess is None:
            raise ValueError("rows have images: pass the model's preprocess")
        self.pad_id = pad_id(tokenizer)
        self.safe_tokens = tokenize_captions(
            tokenizer, [r.safe_text for r in self.rows], what="safe captions"
        )
        self.unsafe_tokens = tokenize_captions(
            tokenizer, [r.unsafe_text for r in self.rows], what="unsafe captions"
        )
        self.targets = None if targets is None else self._as_targets(targets)
        self._images: torch.Tensor | None = None
        if preload and self.has_images:
            self._images = torch.stack(
                [
                    torch.stack([self._load(i, "safe_image"), self._load(i, "unsafe_image")])
                    for i in bar(range(len(self.rows)), desc="loading images", enabled=progress)
                ]
            )

    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path,
        model,
        *,
        split: str | None = None,
        preload: bool = True,
        **manifest_options,
    ) -> "QuadrupletDataset":
        """The rows of ``split`` of a manifest, preprocessed and tokenised for ``model`` (anything
        with ``preprocess`` and ``tokenizer``); ``manifest_options`` go to :func:`load_manifest`."""
        rows = load_manifest(manifest, split=split, **manifest_options)
        return cls(rows, preprocess=model.preprocess, tokenizer=model.tokenizer, preload=preload)

    def with_targets(self, targets: Sequence[int]) -> "QuadrupletDataset":
        """A shallow copy (shared images and tokens) whose items carry proximal targets."""
        clone = copy.copy(self)
        clone.targets = self._as_targets(targets)
        return clone

    def _as_targets(self, targets: Sequence[int]) -> torch.Tensor:
        t = torch.as_tensor(targets, dtype=torch.long)
        if t.shape != (len(self.rows),):
            raise ValueError(f"targets must have one entry per row ({len(self.rows)}), got {tuple(t.shape)}")
        return t

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, i: int, field: str) -> torch.Tensor:
        row = self.rows[i]
        return load_image(
            getattr(row, field), self.preprocess, row_id=row.id, field=field, manifest=row.manifest
        )

    def image(self, i: int, unsafe: bool = False) -> torch.Tensor:
        if self._images is not None:
            return self._images[i, int(unsafe)]
        return self._load(i, "unsafe_image" if unsafe else "safe_image")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"index": torch.tensor(i), "text": self.safe_tokens[i], "unsafe_text": self.unsafe_tokens[i]}
        if self.has_images:
            item["image"] = self.image(i)
            item["unsafe_image"] = self.image(i, unsafe=True)
        if self.targets is not None:
            t = int(self.targets[i])
            item["target_text"] = self.safe_tokens[t]
            if self.has_images:
                item["target_image"] = self.image(t)
        return item

    @property
    def categories(self) -> list[str]:
        return [r.category for r in self.rows]
