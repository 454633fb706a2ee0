"""The run folder: one training at a time, a clear error when the path cannot be a folder.

The lock (:mod:`hysafe.utils.folder_lock`) is held for the whole run; the kernel drops it when the
process ends, however it ends, so a stale lock never blocks a resume.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..utils.folder_lock import locked_folder, make_folder

__all__ = ["locked_run_folder"]


@contextmanager
def locked_run_folder(folder: Path | None) -> Iterator[None]:
    """Create ``folder`` and hold its lock (:func:`~hysafe.utils.folder_lock.locked_folder`); ``None``
    (no folder, or not the main process) does nothing."""
    if folder is None:
        yield
        return
    make_folder(folder, what=f"run folder {folder}", advice="choose another --out")
    with locked_folder(
        folder, holder="another training", advice="wait for it to finish or choose another --out"
    ):
        yield
