"""Chunk results on disk: resumable, shareable between processes, merged once.

``OUT.parts/`` holds ``run.json`` (what the run is: model fingerprint, source, options; a
different run is refused), one ``part-CHUNK.parquet`` (+ ``.safetensors`` embeddings when kept)
per finished chunk, written atomically, and ``done-RANK`` markers. A re-run skips finished
chunks; under torchrun every rank writes its own parts and rank 0 merges once all are done.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from ..models.checkpoint import atomic_save_file

__all__ = ["PartStore", "remove_parts"]


def remove_parts(folder: Path) -> None:
    """Delete a parts folder and everything in it (its parts, markers, a killed run's temporaries)."""
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


class PartStore:
    def __init__(self, out: Path, run: dict):
        self.folder = Path(f"{out}.parts")
        self.folder.mkdir(parents=True, exist_ok=True)
        spec = self.folder / "run.json"
        if spec.is_file():
            saved = json.loads(spec.read_text())
            if saved != json.loads(json.dumps(run)):
                diff = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
                raise ValueError(
                    f"{self.folder} holds an unfinished run with other settings ({', '.join(diff)}); "
                    f"re-run it with its own settings, or delete the folder to start over"
                )
        else:  # ranks may start together: unique temporaries, the same content either way
            tmp = self.folder / f".run.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(run, indent=2))
            os.replace(tmp, spec)

    def _part(self, chunk: int, suffix: str) -> Path:
        return self.folder / f"part-{chunk:012d}{suffix}"

    def done(self, chunk: int) -> bool:
        return self._part(chunk, ".parquet").is_file()

    def write(self, chunk: int, table: pa.Table, embeddings: torch.Tensor | None = None) -> None:
        """A finished chunk: embeddings first, the Parquet part last (its presence marks the chunk done)."""
        if embeddings is not None:
            atomic_save_file({"embeddings": embeddings}, self._part(chunk, ".safetensors"), {})
        # a killed run's temporaries are ignored
        tmp = self.folder / f".part-{chunk:012d}.parquet.{os.getpid()}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self._part(chunk, ".parquet"))

    def finish_rank(self, rank: int, world: int, *, timeout_s: float = 24 * 3600) -> bool:
        """Mark this rank done; rank 0 waits for the others and returns True (it merges)."""
        (self.folder / f"done-{rank}").write_text(str(world))
        if rank != 0:
            return False
        deadline = time.time() + timeout_s
        while not all((self.folder / f"done-{r}").is_file() for r in range(world)):
            if time.time() > deadline:
                raise TimeoutError(f"{self.folder}: ranks did not all finish within {timeout_s} s")
            time.sleep(0.2)
        return True

    def read(self, *, embeddings: bool = False) -> tuple[pa.Table, torch.Tensor | None, list[dict]]:
        """All parts in item order: rows, embeddings (if kept) and the skipped items."""
        parts = sorted(self.folder.glob("part-*.parquet"))
        tables = [pq.read_table(p) for p in parts]
        skipped = [
            s for p in parts for s in json.loads((pq.read_metadata(p).metadata or {}).get(b"skipped", b"[]"))
        ]
        table = pa.concat_tables(tables) if tables else None
        emb = None
        if embeddings and tables:
            emb = torch.cat([load_file(str(p.with_suffix(".safetensors")))["embeddings"] for p in parts])
        if table is not None and table.num_rows:
            order = pc.sort_indices(table, [("index", "ascending")])
            table = table.take(order)
            if emb is not None:
                emb = emb[torch.from_numpy(order.to_numpy().astype("int64"))]
        return table, emb, sorted(skipped, key=lambda s: s["index"])

    def remove(self) -> None:
        """Delete the parts (and any temporaries a killed run left) once merged."""
        remove_parts(self.folder)
