"""Lay out one search tree for drawing: leaves side by side in depth-first order, each parent centred
over its children, one row per depth (a tidy layout that needs no JavaScript)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

X_STEP, Y_STEP, MARGIN = 96, 92, 48


@dataclass(frozen=True)
class Drawn:
    node: Mapping[str, Any]
    x: float
    y: float


@dataclass(frozen=True)
class Layout:
    nodes: list[Drawn]
    edges: list[tuple[Drawn, Drawn]]
    width: int
    height: int


def layout(nodes: Sequence[Mapping[str, Any]]) -> Layout:
    by_id = {n["node_id"]: n for n in nodes}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for n in sorted(nodes, key=lambda n: (-(n["q"] or 0.0), n["node_id"])):  # best child leftmost
        parent = n["parent_id"] if n["parent_id"] in by_id else None
        children.setdefault(parent, []).append(n)
    xs: dict[str, float] = {}
    next_leaf = [0]

    def place(node: Mapping[str, Any]) -> float:
        kids = children.get(node["node_id"], [])
        if kids:
            xs[node["node_id"]] = sum(place(k) for k in kids) / len(kids)
        else:
            xs[node["node_id"]] = next_leaf[0]
            next_leaf[0] += 1
        return xs[node["node_id"]]

    for root in children.get(None, []):
        place(root)
    depth_of = {n["node_id"]: n["depth"] for n in nodes}
    top = min(depth_of.values(), default=0)
    drawn = {i: Drawn(by_id[i], MARGIN + x * X_STEP, MARGIN + (depth_of[i] - top) * Y_STEP) for i, x in xs.items()}
    edges = [
        (drawn[n["parent_id"]], drawn[n["node_id"]]) for n in nodes if n["parent_id"] in drawn and n["node_id"] in drawn
    ]
    deepest = max(depth_of.values(), default=0) - top
    return Layout(
        list(drawn.values()),
        edges,
        int(2 * MARGIN + max(0, next_leaf[0] - 1) * X_STEP),
        int(2 * MARGIN + deepest * Y_STEP),
    )
