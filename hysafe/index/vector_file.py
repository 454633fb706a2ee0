"""Full-precision embeddings on disk, appended in order and read back memory-mapped.

A compressed index (:class:`~hysafe.index.retrieval.RetrievalIndex` ``kind="ivfpq"``) keeps only short
codes in RAM and re-ranks its candidates exactly from this file, so a gallery larger than RAM is
searched with the geometry's true distances. The file is raw little-endian float32, row-major
``(rows, dim)``; how many rows belong to the index is recorded by the index, not by the file, so a
crash between appending rows and saving the index leaves a longer file whose tail is ignored (and
overwritten by the next append).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["VectorFile"]

_DTYPE = np.dtype("<f4")

#: threads that copy rows out of the memory map at once, and rows per task: a row not in the page
#: cache faults and waits on the disk, and the disk serves several faults at a time (10M x 768 file
#: on the 2-core benchmark host: 63 us per scattered row read alone, 23 us with 32 threads)
READ_THREADS = 16
READ_CHUNK = 2048
#: rows a vector file's fingerprint reads
FINGERPRINT_ROWS = 64


class VectorFile:
    """``rows`` float32 vectors of ``dim`` in the raw file ``path``."""

    def __init__(self, path: str | Path, dim: int, rows: int = 0):
        self.path, self.dim, self.rows = Path(path), int(dim), int(rows)
        if self.rows and not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path}: the compressed index's vector file is missing (the index needs its "
                f"{self.rows} vectors of dim {self.dim}; pass vectors= with the file's new place if it moved)"
            )
        available = self.path.stat().st_size // (_DTYPE.itemsize * self.dim) if self.path.exists() else 0
        if available < self.rows:
            raise ValueError(
                f"{self.path}: holds {available} vectors of dim {self.dim}, but its index needs {self.rows} "
                "(truncated, or not this index's vector file)"
            )
        self._map: np.memmap | None = None

    def __len__(self) -> int:
        return self.rows

    def append(self, x: np.ndarray) -> None:
        """Write rows ``(N, dim)`` after the index's last row."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors must be (N, {self.dim}), got {x.shape}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "r+b" if self.path.exists() else "wb") as f:
            f.seek(self.rows * self.dim * _DTYPE.itemsize)
            f.write(np.ascontiguousarray(x, dtype=_DTYPE).tobytes())
        self.rows += x.shape[0]
        self._map = None

    def extend_from(self, other: "VectorFile", *, chunk_rows: int = 65536) -> None:
        """Append all rows of ``other`` (streamed; neither file is loaded whole)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot append vectors of dim {other.dim} to a file of dim {self.dim}")
        for i in range(0, len(other), chunk_rows):
            self.append(np.asarray(other.mapped()[i : i + chunk_rows]))

    def release(self) -> None:
        """Unmap the file (the next read maps it again): pages mapped into this process stay in the
        page cache even when asked to leave it."""
        self._map = None

    def mapped(self) -> np.ndarray:
        """The rows as a read-only memory map ``(rows, dim)`` (empty array when there are none)."""
        if self.rows == 0:
            return np.zeros((0, self.dim), _DTYPE)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=_DTYPE, mode="r", shape=(self.rows, self.dim))
            # re-ranks read scattered rows: without this, every page fault also reads ahead ~128 KiB
            # (40 rows of 768-d) that are never used, 40x the I/O once the file is past the page cache
            self._map._mmap.madvise(mmap.MADV_RANDOM)
        return self._map

    def fingerprint(self) -> str:
        """A digest of the row count and of up to ``FINGERPRINT_ROWS`` rows spread evenly over the file:
        an index records it when saved and checks it when loaded, so another index's vector file of
        the same size is refused instead of re-ranking by the wrong vectors (a few reads, not the file)."""
        positions = np.unique(
            np.linspace(0, self.rows - 1, min(self.rows, FINGERPRINT_ROWS)).astype(np.int64)
        )
        digest = hashlib.sha256(f"{self.rows}x{self.dim}".encode())
        digest.update(np.ascontiguousarray(self.mapped()[positions]).tobytes())
        return digest.hexdigest()

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows for an id array of any shape (``-1`` gives zeros): ``ids.shape + (dim,)``.

        Copied straight from the memory map by several threads (a row asked for twice is copied
        twice): deduplicating and sorting the ids first took 3x as long on page-cached rows and
        saved no disk reads."""
        flat = ids.reshape(-1)
        valid = flat >= 0
        if flat.size and flat.max() >= self.rows:
            raise ValueError(f"{self.path}: asked for row {flat.max()} of {self.rows}")
        if not valid.any():
            return np.zeros((*ids.shape, self.dim), _DTYPE)
        out = self._gather(np.where(valid, flat, 0))
        out[~valid] = 0
        return out.reshape(*ids.shape, self.dim)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """``mapped()[rows]``, copied by ``READ_THREADS`` threads in chunks (numpy releases the GIL)."""
        mapped = self.mapped()
        if len(rows) <= READ_CHUNK:
            return mapped[rows]
        out = np.empty((len(rows), self.dim), _DTYPE)

        def copy(lo: int) -> None:
            out[lo : lo + READ_CHUNK] = mapped[rows[lo : lo + READ_CHUNK]]

        with ThreadPoolExecutor(READ_THREADS) as pool:
            list(pool.map(copy, range(0, len(rows), READ_CHUNK)))
        return out

    def relocate(self, path: str | Path, *, move: bool) -> None:
        """Put the file at ``path`` (renamed when ``move``, else copied); rows past the index's are
        dropped."""
        path = Path(path)
        if path.exists() and self.path.exists() and os.path.samefile(path, self.path):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if not self.path.exists():  # nothing appended yet
            tmp.write_bytes(b"")
        elif move:
            shutil.move(self.path, tmp)
        else:
            shutil.copyfile(self.path, tmp)
        with open(tmp, "r+b") as f:
            f.truncate(self.rows * self.dim * _DTYPE.itemsize)
        os.replace(tmp, path)
        self.path, self._map = path, None
