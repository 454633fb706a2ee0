"""The run folder's logs: ``log.jsonl`` (one record per logged step and per validation),
``config.json``, and optional TensorBoard scalars. Only the main process writes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["RunLog"]


class RunLog:
    """Context manager over a run folder (``None``: log nothing)."""

    def __init__(self, folder: Path | None, *, config: dict, tensorboard: bool, resumed_at_step: int = 0):
        self.folder, self.config, self.want_tb, self.resumed_at = folder, config, tensorboard, resumed_at_step
        self.file = self.tb = None

    def __enter__(self) -> "RunLog":
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / "config.json", json.dumps(self.config, indent=2, default=str))
            _drop_records_after(self.folder / "log.jsonl", self.resumed_at)
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


def _record_step(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None  # a line cut by a kill mid-write
    return record.get("step", record.get("validation", {}).get("step")) if isinstance(record, dict) else None


def _drop_records_after(path: Path, step: int) -> None:
    """Keep the records of steps the resumed state has reached: steps logged after the last state
    save of a killed run are run again, and would otherwise appear twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (s := _record_step(line)) is not None and s <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard requested but not installed (pip install hysafe[tensorboard]); skipping")
        return None
    return SummaryWriter(str(folder / "tensorboard"))
