"""Running a heavy stage over shards: resume, progress, and scale-out without a scheduler of our own.

Items (problems) are assigned to `run.shards` shards by the hash of their id, so the assignment is
the same on every machine. A process handles the shards `s` with `s % workers == worker_index`;
several processes or machines with different `worker_index` values (`dvc exp run -S
run.worker_index=1`, or the Ray runner) write disjoint shards, and `merge` unions their output
directories. Within a process, finished shards are skipped, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill import store
from tracemill.errors import ParamsError, TracemillError
from tracemill.params import at_least, choices

ShardFn = Callable[[int, list[dict[str, Any]]], Mapping[str, Any]]


@dataclass(frozen=True)
class RunParams:
    shards: int = at_least(1, default=8)  # resume granularity: a killed stage loses at most the shard in flight
    workers: int = at_least(1, default=1)  # processes or machines sharing the shards
    worker_index: int = at_least(0, default=0)
    runner: str = choices("local", "ray", default="local")

    def check(self) -> None:
        if not 0 <= self.worker_index < self.workers:
            raise ParamsError(
                f"params 'run.worker_index' = {self.worker_index} must be in [0, run.workers={self.workers})"
            )

    def mine(self) -> list[int]:
        return [s for s in range(self.shards) if s % self.workers == self.worker_index]


def assign(items: Sequence[dict[str, Any]], key: str, shards: int) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {s: [] for s in range(shards)}
    for item in items:
        out[store.shard_of(item[key], shards)].append(item)
    return out


def run_sharded(
    out: store.StageOutput, items: Sequence[dict[str, Any]], key: str, work: ShardFn, run: RunParams, label: str
) -> dict[str, int] | None:
    """Run `work(shard, items)` for every pending shard of this worker; return the table totals when
    this process owns all shards (None when other workers still have to be merged in)."""
    by_shard = assign(items, key, run.shards)
    todo = out.pending(run.mine())
    if run.runner == "ray":
        from tracemill.ray_runner import run_on_ray

        run_on_ray(out, {s: by_shard[s] for s in todo}, work)
    else:
        _run_local(out, by_shard, todo, work, label)
    if run.workers == 1:
        return out.finalize(range(run.shards))
    return None


def _run_local(
    out: store.StageOutput, by_shard: dict[int, list[dict[str, Any]]], todo: list[int], work: ShardFn, label: str
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"{label} (shards)", total=len(todo))
        for shard in todo:
            out.write_shard(shard, work(shard, by_shard[shard]))
            progress.advance(task)


def merge(target: str | Path, sources: Sequence[str | Path], shards: int) -> dict[str, int]:
    """Union worker output directories of one stage into `target`; their fingerprints must agree."""
    target = Path(target)
    manifests = [json.loads((Path(s) / store.MANIFEST).read_text()) for s in sources]
    fingerprints = {m["fingerprint"] for m in manifests}
    if len(fingerprints) != 1:
        raise TracemillError("cannot merge outputs made with different params or inputs (fingerprints differ)")
    tables = manifests[0]["tables"]
    out = store.StageOutput(target, tables, fingerprints.pop())
    for source in map(Path, sources):
        if source.resolve() == target.resolve():
            continue
        for marker in sorted((source / store.SHARDS_DIR).glob("*.done")):
            shard = int(marker.stem)
            if out.is_done(shard):
                continue
            for table in tables:
                name = store.part_name(shard)
                shutil.copy2(source / table / name, target / table / f".{name}.tmp-merge")
                (target / table / f".{name}.tmp-merge").replace(target / table / name)
            shutil.copy2(marker, target / store.SHARDS_DIR / marker.name)
    return out.finalize(range(shards))
