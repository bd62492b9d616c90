"""Does a run reproduce the committed one? Compare two checkouts' `dvc.lock`, metrics and plots.

`tools/reproduce-check` clones a commit into a fresh folder, runs `make repro` there and calls
`python -m tracemill.reproduce <committed> <fresh>`. What must hold:

- **exact**: every stage's command, dependency hashes, params and cached outputs (tables, models),
  and every metric or plot value that is not a measurement of time or speed. On the same kind of
  machine with the locked environment the pipeline is deterministic, so any difference is a finding.
- **ignored**: fields that measure the machine, not the data (`train_seconds`, `train_runtime_s`,
  `train_tokens_per_s`, ...: see `TIMING`), and the hashes of the uncached metric/plot files that
  carry them (their contents are compared field by field instead).
- **within a tolerance** (`--tolerance T`, default 0 = exact): numeric metric values. A different CPU
  type can take other float kernels, so a trained model's bits and everything downstream may move;
  with a tolerance the check still reports every hash that moved but passes when every metric is
  within T. Without it, a moved hash fails the check.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill.runfiles import leaves, read_lock, read_plot

# Metric keys and plot columns that measure time or throughput on the machine that ran them.
# `_s` covers train_runtime_s, train_tokens_per_s, elapsed_s, wall_s.
TIMING = re.compile(r"(^|_)(seconds|runtime|elapsed|s)$")


@dataclass(frozen=True)
class Difference:
    kind: str  # "hash" (a cached output or dependency), "stage" (command/params), "metric", "plot", "missing"
    where: str
    committed: Any
    fresh: Any

    def line(self) -> str:
        return f"{self.kind:7} {self.where}: committed {self.committed!r}, fresh {self.fresh!r}"


def is_timing(key: str) -> bool:
    return bool(TIMING.search(key))


def _uncached(lock: dict[str, Any]) -> set[str]:
    """Paths of the metric/plot files: their hashes carry timings, their contents are compared apart."""
    return {
        entry["path"]
        for stage in lock.get("stages", {}).values()
        for entry in stage.get("outs", []) or []
        if entry["path"].startswith(("metrics/", "plots/"))
    }


def compare_locks(committed: dict[str, Any], fresh: dict[str, Any]) -> list[Difference]:
    diffs: list[Difference] = []
    skip = _uncached(committed) | _uncached(fresh)
    a_stages, b_stages = committed.get("stages", {}), fresh.get("stages", {})
    for name in sorted(set(a_stages) | set(b_stages)):
        a, b = a_stages.get(name), b_stages.get(name)
        if a is None or b is None:
            diffs.append(Difference("missing", f"stage {name}", a is not None, b is not None))
            continue
        for field in ("cmd", "params"):
            if a.get(field) != b.get(field):
                diffs.append(Difference("stage", f"{name} {field}", a.get(field), b.get(field)))
        for field in ("deps", "outs"):
            a_map = {e["path"]: e.get("md5") for e in a.get(field, []) or []}
            b_map = {e["path"]: e.get("md5") for e in b.get(field, []) or []}
            for path in sorted(set(a_map) | set(b_map)):
                if path in skip:
                    continue
                if a_map.get(path) != b_map.get(path):
                    diffs.append(Difference("hash", f"{name} {field[:-1]} {path}", a_map.get(path), b_map.get(path)))
    return diffs


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return True  # equal infinities too, whose difference is nan
    return abs(a - b) <= tolerance


def compare_values(kind: str, name: str, a: Any, b: Any, tolerance: float) -> list[Difference]:
    """Field-by-field comparison of two metric documents, timing fields left out."""
    a_flat = {k: v for k, v in leaves(a) if not is_timing(k.rsplit(".", 1)[-1])}
    b_flat = {k: v for k, v in leaves(b) if not is_timing(k.rsplit(".", 1)[-1])}
    diffs = []
    for key in sorted(set(a_flat) | set(b_flat)):
        if key not in a_flat or key not in b_flat or not _close(a_flat[key], b_flat[key], tolerance):
            diffs.append(Difference(kind, f"{name} {key}", a_flat.get(key), b_flat.get(key)))
    return diffs


def compare_trees(committed: Path, fresh: Path, tolerance: float = 0.0) -> tuple[list[Difference], list[Difference]]:
    """(failures, allowed): what breaks reproduction, and what moved but is allowed by the tolerance."""
    hashes = compare_locks(read_lock(committed / "dvc.lock"), read_lock(fresh / "dvc.lock"))
    values: list[Difference] = []
    for folder, kind, reader in (
        ("metrics", "metric", lambda p: json.loads(p.read_text())),
        ("plots", "plot", read_plot),
    ):
        names = {p.name for p in (committed / folder).glob("*")} | {p.name for p in (fresh / folder).glob("*")}
        for name in sorted(names):
            a, b = committed / folder / name, fresh / folder / name
            if not a.exists() or not b.exists():
                values.append(Difference("missing", f"{folder}/{name}", a.exists(), b.exists()))
                continue
            values.extend(compare_values(kind, f"{folder}/{name}", reader(a), reader(b), tolerance))
    if tolerance > 0:
        structural = [d for d in hashes if d.kind in ("stage", "missing")]
        return structural + values, [d for d in hashes if d.kind == "hash"]
    return hashes + values, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("committed", type=Path, help="checkout holding the committed dvc.lock, metrics/, plots/")
    parser.add_argument("fresh", type=Path, help="checkout where make repro just ran")
    parser.add_argument("--tolerance", type=float, default=0.0, help="allowed absolute difference of numeric metrics")
    args = parser.parse_args(argv)
    failures, allowed = compare_trees(args.committed, args.fresh, args.tolerance)
    for diff in allowed:
        print("moved  ", diff.line())
    for diff in failures:
        print("DIFFERS", diff.line())
    if failures:
        print(f"reproduce-check: FAILED — {len(failures)} difference(s) from the committed run")
        return 1
    lock = read_lock(args.fresh / "dvc.lock")  # the counts for the summary line
    outs = sum(len(s.get("outs", []) or []) for s in lock.get("stages", {}).values())
    how = "exactly" if not allowed else f"within {args.tolerance} ({len(allowed)} hashes moved)"
    print(
        f"reproduce-check: OK — {len(lock.get('stages', {}))} stages, {outs} outputs, "
        f"metrics and plots reproduced {how}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
