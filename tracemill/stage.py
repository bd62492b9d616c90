"""What every stage module shares: the error boundary, params loading and the resume fingerprint."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tracemill import records
from tracemill.errors import TracemillError


def run(main: Callable[[], Any]) -> None:
    """Run a stage's main: a TracemillError becomes one clear line on stderr and exit code 2."""
    try:
        main()
    except TracemillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted — re-run the stage to resume from its last finished shard", file=sys.stderr)
        sys.exit(130)


def params_path() -> Path:
    return Path(os.environ.get("TRACEMILL_PARAMS", "params.yaml"))


def fingerprint(params: Any, inputs: Iterable[str | Path] = ()) -> str:
    """Identity of a stage run: its params and the size and mtime of its inputs. A resumed run with
    the same fingerprint keeps finished shards; any change starts the output afresh."""
    if dataclasses.is_dataclass(params):
        params = dataclasses.asdict(params)
    stats = []
    for p in inputs:
        path = Path(p)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        stats.extend((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists())
    return records.content_id(params, stats)


def build_folder(out_dir: Path, build: Callable[[Path], dict[str, Any]], fresh: bool) -> dict[str, Any]:
    """Build a model folder as <out_dir>.partial, then swap it in; the scalar metrics of the build. A
    training run keeps the partial folder, whose checkpoints it resumes from; `fresh` clears it first."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    if fresh:
        shutil.rmtree(partial, ignore_errors=True)
    metrics = build(partial)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
