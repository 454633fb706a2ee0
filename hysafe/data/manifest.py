"""On-disk quadruplet manifests: JSONL, CSV or Parquet rows with image paths relative to a root.

One row per quadruplet::

    {"id": "q0001", "safe_text": "a red circle ...", "unsafe_text": "a red circle ... blood",
     "safe_image": "images/q0001_safe.png", "unsafe_image": "images/q0001_unsafe.png",
     "category": "blood", "split": "train"}

Required: ``safe_text``, ``unsafe_text``. Optional: ``id`` (defaults to the row number),
``safe_image``, ``unsafe_image`` (omit both for text-only use), ``category``, ``split``
(default ``"train"``). Image paths are relative to ``root`` (default: the manifest's folder).
Any other column is an error, so a typo never silently drops a field.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger(__name__)

__all__ = [
    "Quadruplet",
    "ManifestError",
    "REQUIRED",
    "OPTIONAL",
    "load_manifest",
    "write_manifest",
    "read_rows",
]

REQUIRED = ("safe_text", "unsafe_text")
OPTIONAL = ("id", "safe_image", "unsafe_image", "category", "split")
SPLITS = ("train", "validation", "test")


class ManifestError(ValueError):
    """A bad manifest row; the message names the file, the row and the field."""


@dataclass(frozen=True)
class Quadruplet:
    id: str
    safe_text: str
    unsafe_text: str
    safe_image: str | None = None  # absolute path, or None for text-only rows
    unsafe_image: str | None = None
    category: str = "unknown"
    split: str = "train"
    manifest: str | None = field(default=None, compare=False)  # the file the row came from, for messages


def _decode(raw: bytes, path: Path, i: int) -> str | ManifestError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return ManifestError(
            f"{path}, row {i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
            f"column {e.start + 1}); save the manifest as UTF-8"
        )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | ManifestError]]:
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            line = _decode(raw.removeprefix(b"\xef\xbb\xbf") if i == 1 else raw, path, i)
            if isinstance(line, ManifestError):
                yield i, line
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, ManifestError(f"{path}, row {i}: invalid JSON ({e.msg})")
                continue
            yield (
                i,
                row
                if isinstance(row, dict)
                else ManifestError(f"{path}, row {i}: expected a JSON object, got {type(row).__name__}"),
            )


def _check_header(path: Path, header: list[str] | None) -> None:
    """A CSV header names each column once (a repeated name would silently keep one of them)."""
    if header is None:
        return
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ManifestError(f"{path}, header: column(s) {repeated} named more than once")


def _csv_row(path: Path, i: int, row: dict, width: int) -> dict | ManifestError:
    """One CSV data row, or the error that names what is wrong with it."""
    if None in row:  # csv.DictReader's key for values beyond the header
        extra = len(row[None])
        return ManifestError(
            f"{path}, row {i}: {width + extra} values for the header's {width} columns "
            "(a value holding the delimiter must be quoted)"
        )
    values = [str(v) for v in row.values() if v is not None]
    if any(_has_surrogate(v) for v in values + list(row)):
        return ManifestError(f"{path}, row {i}: not UTF-8 text; save the manifest as UTF-8")
    return {k: v for k, v in row.items() if v not in ("", None)}


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict | ManifestError]]:
    # undecodable bytes become lone surrogates, so one bad row can be named (and skipped)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        _check_header(path, reader.fieldnames)
        for i, row in enumerate(reader, start=1):
            yield i, _csv_row(path, i, row, len(reader.fieldnames or ()))


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict | ManifestError]]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for foreign or truncated files
        raise ManifestError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e
    for i, row in enumerate(records, start=1):
        yield i, {k: v for k, v in row.items() if v is not None and v == v}


def read_rows(path: Path) -> Iterator[tuple[int, dict | ManifestError]]:
    """``(row_number, row)`` pairs from a JSONL, CSV or Parquet file (row numbers are 1-based
    data rows; for CSV the header is not counted). A row that cannot be read (bad JSON, bad
    encoding) comes as a :class:`ManifestError` in place of the dict, so callers can skip it."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _jsonl_rows(path)
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise ManifestError(f"{path}: unsupported manifest type {suffix!r}; use .jsonl, .csv, .tsv or .parquet")


def _check_image(path: Path, i: int, field: str, full: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(full) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ManifestError(f"{path}, row {i}, field {field!r}: unreadable image {full} ({e})") from e


def _parse_row(
    path: Path, i: int, row: dict, root: Path, check_files: bool, verify_images: bool
) -> Quadruplet:
    unknown = set(row) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise ManifestError(
            f"{path}, row {i}: unknown column(s) {sorted(unknown)}; allowed: {REQUIRED + OPTIONAL}"
        )
    for column in REQUIRED:
        value = row.get(column)
        if value is None:
            raise ManifestError(f"{path}, row {i}, field {column!r}: missing caption")
        if not isinstance(value, str):
            raise ManifestError(
                f"{path}, row {i}, field {column!r}: a caption must be text, got "
                f"{type(value).__name__} {value!r}"
            )
        if not value.strip():
            raise ManifestError(f"{path}, row {i}, field {column!r}: empty caption")
    split = str(row.get("split", "train"))
    if split not in SPLITS:
        raise ManifestError(f"{path}, row {i}, field 'split': {split!r} is not one of {SPLITS}")
    images = {}
    for column in ("safe_image", "unsafe_image"):
        rel = row.get(column)
        if rel is None:
            images[column] = None
            continue
        full = (root / str(rel)).resolve()
        if check_files and not full.is_file():
            raise ManifestError(f"{path}, row {i}, field {column!r}: image file not found: {full}")
        if verify_images:
            _check_image(path, i, column, full)
        images[column] = str(full)
    if (images["safe_image"] is None) != (images["unsafe_image"] is None):
        raise ManifestError(f"{path}, row {i}: give both safe_image and unsafe_image, or neither (text-only)")
    return Quadruplet(
        id=str(row.get("id", i)),
        safe_text=row["safe_text"].strip(),
        unsafe_text=row["unsafe_text"].strip(),
        category=str(row.get("category", "unknown")),
        split=split,
        manifest=str(path),
        **images,
    )


def load_manifest(
    path: str | Path,
    *,
    root: str | Path | None = None,
    split: str | None = None,
    skip_bad_rows: bool = False,
    check_files: bool = True,
    verify_images: bool = False,
) -> list[Quadruplet]:
    """Read and validate a manifest. Bad rows raise :class:`ManifestError` naming file, row and
    field; with ``skip_bad_rows=True`` they are dropped and counted in a warning instead.

    ``check_files`` checks that image files exist; ``verify_images`` also decodes their headers
    (slower; catches truncated or non-image files up front instead of mid-training)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = Path(root) if root is not None else path.parent
    rows, skipped = [], []
    for i, raw in read_rows(path):
        try:
            if isinstance(raw, ManifestError):
                raise raw
            q = _parse_row(path, i, raw, root, check_files, verify_images)
        except ManifestError as e:
            if not skip_bad_rows:
                raise
            skipped.append(str(e))
            continue
        if split is None or q.split == split:
            rows.append(q)
    if skipped:
        logger.warning("skipped %d bad row(s) of %s; first: %s", len(skipped), path, skipped[0])
    if not rows:
        raise ManifestError(f"{path}: no usable rows" + (f" in split {split!r}" if split else ""))
    return rows


def write_manifest(rows: Iterable[Quadruplet], path: str | Path, *, root: str | Path | None = None) -> Path:
    """Write rows as JSONL with image paths relative to ``root`` (default: the manifest's folder)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for q in rows:
            d = asdict(q)
            del d["manifest"]
            for column in ("safe_image", "unsafe_image"):
                if d[column] is None:
                    del d[column]
                else:
                    d[column] = str(Path(d[column]).resolve().relative_to(root.resolve()))
            f.write(json.dumps(d) + "\n")
    return path
