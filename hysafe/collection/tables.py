"""The rows of a list file a user gives: one per line (.txt), a column of a .csv/.tsv or .parquet.

Each row comes as ``(id, value)``; a file that is not UTF-8 text is refused with its name and where
its first bad byte sits (:func:`table_rows`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

__all__ = ["table_rows"]


def table_rows(path: Path, columns: tuple[str, ...], what: str) -> Iterator[tuple[str, str]]:
    """``(id, value)`` from a .txt (one per line), .csv/.tsv or .parquet file (first of ``columns``);
    a file that is not UTF-8 text is refused with its name and where its first bad byte sits."""
    last = "its start"
    try:
        for row_id, value in _read_rows(path, columns, what):
            last = row_id
            yield row_id, value
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} after {last}); save it as UTF-8"
        ) from None


def _read_rows(path: Path, columns: tuple[str, ...], what: str) -> Iterator[tuple[str, str]]:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".lst"):
        with path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}, line {n}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"
                    ) from None
                yield f"line {n}", line.rstrip("\r\n")
        return
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            column = next((c for c in columns if c in (reader.fieldnames or [])), None)
            if column is None:
                raise ValueError(
                    f"{path}: no {what} column; expected one of {list(columns)}, got {reader.fieldnames}"
                )
            for n, row in enumerate(reader, start=1):
                yield str(row.get("id") or f"row {n}"), row[column] or ""
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        column = next((c for c in columns if c in pf.schema_arrow.names), None)
        if column is None:
            raise ValueError(
                f"{path}: no {what} column; expected one of {list(columns)}, got {pf.schema_arrow.names}"
            )
        n = 0
        for batch in pf.iter_batches(columns=[column] + (["id"] if "id" in pf.schema_arrow.names else [])):
            d = batch.to_pydict()
            for k, value in enumerate(d[column]):
                n += 1
                yield str(d["id"][k]) if "id" in d else f"row {n}", "" if value is None else str(value)
        return
    raise ValueError(f"{path}: unsupported list type {suffix!r}; use .txt, .csv, .tsv or .parquet")
