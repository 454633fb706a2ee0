"""The run folder's logs: ``log.jsonl`` (one record per logged step and per validation),
``config.json``, and optional TensorBoard scalars. Only the main process writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["RunLog"]


class RunLog:
    """Context manager over a run folder (``None``: log nothing)."""

    def __init__(self, folder: Path | None, *, config: dict, tensorboard: bool):
        self.folder, self.config, self.want_tb = folder, config, tensorboard
        self.file = self.tb = None

    def __enter__(self) -> "RunLog":
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "config.json").write_text(json.dumps(self.config, indent=2, default=str))
            self.file = (self.folder / "log.jsonl").open("a")
            self.tb = _tensorboard(self.folder) if self.want_tb else None
        return self

    def __exit__(self, *exc) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()

    def _write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def step(self, record: dict, losses: dict[str, float]) -> None:
        self._write(record)
        if self.tb:
            for k, v in losses.items():
                self.tb.add_scalar(f"train/{k}", v, record["step"])

    def validation(self, metrics: dict) -> None:
        self._write({"validation": metrics})


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard requested but not installed (pip install hysafe[tensorboard]); skipping")
        return None
    return SummaryWriter(str(folder / "tensorboard"))
