"""`sft` rows, the training examples every fine-tuning stage writes and reads: one builder for all of
them (START's selected traces, rStar-Math's selected trajectories, Satori's COAT traces and its
policies' correct samples), so the rows of every source share their id rule and their columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tracemill import records


def sft_row(
    source: str,
    key: str,
    problem_id: str,
    prompt: str,
    segments: list[dict[str, Any]],
    meta: Mapping[str, Any],
    hint_loss: bool | None = None,
) -> dict[str, Any]:
    """One `sft` row: its id hashes the source table and the key of the row it was built from (a trace,
    trajectory or COAT id), so a re-run writes the same ids; `hint_loss` is None where a source has no hints."""
    return {
        "example_id": records.content_id("sft", source, key),
        "source": source,
        "problem_id": problem_id,
        "prompt": prompt,
        "segments": segments,
        "hint_loss": hint_loss,
        "metadata": records.to_json(meta),
    }


def trace_sft_rows(
    traces: Sequence[dict[str, Any]], problems: Mapping[str, dict[str, Any]], source: str, hint_loss: bool | None = None
) -> list[dict[str, Any]]:
    """`sft` rows from selected traces: the question as prompt, the generated segments with their loss
    flags, the hints' loss set by `hint_loss` (a trace marks them as inserted text, without loss;
    None: a source without hints keeps the trace's flags)."""
    rows = []
    for t in traces:
        segments = [
            {**s, "loss": hint_loss} if s["kind"] == "hint" and hint_loss is not None else s
            for s in t["segments"]
            if s["kind"] != "prompt"
        ]
        meta = json.loads(t["metadata"]) if t.get("metadata") else {}
        rows.append(
            sft_row(
                source,
                t["trace_id"],
                t["problem_id"],
                problems[t["problem_id"]]["question"],
                segments,
                {"trace_id": t["trace_id"], "reason_kept": t.get("reason_kept"), "modify": meta.get("modify")},
                hint_loss,
            )
        )
    return rows
