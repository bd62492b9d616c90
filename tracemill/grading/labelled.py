"""The labelled grading set graded two ways — by our grader and by math-verify as it is usually
called — and scored per kind: right, false positives (graded correct, labelled wrong).

Used by the `grading_check` stage (metrics/grading.json, the per-kind table of docs/grading.md) and by
benchmarks/grading.py (the same verdicts, timed). The set is tests/data/grading/pairs.jsonl;
its sources and labels are described in tests/data/grading/README.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tracemill.grading.core import GradingParams
from tracemill.grading.registry import get_grader


@dataclass(frozen=True)
class Pair:
    gold: str
    response: str
    correct: bool
    kind: str
    source: str


def load_pairs(path: Path) -> list[Pair]:
    with path.open() as f:
        return [Pair(**json.loads(line)) for line in f]


def our_verdicts(params: GradingParams, pairs: Sequence[Pair]) -> tuple[str, list[bool]]:
    """(grader version, verdicts): each pair graded as a problems row {"answer": gold}."""
    with get_grader(params) as grader:
        verdicts = grader.grade_many([({"domain": "math", "answer": p.gold}, p.response) for p in pairs])
    return verdicts[0].grader_version if verdicts else "", [v.correct for v in verdicts]


def math_verify_verdicts(pairs: Sequence[Pair]) -> list[bool]:
    """`verify(parse("\\boxed{gold}"), parse(response))` serially in this process, its usual use."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    verdicts = []
    for p in pairs:
        gold = p.gold if "\\boxed" in p.gold else f"\\boxed{{{p.gold}}}"
        try:
            verdicts.append(bool(verify(parse(gold), parse(p.response))))
        except Exception:  # a pair it cannot read is a pair it does not call correct
            verdicts.append(False)
    return verdicts


def score(pairs: Sequence[Pair], ours: Sequence[bool], math_verify: Sequence[bool]) -> dict[str, Any]:
    """Per kind and over all pairs: pairs, and right and false positives of each grader."""

    def counts(idx: list[int]) -> dict[str, int]:
        labels = [pairs[i].correct for i in idx]
        out = {"pairs": len(idx)}
        for name, verdicts in (("ours", ours), ("math_verify", math_verify)):
            got = [verdicts[i] for i in idx]
            out[f"{name}_right"] = sum(v == y for v, y in zip(got, labels))
            out[f"{name}_false_positives"] = sum(v and not y for v, y in zip(got, labels))
        return out

    kinds = sorted({p.kind for p in pairs})
    return {
        "kinds": {k: counts([i for i, p in enumerate(pairs) if p.kind == k]) for k in kinds},
        "all": counts(list(range(len(pairs)))),
    }


def check(params: GradingParams, pairs: Sequence[Pair]) -> dict[str, Any]:
    """metrics/grading.json: both graders' per-kind scores and the versions that produced them."""
    grader_version, ours = our_verdicts(params, pairs)
    return {
        "grader": params.math,
        "grader_version": grader_version,
        "math_verify_version": version("math-verify"),
        **score(pairs, ours, math_verify_verdicts(pairs)),
    }
