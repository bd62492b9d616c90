"""The Runs page's numbers: metrics/*.json as tables and plots/*.csv as small SVG charts drawn here
(a line for a numeric x with many points, bars otherwise), so the page needs no plotting library."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill.runfiles import read_plot

W, H, PAD = 420, 220, 36


@dataclass(frozen=True)
class Chart:
    name: str
    kind: str  # line | bars
    x_label: str
    series: list[tuple[str, list[tuple[float, float]]]]  # (column, [(x px, y px)])
    labels: list[tuple[float, str]]  # x axis ticks
    y_max: float
    y_min: float  # 0, or the lowest value where one is negative (an RL reward)
    zero: float  # the y pixel of the value 0, where bars start
    width: int = W
    height: int = H
    pad: int = PAD


def _is_number(value: Any) -> bool:
    return isinstance(value, float)


def chart(path: Path) -> Chart | None:
    rows = read_plot(path)
    if not rows:
        return None
    x_col, *rest = list(rows[0])
    ys = [c for c in rest if all(_is_number(r[c]) for r in rows)]
    if not ys:
        return None
    values = [r[c] for r in rows for c in ys]
    bottom = min(min(values), 0.0)
    top = max(max(values), bottom + 1e-9)
    numeric_x = all(_is_number(r[x_col]) for r in rows) and len(rows) > 12
    inner_w, inner_h = W - 2 * PAD, H - 2 * PAD

    def y_px(v: float) -> float:
        return round(H - PAD - (v - bottom) / (top - bottom) * inner_h, 1)

    if numeric_x:
        xs = [r[x_col] for r in rows]
        lo, hi = min(xs), max(xs)
        span = (hi - lo) or 1.0
        series = [(c, [(round(PAD + (x - lo) / span * inner_w, 1), y_px(r[c])) for x, r in zip(xs, rows)]) for c in ys]
        labels: list[tuple[float, str]] = [(PAD, f"{lo:g}"), (W - PAD, f"{hi:g}")]
        return Chart(path.stem, "line", x_col, series, labels, top, bottom, y_px(0.0))
    slot = inner_w / len(rows)
    series = [
        (c, [(round(PAD + i * slot + (k + 0.1) * slot * 0.8 / len(ys), 1), y_px(r[c])) for i, r in enumerate(rows)])
        for k, c in enumerate(ys)
    ]
    labels = [
        (round(PAD + (i + 0.5) * slot, 1), f"{r[x_col]:g}" if _is_number(r[x_col]) else str(r[x_col])[:14])
        for i, r in enumerate(rows)
    ]
    return Chart(path.stem, "bars", x_col, series, labels, top, bottom, y_px(0.0))


def charts(plots_dir: Path) -> list[Chart]:
    return [c for p in sorted(plots_dir.glob("*.csv")) if (c := chart(p))] if plots_dir.is_dir() else []


def metrics(metrics_dir: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(metrics_dir.glob("*.json")) if metrics_dir.is_dir() else []:
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out[path.stem] = {"error": f"{path.name} does not read: {exc}"}
    return out


def rounds(metrics_by_name: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rStar-Math round from rstar_search_round<r>.json."""
    return sorted(
        (
            m
            for name, m in metrics_by_name.items()
            if name.startswith("rstar_search_round") and isinstance(m, dict) and "round" in m
        ),
        key=lambda m: m["round"],
    )
