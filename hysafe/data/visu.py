"""ViSU loader: ViSU-Text rows joined with COCO images and a folder of generated unsafe images.

ViSU-Text (gated on the Hugging Face hub) has splits ``train``/``validation``/``test`` with
columns ``incremental_id, safe, nsfw, coco_id, tag, prompt_id``. Safe images are COCO images
found by ``coco_id`` (any file under ``coco_root`` whose name ends in the zero-padded id, e.g.
``COCO_train2014_000000123456.jpg`` or ``000000123456.jpg``); unsafe images are not released, so
users generate them from the ``nsfw`` captions and store them as ``{unsafe_root}/{incremental_id}.png``
(or .jpg/.jpeg/.webp). Without image folders the rows load text-only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .manifest import ManifestError, Quadruplet, read_rows

logger = logging.getLogger(__name__)

__all__ = ["VISU_COLUMNS", "load_visu", "index_coco_images"]

VISU_COLUMNS = ("incremental_id", "safe", "nsfw", "coco_id", "tag", "prompt_id")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_SPLIT_FILES = ("{split}.parquet", "{split}.jsonl", "{split}.csv")


def index_coco_images(root: str | Path) -> dict[int, str]:
    """Map COCO image id -> path for every image below ``root`` (trailing digits of the name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {root}")
    index = {}
    for p in root.rglob("*"):
        m = re.search(r"(\d+)$", p.stem)
        if m and p.suffix.lower() in _IMAGE_SUFFIXES:
            index[int(m.group(1))] = str(p)
    if not index:
        raise FileNotFoundError(f"no COCO images (*.jpg/*.png with a numeric id) below {root}")
    return index


def _hub_rows(name: str, split: str):
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError(
            f"loading {name!r} from the hub needs the `datasets` package (pip install datasets)"
        ) from e
    for i, row in enumerate(load_dataset(name, split=split), start=1):
        yield i, dict(row)


def _split_file(source: Path, split: str) -> Path:
    if source.is_file():
        return source
    for pattern in _SPLIT_FILES:
        candidate = source / pattern.format(split=split)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no ViSU split file for {split!r} in {source} "
        f"(looked for {', '.join(p.format(split=split) for p in _SPLIT_FILES)})"
    )


def load_visu(
    source: str | Path,
    *,
    split: str = "test",
    coco_root: str | Path | None = None,
    unsafe_root: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> list[Quadruplet]:
    """Load one ViSU split as :class:`Quadruplet` rows.

    ``source``: a split file (.parquet/.jsonl/.csv), a folder holding ``{split}.{parquet,jsonl,csv}``,
    or ``"hf:aimagelab/ViSU-Text"`` (needs ``datasets`` and hub access). Give both ``coco_root`` and
    ``unsafe_root`` for image rows, neither for text-only rows. Bad rows raise
    :class:`~hysafe.data.manifest.ManifestError` naming file, row and field, or are skipped and
    counted with ``skip_bad_rows=True``.
    """
    if (coco_root is None) != (unsafe_root is None):
        raise ValueError("give both coco_root and unsafe_root for image rows, or neither for text-only rows")
    if isinstance(source, str) and source.startswith("hf:"):
        where, rows = source, _hub_rows(source[3:], split)
    else:
        path = _split_file(Path(source), split)
        where, rows = str(path), read_rows(path)
    coco = index_coco_images(coco_root) if coco_root is not None else None
    unsafe_dir = Path(unsafe_root) if unsafe_root is not None else None
    if unsafe_dir is not None and not unsafe_dir.is_dir():
        raise FileNotFoundError(f"unsafe image folder not found: {unsafe_dir}")
    out, skipped = [], []
    for i, row in rows:
        try:
            out.append(_parse(where, i, row, split, coco, unsafe_dir))
        except ManifestError as e:
            if not skip_bad_rows:
                raise
            skipped.append(str(e))
    if skipped:
        logger.warning("skipped %d bad ViSU row(s) of %s; first: %s", len(skipped), where, skipped[0])
    if not out:
        raise ManifestError(f"{where}: no usable ViSU rows in split {split!r}")
    return out


def _parse(
    where: str, i: int, row: dict | ManifestError, split: str, coco: dict | None, unsafe_dir: Path | None
) -> Quadruplet:
    if isinstance(row, ManifestError):
        raise row
    unknown = set(row) - set(VISU_COLUMNS)
    if unknown:
        raise ManifestError(
            f"{where}, row {i}: unknown column(s) {sorted(unknown)}; ViSU columns are {VISU_COLUMNS}"
        )
    for field in ("safe", "nsfw"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise ManifestError(f"{where}, row {i}, field {field!r}: empty or missing caption")
    qid = str(row.get("incremental_id", i))
    images = {"safe_image": None, "unsafe_image": None}
    if coco is not None:
        try:
            coco_id = int(row["coco_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(
                f"{where}, row {i}, field 'coco_id': missing or not an integer ({row.get('coco_id')!r})"
            ) from e
        if coco_id not in coco:
            raise ManifestError(f"{where}, row {i}, field 'coco_id': no COCO image with id {coco_id}")
        images["safe_image"] = coco[coco_id]
        candidates = [unsafe_dir / f"{qid}{s}" for s in _IMAGE_SUFFIXES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ManifestError(
                f"{where}, row {i}, field 'incremental_id': "
                f"no unsafe image {unsafe_dir}/{qid}.{{png,jpg,jpeg,webp}}"
            )
        images["unsafe_image"] = str(found)
    return Quadruplet(
        id=qid,
        safe_text=row["safe"].strip(),
        unsafe_text=row["nsfw"].strip(),
        category=str(row.get("tag", "unknown")),
        split=split,
        manifest=where,
        **images,
    )
