"""Grading verdicts and throughput on the labelled set: ours versus math-verify, in one run.

    python benchmarks/grading.py [--pairs tests/data/grading/pairs.jsonl] [--markdown]

The labelled set (tests/data/grading/pairs.jsonl, built by benchmarks/grading_set.py from public
sources; see tests/data/grading/README.md) holds (gold, response, correct, kind, source) rows.
Both graders see the same texts: ours grades a problems row {"answer": gold} against the response;
math-verify runs `verify(parse("\\boxed{gold}"), parse(response))` serially in this process, its
usual use (tracemill.grading.labelled grades and scores both; the `grading_check` stage writes the same
counts to metrics/grading.json without timings). Reported per kind and overall: right, false positives
(graded correct, labelled wrong) and false negatives for each, and pairs/s. Goals: ahead of math-verify
in every kind, no false positive, and >= 3x its throughput on 2 cores. `--markdown` prints the per-kind table alone.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from tracemill.grading import GradingParams, get_grader
from tracemill.grading.labelled import Pair, load_pairs, math_verify_verdicts, score
from tracemill.report import grading_table

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "grading" / "pairs.jsonl"
THROUGHPUT_GOAL = 3.0


def serial_math_verify(pairs: Sequence[Pair]) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    verdicts = math_verify_verdicts(pairs)
    return time.perf_counter() - start, verdicts


def ours(pairs: Sequence[Pair], workers: int) -> tuple[float, float, list[bool]]:
    """(seconds to start the workers, seconds to grade `pairs`, verdicts)."""
    with get_grader(GradingParams(workers=workers)) as g:
        start = time.perf_counter()
        # One distinct equation per worker: only math-verify compares equations, so each starts.
        g.grade_many(
            [({"domain": "math", "answer": f"y={k}x+1"}, f"\\boxed{{y=1+{k}x}}") for k in range(1, workers + 1)]
        )
        started = time.perf_counter()
        verdicts = g.grade_many([({"domain": "math", "answer": p.gold}, p.response) for p in pairs])
        return started - start, time.perf_counter() - started, [v.correct for v in verdicts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--workers", type=int, default=GradingParams().workers)
    ap.add_argument("--markdown", action="store_true", help="print only the per-kind table, as Markdown")
    ap.add_argument("--show", type=int, default=0, help="print this many of our wrong verdicts")
    args = ap.parse_args()
    pairs = load_pairs(args.pairs)
    t_start, t_ours, v_ours = ours(pairs, args.workers)
    t_mv, v_mv = serial_math_verify(pairs)
    scores = score(pairs, v_ours, v_mv)
    if args.markdown:
        print(grading_table(scores))
        return
    total = scores["all"]
    print(f"pairs: {len(pairs)} from {args.pairs}")
    print(grading_table(scores))
    for name, label, seconds in (
        ("ours", f"ours ({args.workers} workers)", t_ours),
        ("math_verify", "math-verify serial in process", t_mv),
    ):
        false_neg = total["pairs"] - total[f"{name}_right"] - total[f"{name}_false_positives"]
        print(f"{label}: {seconds:.2f} s = {len(pairs) / seconds:.0f} pairs/s; {false_neg} false negatives")
        if name == "ours":
            print(f"  (+ {t_start:.2f} s once to start the workers)")
    ratio = t_mv / t_ours
    print(
        f"throughput ratio: {ratio:.1f}x, {t_mv / (t_ours + t_start):.1f}x counting start-up "
        f"(goal >= {THROUGHPUT_GOAL:g}x: {'ok' if ratio >= THROUGHPUT_GOAL else 'MISSED'})"
    )
    wrong = [(p, o) for p, o in zip(pairs, v_ours) if o != p.correct]
    for p, o in wrong[: args.show]:
        print(
            f"  [{p.kind}] label={p.correct} ours={o} gold={p.gold[-80:]!r} "
            f"response={p.response[-160:]!r}  ({p.source})"
        )


if __name__ == "__main__":
    main()
