"""One writer per folder: an advisory ``flock`` on ``FOLDER/.lock``.

The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a stale
lock never blocks a resume. Holding it, a writer removes the half-written temporaries (``.*.tmp``)
that a killed writer may have left; they never sit under a real name.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["locked_folder", "make_folder"]


def make_folder(folder: Path, *, what: str, advice: str) -> None:
    """``mkdir -p folder``, or a ValueError starting with ``what`` that names the file in the way (the
    folder itself or one above it) or the permission refused, and ends with ``advice``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise ValueError(f"{what}: {blocker} is a file, not a folder; {advice}") from e
    except PermissionError as e:
        raise ValueError(f"{what}: permission denied ({e.strerror})") from e


@contextmanager
def locked_folder(folder: Path, *, holder: str, advice: str) -> Iterator[None]:
    """Hold ``folder``'s lock (the folder must exist); when another process holds it, a ValueError
    ``"FOLDER is in use by HOLDER (pid N); ADVICE"``."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ValueError(f"{folder} is in use by {holder} (pid {pid}); {advice}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock
