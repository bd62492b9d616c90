"""Parquet storage: sharded, atomic, resumable writes, and reads as Arrow or Polars.

A stage writes its tables under `data/<stage>/<table>/part-XXXXX.parquet`. Each part is written to
a hidden temp name and renamed, so a reader never sees half a file; once every table of a shard is
written, one completion marker `_shards/XXXXX.done` is written, holding each part's row count and
sha256. A re-run skips shards whose marker matches their parts and rewrites the rest (ids are content
hashes, so a rewritten part is the same part). The stage's fingerprint (params + input contents) is
kept in `_manifest.json`: a run with another fingerprint starts the directory afresh instead of
resuming parts written under different settings. Nothing written depends on time, host or absolute
paths, so an identical re-run leaves every byte, and DVC's hash of the folder, as it was.

Readers check each part against its marker's checksum (or, without one, that Parquet can read it) and
raise CorruptPartError naming the file and the stage to re-run.

Under a launcher that starts the stage once per rank (`torchrun --nnodes N`, `deepspeed --hostfile`), only
global rank 0 writes (`is_main_process`): the other ranks validate what they would write, return the same
counts, and leave every file alone, so N ranks on a shared filesystem write each file once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracemill import faults, records
from tracemill.errors import CorruptPartError, TracemillError

PART_GLOB = "part-*.parquet"
MANIFEST = "_manifest.json"
SHARDS_DIR = "_shards"
ROW_GROUP_SIZE = 65_536  # small enough that key-sorted row groups prune point lookups


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 of a torch.distributed group: the group's own rank when
    one is initialized (torch already imported), else the RANK its launcher set; a process outside any is 0."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def sort_by_key(table: str, data: pa.Table) -> pa.Table:
    keys = [k for k in records.KEYS.get(table, ()) if k in data.column_names]
    if not keys or data.num_rows < 2:
        return data
    return data.take(pc.sort_indices(data, sort_keys=[(k, "ascending") for k in keys]))


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_parquet(table: str, data: pa.Table | Iterable[Mapping[str, Any]], path: str | Path) -> pa.Table:
    """Validate `data` against `table`'s schema, sort by its key and write it atomically to `path` (rank 0 only)."""
    if not is_main_process():
        return sort_by_key(table, records.validate(table, data))
    return _write_part(table, data, Path(path))[0]


def _write_part(table: str, data: pa.Table | Iterable[Mapping[str, Any]], path: Path) -> tuple[pa.Table, str]:
    """write_parquet, also returning the sha256 of the bytes written (hashed before the rename)."""
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
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            os.fsync(fh.fileno())
        faults.hit("store.tmp_written")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TracemillError(f"could not write table '{table}' to '{path}': {exc}") from exc
    _fsync_dir(path.parent)
    return checked, digest


def read(stage_dir: str | Path, table: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All parts of `table` under a stage directory (e.g. `data/problems`), in part order. Each part is
    checked against the sha256 its shard's marker recorded; a bad one raises CorruptPartError."""
    root = Path(stage_dir) / table
    parts = sorted(root.glob(PART_GLOB))
    if not parts:
        if not Path(stage_dir).exists():
            raise TracemillError(f"'{stage_dir}' does not exist — run the stage that writes it first (dvc repro)")
        return (
            records.schema(table).empty_table()
            if columns is None
            else records.schema(table).empty_table().select(columns)
        )
    tables = [_read_part(p, recorded_part(p), columns) for p in parts]
    return pa.concat_tables(tables)


def _shard_of_part(part: Path) -> int:
    return int(part.stem.split("-")[1])


def recorded_part(part: Path) -> dict[str, Any] | None:
    """`{"rows", "sha256"}` that the shard's completion marker recorded for `part`; None without one."""
    marker = part.parent.parent / SHARDS_DIR / f"{_shard_of_part(part):05d}.done"
    try:
        entry = json.loads(marker.read_text()).get(part.parent.name)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) else None


def _read_part(part: Path, recorded: dict[str, Any] | None, columns: Sequence[str] | None) -> pa.Table:
    """One part, read once from disk: checked against its recorded checksum, else only parsed."""
    try:
        data = part.read_bytes()
    except OSError as exc:
        raise part_error(part, f"cannot be read ({_first_line(exc)})") from exc
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded["sha256"]:
        raise part_error(part, f"does not match the sha256 its shard's marker recorded ({len(data):,} bytes on disk)")
    try:
        return pq.read_table(pa.py_buffer(data), columns=list(columns) if columns else None)
    except (pa.ArrowException, OSError) as exc:
        raise part_error(part, f"is not readable Parquet ({_first_line(exc)})") from exc


def footer_problem(part: Path) -> str | None:
    """Why Parquet cannot open `part` (missing, truncated, not Parquet); None when its footer reads.
    Reads only the footer, so it is cheap enough to run on every part before each query."""
    try:
        pq.read_metadata(part)
    except (pa.ArrowException, OSError) as exc:
        return f"is not readable Parquet ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def part_error(part: Path, problem: str) -> CorruptPartError:
    """The error for a bad part: the file, what is wrong, and how to make it again."""
    stage_dir = part.parent.parent
    stage = _dvc_stage_writing(stage_dir)
    rerun = f"`dvc repro -f {stage}`, or delete" if stage else "delete"
    return CorruptPartError(
        f"Parquet part '{part}' {problem} — re-run the stage that wrote it: {rerun} '{stage_dir}' and run `dvc repro`"
    )


def _dvc_stage_writing(stage_dir: Path) -> str | None:
    """The dvc.lock stage (e.g. `rstar_search@1`) whose output is `stage_dir`; None when none is found."""
    import yaml

    folder = stage_dir.resolve()
    lock = next((d / "dvc.lock" for d in folder.parents if (d / "dvc.lock").is_file()), None)
    if lock is None:
        return None
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
        wanted = folder.relative_to(lock.parent).as_posix()
        return next(
            (name for name, s in stages.items() if any(o.get("path") == wanted for o in s.get("outs", []))), None
        )
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


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

    def reject(
        self, reason: str, raw: Any, *, table: str, detail: str | None = None, source: str | None = None
    ) -> None:
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
        self._intact: set[int] = set()  # shards written or verified by this process
        self._rows: dict[int, dict[str, int]] = {}  # off rank 0: what each shard of this process would hold
        if is_main_process():
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
            atomic_write_bytes(manifest, json.dumps({"fingerprint": self.fingerprint, "tables": self.tables}).encode())

    def _marker(self, shard: int) -> Path:
        return self.root / SHARDS_DIR / f"{shard:05d}.done"

    def is_done(self, shard: int) -> bool:
        """A shard is done when its marker exists and every part it records is there with that sha256;
        a marker that does not match is removed (with one line on stderr) so the shard is written again."""
        if shard in self._intact:
            return True
        marker = self._marker(shard)
        if not marker.exists():
            return False
        problem = self._marker_problem(shard, marker)
        if problem:
            if is_main_process():
                print(f"{self.root}: shard {shard} is not intact ({problem}) — writing it again", file=sys.stderr)
                marker.unlink(missing_ok=True)
            return False
        self._intact.add(shard)
        return True

    def _marker_problem(self, shard: int, marker: Path) -> str | None:
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            return f"its marker cannot be read: {exc}"
        for table in self.tables:
            entry = recorded.get(table) if isinstance(recorded, dict) else None
            part = self.root / table / part_name(shard)
            if not isinstance(entry, dict) or "sha256" not in entry:
                return f"its marker records no checksum for '{table}'"
            if not part.exists():
                return f"'{part}' is missing"
            if sha256_file(part) != entry["sha256"]:
                return f"'{part}' does not match its recorded sha256"
        return None

    def pending(self, shards: Iterable[int]) -> list[int]:
        return [s for s in shards if not self.is_done(s)]

    def write_shard(self, shard: int, tables: Mapping[str, pa.Table | Iterable[Mapping[str, Any]]]) -> dict[str, int]:
        """Write every table of one shard, then its completion marker. Tables not given are written empty."""
        unknown = set(tables) - set(self.tables)
        if unknown:
            raise TracemillError(f"stage output '{self.root}' does not declare table '{sorted(unknown)[0]}'")
        if not is_main_process():
            self._rows[shard] = {
                table: records.validate(table, tables.get(table, [])).num_rows for table in self.tables
            }
            self._intact.add(shard)
            return self._rows[shard]
        recorded = {}
        for table in self.tables:
            written, digest = _write_part(table, tables.get(table, []), self.root / table / part_name(shard))
            recorded[table] = {"rows": written.num_rows, "sha256": digest}
        faults.hit("store.tables_written")
        atomic_write_bytes(self._marker(shard), json.dumps(recorded, sort_keys=True).encode())
        self._intact.add(shard)
        faults.hit("store.shard_done")
        return {table: entry["rows"] for table, entry in recorded.items()}

    def finalize(self, shards: Iterable[int]) -> dict[str, int]:
        """Check every shard is complete, drop parts of shards outside the plan, return row counts."""
        wanted = set(shards)
        missing = sorted(s for s in wanted if not self.is_done(s))
        if missing:
            raise TracemillError(f"stage output '{self.root}': shard {missing[0]} is not complete — re-run the stage")
        if is_main_process():
            for table in self.tables:
                for part in self.root.joinpath(table).glob(PART_GLOB):
                    if _shard_of_part(part) not in wanted:
                        part.unlink()
            for marker in self.root.joinpath(SHARDS_DIR).glob("*.done"):
                if int(marker.stem) not in wanted:
                    marker.unlink()
        totals: Counter[str] = Counter()
        for shard in wanted:
            if shard in self._rows:
                totals.update(self._rows[shard])
            else:
                recorded = json.loads(self._marker(shard).read_text())
                totals.update({table: recorded[table]["rows"] for table in self.tables})
        return {t: totals.get(t, 0) for t in self.tables}


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard of a content-hash id (or any string), the same on every machine."""
    return int(records.content_id(key, length=8), 16) % num_shards


def write_json(path: str | Path, obj: Any) -> None:
    """Metrics and plot files: pretty, sorted, atomic, so `dvc metrics diff` reads clean diffs (rank 0 only)."""
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faults.hit("store.json")
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=float) + "\n").encode()
    )


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """A plot file for `dvc plots show`, written atomically: a header from `columns` (so a plot with no
    points still names its axes), else from the first row's keys. Rank 0 only."""
    if not is_main_process():
        return
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
    atomic_write_bytes(path, buf.getvalue().encode())
