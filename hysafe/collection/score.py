"""``hysafe score``: an NSFW score and decision for every item of a collection, to Parquet.

Columns: ``index`` (position in the source), ``id``, ``path`` (images) or ``text``, ``modality``,
``score`` (distance to the root for HySAC; the model's own scorer otherwise, e.g. similarity to
NSFW concept prompts), ``unsafe`` (the decision at the stated threshold, null without one). The
file's metadata holds the model fingerprint, the checkpoint, the source and the threshold rule.
Unreadable items are skipped, counted and listed in ``OUT.skipped.csv``. Resumable (per chunk)
and splittable over torchrun ranks (:mod:`.parts`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..data.dataset import QuadrupletDataset
from ..models.classifier import choose_threshold
from ..models.embed import embed_dataset
from ..models.safety_model import SafetyModel
from ..populations import modality_pair
from .embed import embed_chunks, model_fingerprint, precision_record, rank_and_world
from .parts import PartStore
from .sources import Source

logger = logging.getLogger(__name__)

__all__ = ["ScoreResult", "resolve_threshold", "score_collection"]


@dataclass
class ScoreResult:
    path: Path | None  # None on ranks other than 0
    rows: int
    skipped: int
    threshold: float | None
    rule: str


def resolve_threshold(
    model: SafetyModel, modality: str, rule: str | float | None, calibrate: str | None = None
) -> tuple[float | None, str]:
    """``(threshold, description)`` from ``None`` (the model's bounds when it has them), a number,
    ``"bounds"``, or ``"fpr:0.05"`` (calibrated on the labelled manifest ``calibrate``)."""
    if isinstance(rule, (int, float)) or (isinstance(rule, str) and _is_number(rule)):
        value = float(rule)
        if not math.isfinite(value):
            raise ValueError(f"threshold must be a finite number, got {rule}")
        return value, f"fixed {value}"
    if rule is None or rule == "bounds":
        clf = model.nsfw_classifier(modality)
        if clf.threshold is None:
            if rule == "bounds":
                raise ValueError("threshold 'bounds' needs a model with safety bounds (a trained HySAC)")
            return None, "none (no bounds; pass --threshold)"
        return clf.threshold, f"bounds: midpoint of the safe/unsafe mean {clf.name} ({modality})"
    if isinstance(rule, str) and rule.startswith("fpr:"):
        target = _fpr_target(rule)
        if calibrate is None:
            raise ValueError("threshold 'fpr:X' needs --calibrate MANIFEST (labelled quadruplets)")
        emb = embed_dataset(model, _calibration_set(calibrate, model))
        safe, unsafe = (emb[p.key] for p in modality_pair(modality))
        scores = torch.cat([model.nsfw_score(safe, modality), model.nsfw_score(unsafe, modality)])
        labels = torch.cat([torch.zeros(len(safe)), torch.ones(len(unsafe))])
        return choose_threshold(
            scores, labels, rule="fpr", target_fpr=target
        ), f"fpr <= {target} on {calibrate}"
    raise ValueError(f"bad threshold {rule!r}: a number, 'bounds' or 'fpr:0.05'")


def _calibration_set(manifest: str, model: SafetyModel) -> QuadrupletDataset:
    """The ``validation`` rows of a calibration manifest: a threshold is chosen on validation data,
    never on the test split a result is reported on (nor on the rows a model was trained on)."""
    from ..data import load_manifest

    splits = {r.split for r in load_manifest(manifest)}
    if "validation" not in splits:
        raise ValueError(
            f"--calibrate {manifest}: no rows with split 'validation' (it has {sorted(splits)}); "
            "an 'fpr:X' threshold is calibrated on validation rows only, never on test"
        )
    return QuadrupletDataset.from_manifest(manifest, model, split="validation")


def _fpr_target(rule: str) -> float:
    """The rate of ``fpr:X``: a number in (0, 1)."""
    try:
        target = float(rule[4:])
    except ValueError:
        raise ValueError(
            f"bad threshold {rule!r}: 'fpr:X' takes a rate X in (0, 1), e.g. 'fpr:0.05'"
        ) from None
    if not 0 < target < 1:
        raise ValueError(f"bad threshold {rule!r}: the false-positive rate must be in (0, 1), got {target}")
    return target


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _table(chunk, scores: torch.Tensor, threshold: float | None, modality: str) -> pa.Table:
    values = scores.tolist()
    columns = {"index": [i.index for i in chunk.items], "id": [i.id for i in chunk.items]}
    columns["path" if modality == "image" else "text"] = [i.ref for i in chunk.items]
    columns |= {
        "modality": [modality] * len(values),
        "score": values,
        "unsafe": [None if threshold is None else v >= threshold for v in values],
    }
    schema = pa.schema(
        [
            ("index", pa.int64()),
            ("id", pa.string()),
            ("path" if modality == "image" else "text", pa.string()),
            ("modality", pa.string()),
            ("score", pa.float64()),
            ("unsafe", pa.bool_()),
        ],
        metadata={"skipped": json.dumps(chunk.skipped)},
    )
    return pa.table(columns, schema=schema)


def _finished_result(out: Path, run: dict) -> ScoreResult | None:
    """The result of a finished earlier run of the same settings (``out`` complete, no parts left);
    ``None`` when there is work to do. A complete ``out`` of other settings is refused."""
    if not out.is_file() or Path(f"{out}.parts").exists():
        return None
    try:
        meta = json.loads((pq.read_metadata(out).metadata or {}).get(b"hysafe", b"{}"))
    except (OSError, ValueError, pa.ArrowException) as e:  # pyarrow: "Parquet magic bytes not found"
        raise ValueError(
            f"--out {out} exists and is not a Parquet file this command wrote ({type(e).__name__}); "
            "choose another --out or delete it"
        ) from None
    if {k: meta.get(k) for k in run} != json.loads(json.dumps(run)):
        raise ValueError(f"{out} exists and was written by another run; choose another --out or delete it")
    logger.info("%s is complete; nothing to do", out)
    return ScoreResult(out, meta.get("rows", 0), meta.get("skipped", 0), run["threshold"], run["rule"])


def score_collection(
    model: SafetyModel,
    source: Source,
    out: str | Path,
    *,
    threshold: str | float | None = None,
    calibrate: str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    checkpoint: str | None = None,
    precision: str = "fp32",
) -> ScoreResult:
    """Score every item of ``source`` into ``out`` (Parquet). Re-running continues after the last
    finished chunk; under torchrun each rank scores its chunks and rank 0 writes the file.
    ``precision``: the towers' autocast precision (:func:`embed_chunks`); scores stay float64."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"--out must end in .parquet, got {out}")
    value, rule = resolve_threshold(model, source.modality, threshold, calibrate)
    rank, world = rank_and_world()
    run = {
        "model": model_fingerprint(model),
        "source": source.describe(),
        "batch_size": batch_size,
        "threshold": value,
        "rule": rule,
        **precision_record(precision),
    }
    finished = _finished_result(out, run)
    if finished is not None:
        return finished
    store = PartStore(out, run)
    for chunk in embed_chunks(
        model,
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        todo=lambda c: not store.done(c),
        rank=rank,
        world=world,
        progress=progress,
        precision=precision,
    ):
        scores = model.nsfw_score(chunk.embeddings, source.modality) if chunk.items else torch.zeros(0)
        store.write(chunk.id, _table(chunk, scores.double(), value, source.modality))
    if not store.finish_rank(rank, world):
        return ScoreResult(None, 0, 0, value, rule)
    return _write_scores(store, out, {**run, "checkpoint": checkpoint}, source)


def _write_scores(store: PartStore, out: Path, run: dict, source: Source) -> ScoreResult:
    """Every rank's chunks as one Parquet file ``out`` (its metadata: ``run``, rows, skipped)."""
    table, _, skipped = store.read()
    if table is None:
        raise ValueError(f"{source.describe()}: the collection has no items")
    meta = {**run, "rows": table.num_rows, "skipped": len(skipped)}
    _write_final(out, table.replace_schema_metadata({"hysafe": json.dumps(meta)}), skipped)
    store.remove()
    logger.info("scored %d items (%d skipped) -> %s", meta["rows"], len(skipped), out)
    return ScoreResult(out, meta["rows"], len(skipped), run["threshold"], run["rule"])


def _write_final(out: Path, table: pa.Table, skipped: list[dict]) -> None:
    side = Path(f"{out.with_suffix('')}.skipped.csv")
    tmp = side.with_name(f".{side.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "id", "ref", "error"])
        writer.writeheader()
        writer.writerows(skipped)
    os.replace(tmp, side)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
