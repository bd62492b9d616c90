"""Parquet storage: sharded, atomic, resumable writes, and reads as Arrow or Polars.

A stage writes its tables under `data/<stage>/<table>/part-XXXXX.parquet`. Each part is written to
a hidden temp name and renamed, so a reader never sees half a file; once every table of a shard is
written, one completion marker `_shards/XXXXX.done` is written. A re-run skips shards with a
marker and rewrites the rest (ids are content hashes, so a rewritten part is the same part). The
stage's fingerprint (params + inputs) is kept in `_manifest.json`: a run with another fingerprint
starts the directory afresh instead of resuming parts written under different settings.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracemill import faults, records
from tracemill.errors import TracemillError

PART_GLOB = "part-*.parquet"
MANIFEST = "_manifest.json"
SHARDS_DIR = "_shards"
ROW_GROUP_SIZE = 65_536  # small enough that key-sorted row groups prune point lookups


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sort_by_key(table: str, data: pa.Table) -> pa.Table:
    keys = [k for k in records.KEYS.get(table, ()) if k in data.column_names]
    if not keys or data.num_rows < 2:
        return data
    return data.take(pc.sort_indices(data, sort_keys=[(k, "ascending") for k in keys]))


def write_parquet(table: str, data: pa.Table | Iterable[Mapping[str, Any]], path: str | Path) -> pa.Table:
    """Validate `data` against `table`'s schema, sort by its key and write it atomically to `path`."""
    path = Path(path)
    checked = sort_by_key(table, records.validate(table, data))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(
            checked,
            tmp,
            compression="zstd",
            write_statistics=True,
            row_group_size=ROW_GROUP_SIZE,
            write_page_index=True,
        )
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        faults.hit("store.tmp_written")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TracemillError(f"could not write table '{table}' to '{path}': {exc}") from exc
    _fsync_dir(path.parent)
    return checked


def read(stage_dir: str | Path, table: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All parts of `table` under a stage directory (e.g. `data/problems`), in part order."""
    root = Path(stage_dir) / table
    parts = sorted(root.glob(PART_GLOB))
    if not parts:
        if not Path(stage_dir).exists():
            raise TracemillError(f"'{stage_dir}' does not exist — run the stage that writes it first (dvc repro)")
        return records.schema(table).empty_table() if columns is None else records.schema(table).empty_table().select(columns)
    tables = [pq.read_table(p, columns=list(columns) if columns else None) for p in parts]
    return pa.concat_tables(tables)


def read_rows(stage_dir: str | Path, table: str) -> list[dict[str, Any]]:
    return read(stage_dir, table).to_pylist()


def read_polars(stage_dir: str | Path, table: str):  # -> polars.DataFrame
    import polars as pl

    return pl.from_arrow(read(stage_dir, table))


class Quarantine:
    """Collects malformed rows with their reason; they are written to the stage's `rejected` table."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.rows: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def reject(self, reason: str, raw: Any, *, table: str, detail: str | None = None, source: str | None = None) -> None:
        raw_text = raw if isinstance(raw, str) else _json_or_repr(raw)
        self.rows.append(
            {
                "rejected_id": records.content_id(self.stage, table, reason, source, raw_text),
                "stage": self.stage,
                "table": table,
                "reason": reason,
                "detail": detail,
                "source": source,
                "raw": raw_text,
                "metadata": None,
            }
        )
        self.counts[reason] += 1

    def take(self) -> list[dict[str, Any]]:
        rows, self.rows = self.rows, []
        return rows


def _json_or_repr(raw: Any) -> str:
    try:
        return json.dumps(raw, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(raw)


class StageOutput:
    """The sharded, resumable output directory of one stage (`data/<stage>`)."""

    def __init__(self, root: str | Path, tables: Sequence[str], fingerprint: str) -> None:
        self.root = Path(root)
        self.tables = tuple(tables)
        self.fingerprint = fingerprint
        self._open()

    def _open(self) -> None:
        manifest = self.root / MANIFEST
        if manifest.exists():
            previous = json.loads(manifest.read_text()).get("fingerprint")
            if previous != self.fingerprint:
                shutil.rmtree(self.root)
        (self.root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        for table in self.tables:
            (self.root / table).mkdir(exist_ok=True)
            for stray in self.root.joinpath(table).glob(".part-*.tmp-*"):
                stray.unlink()  # left by a killed writer; never visible to readers
        if not manifest.exists():
            _atomic_write_bytes(manifest, json.dumps({"fingerprint": self.fingerprint, "tables": self.tables}).encode())

    def _marker(self, shard: int) -> Path:
        return self.root / SHARDS_DIR / f"{shard:05d}.done"

    def is_done(self, shard: int) -> bool:
        return self._marker(shard).exists()

    def pending(self, shards: Iterable[int]) -> list[int]:
        return [s for s in shards if not self.is_done(s)]

    def write_shard(self, shard: int, tables: Mapping[str, pa.Table | Iterable[Mapping[str, Any]]]) -> dict[str, int]:
        """Write every table of one shard, then its completion marker. Tables not given are written empty."""
        unknown = set(tables) - set(self.tables)
        if unknown:
            raise TracemillError(f"stage output '{self.root}' does not declare table '{sorted(unknown)[0]}'")
        counts = {}
        for table in self.tables:
            written = write_parquet(table, tables.get(table, []), self.root / table / part_name(shard))
            counts[table] = written.num_rows
        faults.hit("store.tables_written")
        _atomic_write_bytes(self._marker(shard), json.dumps(counts, sort_keys=True).encode())
        faults.hit("store.shard_done")
        return counts

    def finalize(self, shards: Iterable[int]) -> dict[str, int]:
        """Check every shard is complete, drop parts of shards outside the plan, return row counts."""
        wanted = set(shards)
        missing = sorted(s for s in wanted if not self.is_done(s))
        if missing:
            raise TracemillError(f"stage output '{self.root}': shard {missing[0]} is not complete — re-run the stage")
        for table in self.tables:
            for part in self.root.joinpath(table).glob(PART_GLOB):
                if int(part.stem.split("-")[1]) not in wanted:
                    part.unlink()
        for marker in self.root.joinpath(SHARDS_DIR).glob("*.done"):
            if int(marker.stem) not in wanted:
                marker.unlink()
        totals: Counter[str] = Counter()
        for shard in wanted:
            totals.update(json.loads(self._marker(shard).read_text()))
        return {t: totals.get(t, 0) for t in self.tables}


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of a content-hash id (or any string), the same on every machine."""
    return int(records.content_id(key, length=8), 16) % num_shards


def write_json(path: str | Path, obj: Any) -> None:
    """Metrics and plot files: pretty, sorted, atomic, so `dvc metrics diff` reads clean diffs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faults.hit("store.json")
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=float) + "\n").encode())


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """A plot file for `dvc plots show`, written atomically: a header from `columns` (so a plot with no
    points still names its axes), else from the first row's keys."""
    import csv
    import io

    buf = io.StringIO()
    fieldnames = list(columns) if columns else list(rows[0]) if rows else []
    if fieldnames:
        writer = csv.DictWriter(buf, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, buf.getvalue().encode())
