"""The run folder: one training at a time, a clear error when the path cannot be a folder.

The lock is an advisory ``flock`` on ``RUN/.lock`` held for the whole run; the kernel drops it
when the process ends, however it ends (``kill -9`` included), so a stale lock never blocks a
resume. Holding it, a run removes the half-written temporaries a killed run may have left.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["locked_run_folder"]


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise ValueError(
            f"run folder {folder}: {blocker} is a file, not a folder; choose another --out"
        ) from e
    except PermissionError as e:
        raise ValueError(f"run folder {folder}: permission denied ({e.strerror})") from e


@contextmanager
def locked_run_folder(folder: Path | None) -> Iterator[None]:
    """Create ``folder`` and hold its lock; ``None`` (no folder, or not the main process) does nothing."""
    if folder is None:
        yield
        return
    _make_folder(folder)
    lock_path = folder / ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ValueError(
                f"run folder {folder} is in use by another training (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in folder.glob(".*.tmp"):  # half-written files of a killed run (never under a real name)
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock
