"""Grading verdicts and throughput on the labelled set: ours versus math-verify, in one run.

    python benchmarks/grading.py [--pairs tests/data/grading/pairs.jsonl] [--markdown]

The labelled set (tests/data/grading/pairs.jsonl, built by benchmarks/grading_set.py from public
sources; see tests/data/grading/README.md) holds (gold, response, correct, kind, source) rows.
Both graders see the same texts: ours grades a problems row {"answer": gold} against the response;
math-verify runs `verify(parse("\\boxed{gold}"), parse(response))` serially in this process, its
usual use. Reported per kind and overall: right, false positives (graded correct, labelled wrong)
and false negatives for each, and pairs/s. Goals: ahead of math-verify in every kind, no false
positive, and >= 3x its throughput on 2 cores. `--markdown` prints the per-kind table alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracemill.grading import GradingParams, get_grader

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "grading" / "pairs.jsonl"
THROUGHPUT_GOAL = 3.0


@dataclass(frozen=True)
class Pair:
    gold: str
    response: str
    correct: bool
    kind: str
    source: str


def load(path: Path) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.open()]


def boxed_gold(gold: str) -> str:
    return gold if "\\boxed" in gold else f"\\boxed{{{gold}}}"


def serial_math_verify(pairs: Sequence[Pair]) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    start = time.perf_counter()
    verdicts = []
    for p in pairs:
        try:
            verdicts.append(bool(verify(parse(boxed_gold(p.gold)), parse(p.response))))
        except Exception:  # a pair it cannot read is a pair it does not call correct
            verdicts.append(False)
    return time.perf_counter() - start, verdicts


def ours(pairs: Sequence[Pair], workers: int) -> tuple[float, float, list[bool]]:
    """(seconds to start the workers, seconds to grade `pairs`, verdicts)."""
    with get_grader(GradingParams(workers=workers)) as g:
        start = time.perf_counter()
        g.grade_many([({"domain": "math", "answer": "\\frac{1}{2}"}, "\\boxed{\\sqrt{1/4}}")] * workers)
        started = time.perf_counter()
        verdicts = g.grade_many([({"domain": "math", "answer": p.gold}, p.response) for p in pairs])
        return started - start, time.perf_counter() - started, [v.correct for v in verdicts]


@dataclass(frozen=True)
class Score:
    right: int
    false_pos: int
    false_neg: int
    total: int

    def cell(self) -> str:
        return f"{self.right}/{self.total} ({100 * self.right / self.total:.1f} %)"


def score(pairs: Sequence[Pair], verdicts: Sequence[bool]) -> Score:
    labels = [p.correct for p in pairs]
    return Score(
        right=sum(v == y for v, y in zip(verdicts, labels)),
        false_pos=sum(v and not y for v, y in zip(verdicts, labels)),
        false_neg=sum(y and not v for v, y in zip(verdicts, labels)),
        total=len(labels),
    )


def table(pairs: Sequence[Pair], v_ours: Sequence[bool], v_mv: Sequence[bool]) -> str:
    """The per-kind Markdown table: right and false positives for each grader."""
    kinds = sorted({p.kind for p in pairs})
    lines = [
        "| kind | pairs | tracemill right | tracemill FP | math-verify right | math-verify FP |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in [*kinds, None]:
        idx = [i for i, p in enumerate(pairs) if kind is None or p.kind == kind]
        sub = [pairs[i] for i in idx]
        a, b = score(sub, [v_ours[i] for i in idx]), score(sub, [v_mv[i] for i in idx])
        name = "**all**" if kind is None else kind
        lines.append(f"| {name} | {len(sub)} | {a.cell()} | {a.false_pos} | {b.cell()} | {b.false_pos} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--workers", type=int, default=GradingParams().workers)
    ap.add_argument("--markdown", action="store_true", help="print only the per-kind table, as Markdown")
    ap.add_argument("--show", type=int, default=0, help="print this many of our wrong verdicts")
    args = ap.parse_args()
    pairs = load(args.pairs)
    t_start, t_ours, v_ours = ours(pairs, args.workers)
    t_mv, v_mv = serial_math_verify(pairs)
    if args.markdown:
        print(table(pairs, v_ours, v_mv))
        return
    a, b = score(pairs, v_ours), score(pairs, v_mv)
    print(f"pairs: {len(pairs)} from {args.pairs}")
    print(table(pairs, v_ours, v_mv))
    print(f"ours ({args.workers} workers): {t_ours:.2f} s = {len(pairs) / t_ours:.0f} pairs/s; {a.false_neg} false negatives")
    print(f"  (+ {t_start:.2f} s once to start the workers)")
    print(f"math-verify serial in process: {t_mv:.2f} s = {len(pairs) / t_mv:.0f} pairs/s; {b.false_neg} false negatives")
    ratio = t_mv / t_ours
    print(f"throughput ratio: {ratio:.1f}x, {t_mv / (t_ours + t_start):.1f}x counting start-up (goal >= {THROUGHPUT_GOAL:g}x: {'ok' if ratio >= THROUGHPUT_GOAL else 'MISSED'})")
    wrong = [(p, o) for p, o in zip(pairs, v_ours) if o != p.correct]
    for p, o in wrong[: args.show]:
        print(f"  [{p.kind}] label={p.correct} ours={o} gold={p.gold[-80:]!r} response={p.response[-160:]!r}  ({p.source})")


if __name__ == "__main__":
    main()
