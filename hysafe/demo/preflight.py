"""What ``hysafe demo`` checks before it writes anything: the install, the model sources and the
report folder. A run that would fail on them fails here, in a second, with a message that names the
option, and leaves no folder behind (or an earlier run's folder as it was)."""

from __future__ import annotations

import json
from pathlib import Path

from ..models.backbone import BUNDLED_MODELS
from ..utils.extras import missing_module_message
from .config import DemoConfig
from .settings import RERUN_FREE, changed_runs, flat_settings

__all__ = ["check_demo_requirements", "check_pretrained_source", "check_report_folder"]


def check_demo_requirements() -> None:
    """Import what the demo's last stages import lazily (Parquet tables and indexes: the plots are
    imported with the pipeline), so that a broken or partial install fails here, before minutes
    of training, and not after."""
    try:
        from .. import collection  # noqa: F401
    except ModuleNotFoundError as e:
        raise ImportError(f"hysafe demo cannot write its report: {missing_module_message(e)}") from e


def check_pretrained_source(cfg: DemoConfig) -> None:
    """A model the demo cannot pretrain needs ``--pretrained``."""
    if cfg.pretrained is None and cfg.model not in BUNDLED_MODELS:
        raise ValueError(
            f"--model {cfg.model} needs --pretrained (a tag or a checkpoint "
            f"file); only {BUNDLED_MODELS} are pretrained here"
        )


def check_report_folder(cfg: DemoConfig, out: Path) -> None:
    """``--out`` is a folder or nothing yet. One that holds a run with other settings is refused
    before anything is written there (its trainings would be reused, or refused half-way, and its
    ``demo_config.json`` replaced); the settings in :data:`RERUN_FREE` may change."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose another --out")
    path = out / "demo_config.json"
    if not path.is_file():
        return
    try:
        before = flat_settings(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); delete it, or choose another --out") from e
    changed = changed_runs(before, flat_settings(cfg), skip=RERUN_FREE)
    if changed:
        more = f"; and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ValueError(
            f"--out {out} holds a demo run with other settings ({'; '.join(changed[:6])}{more}): "
            f"choose another --out, or delete {out} to start afresh"
        )
