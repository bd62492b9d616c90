"""Reading what a `dvc repro` records beside the data: metrics/*.json, plots/*.csv and dvc.lock.

One reader for the three consumers of a finished run: the README renderer (`tracemill.report`), the
reproduce check (`tracemill.reproduce`) and the viewer's Runs page (`tracemill.view.charts`). The
stages write these files through `tracemill.store.write_json` / `write_csv`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_NON_FINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"}


def number(text: Any) -> Any:
    """A CSV cell as a float where it is one, else the text as it was. A cell that only overflows to
    infinity stays text: a hex id such as 123e4567 is no number, and two such ids must not compare equal."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return value if math.isfinite(value) or str(text).strip().lower() in _NON_FINITE else text


def read_plot(path: Path) -> list[dict[str, Any]]:
    """A plots/*.csv file as rows, numeric cells as floats."""
    with path.open(newline="") as fh:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_metrics(metrics_dir: Path) -> dict[str, Any]:
    """metrics/*.json by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}


def read_lock(path: Path) -> dict[str, Any]:
    """dvc.lock as a mapping; an absent lock is empty."""
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of nested metrics; list items as key[i]."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, obj
