"""The demo's image-ceiling stage: where HySAC's safe and unsafe images overlap in distance to the
root, measure whether the image tower could separate them at all (:mod:`hysafe.evaluation.ceiling`),
so that the ordering check tells a limit of the tower from a failure of the objective."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..evaluation.ceiling import CeilingConfig, image_tower_ceiling
from ..models.safety_model import SafetyModel, create_model
from ..training.validation import image_overlap
from .config import DemoConfig
from .timings import epochs_text

__all__ = ["needs_image_ceiling", "measure_ceiling", "image_ceiling_stage", "ceiling_lines", "CEILING_FILE"]

#: the ceiling's record in the report folder
CEILING_FILE = "image_ceiling.json"


def needs_image_ceiling(rule: str, distances: dict) -> bool:
    """``'always'``; ``'auto'``: only where the ordering's separation fails without the ceiling
    (HySAC's safe images' 95th percentile not below the unsafe images' 5th); ``'never'``."""
    if rule == "always":
        return True
    if rule != "auto" or not {"V", "G"} <= set(distances):
        return False
    return distances["V"]["up_95"] >= distances["G"]["low_05"]


def measure_ceiling(cfg: DemoConfig, base: str, splits: tuple) -> dict:
    """The image tower's supervised ceiling as the demo measures it: the pretrained image tower of the
    checkpoint ``base``, every weight trained on the labels of ``splits`` (train, validation, test) for
    ``cfg.ceiling_epochs``, the test split scored once (:func:`image_tower_ceiling`'s record)."""
    tower = create_model("clip", cfg.backbone_name, base, lora=None, device=cfg.device).backbone.model.visual
    training = CeilingConfig(epochs=cfg.ceiling_epochs, seed=cfg.seed)
    return image_tower_ceiling(tower, splits, training, progress=cfg.progress)


def image_ceiling_stage(
    cfg: DemoConfig, base: str, hysac: SafetyModel, splits: tuple, distances: dict, out: Path
) -> tuple[float, float] | None:
    """``(HySAC's share, the ceiling's share)`` of unsafe test images below the safe 95th percentile
    (what :func:`hysafe.safety_checks` takes as ``image_ceiling``), with the record written to
    ``out / CEILING_FILE``; ``None`` where ``cfg.image_ceiling`` does not ask for it."""
    (out / CEILING_FILE).unlink(missing_ok=True)  # a record of an earlier run in this folder
    if not needs_image_ceiling(cfg.image_ceiling, distances):
        return None
    t = time.time()
    record = measure_ceiling(cfg, base, splits)
    record["hysac_unsafe_below_safe_95"] = image_overlap(hysac, splits[2])
    record["seconds"] = round(time.time() - t, 1)
    (out / CEILING_FILE).write_text(json.dumps(record, indent=2))
    return record["hysac_unsafe_below_safe_95"], record["unsafe_below_safe_95"]


def ceiling_lines(out: Path) -> list[str]:
    """The report's paragraph on the ceiling, where this run measured one."""
    path = out / CEILING_FILE
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    return [
        "The image tower's supervised ceiling (the pretrained image tower with every weight trained on "
        f"the image labels, {epochs_text(r['epochs'])}, the epoch chosen on validation; `{CEILING_FILE}`): "
        f"ROC-AUC {r['roc_auc']:.3f}, {100 * r['unsafe_below_safe_95']:.1f}% of unsafe test images "
        f"below the safe 95th percentile, against HySAC's {100 * r['hysac_unsafe_below_safe_95']:.1f}% "
        "by distance to the root. The ordering check's separation is judged against it.",
        "",
    ]
