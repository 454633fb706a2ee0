"""Collections a user has: an image folder, a file of image paths or prompts, WebDataset shards.

A source enumerates its items lazily in a fixed order and groups them into *chunks*: ``batch_size``
consecutive items of a folder or list, or one tar shard. Chunks are the unit of work, of
resumption (one finished chunk = one part file) and of distribution (chunk ``c`` belongs to rank
``c % world`` and, inside it, to DataLoader worker ``(c // world) % workers``), so memory stays
bounded by a chunk whatever the collection size, and any split of the work gives the same rows.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from .tables import table_rows

__all__ = [
    "Item",
    "Source",
    "ImageFolder",
    "ImageList",
    "TextFile",
    "Shards",
    "expand_braces",
    "IMAGE_SUFFIXES",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: a shard sample's image member, first found first: every format an image folder reads
SHARD_IMAGE_EXTENSIONS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)
_TEXT_COLUMNS = ("text", "prompt", "caption")
_PATH_COLUMNS = ("path", "image", "file")


@dataclass(frozen=True)
class Item:
    index: int  # position in the source's order (global, stable)
    id: str  # a file's path relative to the source, "shard.tar/key", or a row id
    modality: str  # "image" or "text"
    ref: str  # image path (or tar member) for images, the text itself for texts
    payload: bytes | None = None  # image bytes read from a shard
    problem: str | None = None  # why it cannot be read (listed as skipped, never dropped silently)
    digest: str | None = None  # sha256 of the content (image bytes or text), set once it was read


class Source:
    """Base: ``items()`` in a fixed order, ``chunks(batch_size)`` of them, ``describe()`` for metadata."""

    modality = "image"

    def items(self) -> Iterator[Item]:
        raise NotImplementedError

    def chunks(self, batch_size: int) -> Iterator[tuple[int, list[Item]]]:
        it = self.items()
        for c in itertools.count():
            chunk = list(itertools.islice(it, batch_size))
            if not chunk:
                return
            yield c, chunk

    def describe(self) -> dict:
        raise NotImplementedError

    def num_chunks(self, batch_size: int) -> int:
        """How many chunks there are (one pass over the names, nothing decoded): the bar's total."""
        return -(-sum(1 for _ in self.items()) // batch_size)


def open_image(item: Item) -> Image.Image:
    """The RGB image of an item (raises on unreadable, non-image or decompression-bomb data)."""
    with Image.open(io.BytesIO(item.payload) if item.payload is not None else item.ref) as im:
        return im.convert("RGB")


class ImageFolder(Source):
    """Every image file below ``root`` (recursive, common formats), in sorted path order."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")

    def _walk(self, folder: Path) -> Iterator[Path]:
        """Image files below ``folder``; a symbolic link to a folder is not followed (it could lead
        outside the folder, or back into it forever), a link to a file is read."""
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.is_dir() and entry.is_symlink():
                logger.warning("%s: a link to a folder, not followed", entry)
            elif entry.is_dir():
                yield from self._walk(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                yield entry

    def items(self) -> Iterator[Item]:
        for i, path in enumerate(self._walk(self.root)):
            yield Item(i, str(path.relative_to(self.root)), "image", str(path))

    def describe(self) -> dict:
        return {"type": "image-folder", "root": str(self.root.resolve())}


class _ListedSource(Source):
    """A source read from one file; ``what`` names it in errors and metadata."""

    what = "list"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.what} not found: {self.path}")

    def describe(self) -> dict:
        return {"type": self.what.replace(" ", "-"), "path": str(self.path.resolve())}


class ImageList(_ListedSource):
    """Image paths listed in a file (relative paths are relative to the file's folder)."""

    what = "image list"

    def items(self) -> Iterator[Item]:
        for i, (_, value) in enumerate(table_rows(self.path, _PATH_COLUMNS, "image path")):
            full = Path(value) if Path(value).is_absolute() else self.path.parent / value
            yield Item(i, value, "image", str(full))


class TextFile(_ListedSource):
    """Prompts or captions: one per line (.txt) or a ``text``/``prompt``/``caption`` column."""

    modality, what = "text", "text file"

    def items(self) -> Iterator[Item]:
        for i, (row_id, value) in enumerate(table_rows(self.path, _TEXT_COLUMNS, "text")):
            yield Item(i, row_id, "text", value)


def expand_braces(pattern: str) -> list[str]:
    """``shards/{000..002}.tar`` -> ``shards/000.tar``, ``shards/001.tar``, ``shards/002.tar``
    (zero padding kept; several ranges expand in order)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for n in range(int(lo), int(hi) + 1):
        out += expand_braces(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end() :])
    return out


class Shards(Source):
    """WebDataset tar shards (img2dataset/LAION layout: ``KEY.jpg``, ``KEY.txt``, ... per sample);
    each shard is one chunk. ``modality="image"`` yields the images, ``"text"`` the captions."""

    def __init__(self, pattern: str, modality: str = "image"):
        self.paths = [Path(p) for p in expand_braces(pattern)]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"shard(s) not found: {missing[:3]}{'...' if len(missing) > 3 else ''}")
        self.modality, self.pattern = modality, pattern

    def _samples(self, path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
        """``(key, {extension: bytes})`` per sample, streaming through the tar once."""
        key, sample = None, {}
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = member.name.rpartition(".")
                if stem != key and key is not None:
                    yield key, sample
                    sample = {}
                key = stem
                sample[ext.lower()] = tar.extractfile(member).read()
        if key is not None:
            yield key, sample

    def _shard_items(self, shard: int, start: int) -> list[Item]:
        path, items = self.paths[shard], []
        for key, sample in self._samples(path):
            item_id = f"{path.name}/{key}"
            if self.modality == "text":
                if "txt" in sample:
                    items.append(
                        Item(
                            start + len(items),
                            item_id,
                            "text",
                            sample["txt"].decode("utf-8", errors="replace"),
                        )
                    )
                continue
            ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in sample), None)
            if ext is not None:
                items.append(Item(start + len(items), item_id, "image", f"{path}:{key}.{ext}", sample[ext]))
            else:
                problem = f"no image member in the sample (found: {', '.join(sorted(sample)) or 'nothing'})"
                items.append(Item(start + len(items), item_id, "image", f"{path}:{key}", None, problem))
        return items

    def chunks(self, batch_size: int) -> Iterator[tuple[int, list[Item]]]:
        for shard in range(len(self.paths)):
            # indices are shard * 1e9 + position: stable without reading earlier shards
            yield shard, self._shard_items(shard, shard * 1_000_000_000)

    def items(self) -> Iterator[Item]:
        for _, chunk in self.chunks(0):
            yield from chunk

    def num_chunks(self, batch_size: int) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        return {
            "type": "webdataset",
            "pattern": self.pattern,
            "shards": len(self.paths),
            "modality": self.modality,
        }


def open_source(
    *,
    images: str | None = None,
    texts: str | None = None,
    shards: str | None = None,
    shard_modality: str = "image",
) -> Source:
    """The source named by exactly one of ``images`` (folder or list file), ``texts``, ``shards``."""
    given = [n for n, v in (("images", images), ("texts", texts), ("shards", shards)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one of --images, --texts, --shards (got {given or 'none'})")
    if images:
        return ImageFolder(images) if Path(images).is_dir() else ImageList(images)
    if texts:
        return TextFile(texts)
    return Shards(shards, shard_modality)
