"""Grading throughput and verdicts: ours versus math-verify parse + verify serially in one process.

    python benchmarks/grading.py [--pairs 10000]

10,000 (gold, prediction) pairs built from the shipped GSM8K and MATH-500 answers, each labelled
by construction: the same answer restated (boxed, thousands separators, \\dfrac, a decimal for a
simple fraction, units, `x = n`, "The answer is ..."), or a different one (off by one, a near
miss like 18.0001, a fraction rounded to two decimals, an ordered pair swapped or written as a
set, another problem's answer). Both graders see the same response texts. Reported: agreement with the labels
for each, and pairs/s. Goal: identical or better verdicts and >= 3x the throughput on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from fractions import Fraction
from pathlib import Path

from tracemill.grading import GradingParams, get_grader

SEEDS = Path(__file__).resolve().parent.parent / "data" / "seeds"


def golds() -> list[str]:
    out = []
    for line in (SEEDS / "gsm8k_test.jsonl").open():
        out.append(json.loads(line)["answer"].split("####")[-1].strip().replace(",", ""))
    for line in (SEEDS / "math500_test.jsonl").open():
        out.append(json.loads(line)["answer"])
    return out


_FRAC = re.compile(r"^(-?)\\d?frac\{(\d+)\}\{(\d+)\}$")
_PAIR = re.compile(r"^\(([^,()]+),([^,()]+)\)$")


def restate(gold: str, rng: random.Random) -> str:
    if gold.lstrip("-").isdigit():
        n = int(gold)
        return rng.choice([
            f"\\boxed{{{n:,}}}", f"The answer is {n}.", f"\\boxed{{{n}}}", f"#### {n}", f"\\boxed{{{n}.0}}",
            f"\\boxed{{{n} \\text{{ dollars}}}}", f"The final answer is $x = {n}$.",
        ])  # fmt: skip
    if m := _FRAC.match(gold):
        sign, num, den = m.groups()
        value = Fraction(int(num), int(den)) * (-1 if sign else 1)
        exact = [f"\\boxed{{{float(value)}}}"] if 10**6 % value.denominator == 0 else []
        return rng.choice([f"\\boxed{{{_swap_frac(gold)}}}", f"$\\boxed{{ {gold} }}$", f"\\boxed{{{value}}}", *exact])
    return rng.choice([f"\\boxed{{{gold}}}", f"so the answer is $\\boxed{{{gold}}}$"])


def _swap_frac(gold: str) -> str:
    """`\\frac` as `\\dfrac` and back: the same fraction in another LaTeX form."""
    return gold.replace("\\dfrac", "\\frac", 1) if "\\dfrac" in gold else gold.replace("\\frac", "\\dfrac", 1)


def perturb(gold: str, others: list[str], rng: random.Random) -> str:
    if gold.lstrip("-").isdigit():
        n = int(gold)
        wrong = sorted({n + 1, n - 1, n * 10, n // 10 if n > 9 else n + 2} - {n})
        return rng.choice([f"\\boxed{{{rng.choice(wrong)}}}", f"\\boxed{{{n}.0001}}"])  # off by one, or a near miss
    if (m := _FRAC.match(gold)) and rng.random() < 0.5:
        sign, num, den = m.groups()
        value = Fraction(int(num), int(den)) * (-1 if sign else 1)
        if round(value, 2) != value:  # a rounded decimal is not the exact fraction asked for
            return f"\\boxed{{{float(round(value, 2))}}}"
    if (m := _PAIR.match(gold.replace(" ", ""))) and m.group(1) != m.group(2) and rng.random() < 0.5:
        a, b = m.groups()
        return rng.choice([f"\\boxed{{({b},{a})}}", f"\\boxed{{\\{{{a},{b}\\}}}}"])  # swapped, or as a set
    other = rng.choice(others)
    while _digits(other) == _digits(gold):  # "30" is a restatement of "30^\circ", not a wrong answer
        other = rng.choice(others)
    return f"\\boxed{{{other}}}"


def _digits(answer: str) -> str:
    return "".join(c for c in answer.replace("^\\circ", "") if c.isalnum())


def pairs(n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    rng = random.Random(seed)
    pool = golds()
    out = []
    for i in range(n):
        gold = rng.choice(pool)
        same = i % 2 == 0
        out.append((gold, restate(gold, rng) if same else perturb(gold, pool, rng), same))
    return out


def serial_math_verify(data: list[tuple[str, str, bool]]) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = []
    for gold, response, _ in data:
        try:
            verdicts.append(bool(verify(parse(f"${gold}$"), parse(response))))
        except Exception:
            verdicts.append(False)
    return time.perf_counter() - start, verdicts


def ours(data: list[tuple[str, str, bool]], workers: int) -> tuple[float, float, list[bool]]:
    """(seconds to start the workers, seconds to grade `data`, verdicts)."""
    with get_grader(GradingParams(workers=workers)) as g:
        start = time.perf_counter()
        g.grade_many([({"domain": "math", "answer": "\\frac{1}{2}"}, "\\boxed{\\sqrt{1/4}}")] * workers)
        started = time.perf_counter()
        verdicts = g.grade_many([({"domain": "math", "answer": gold}, response) for gold, response, _ in data])
        return started - start, time.perf_counter() - started, [v.correct for v in verdicts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=GradingParams().workers)
    args = ap.parse_args()
    data = pairs(args.pairs)
    labels = [same for _, _, same in data]
    t_start, t_ours, v_ours = ours(data, args.workers)
    t_base, v_base = serial_math_verify(data)

    def agree(v: list[bool]) -> str:
        right = sum(a == b for a, b in zip(v, labels))
        fp = sum(a and not b for a, b in zip(v, labels))
        fn = sum(b and not a for a, b in zip(v, labels))
        return f"{right}/{len(labels)} agree with the labels ({fp} false positives, {fn} false negatives)"

    print(f"pairs: {len(data)} from GSM8K and MATH-500 answers, half restated, half wrong")
    print(f"ours ({args.workers} workers + exact fast path): {t_ours:.2f} s = {len(data) / t_ours:.0f} pairs/s; {agree(v_ours)}")
    print(f"  (+ {t_start:.2f} s once to start the workers; {len(data) / (t_ours + t_start):.0f} pairs/s counting it)")
    print(f"math-verify serial in process:  {t_base:.2f} s = {len(data) / t_base:.0f} pairs/s; {agree(v_base)}")
    ratio = t_base / t_ours
    print(f"throughput ratio: {ratio:.1f}x, {t_base / (t_ours + t_start):.1f}x counting start-up (goal >= 3x: {'ok' if ratio >= 3 else 'MISSED'})")
    disagreements = [(g, r, s, o, b) for (g, r, s), o, b in zip(data, v_ours, v_base) if o != b]
    print(f"verdicts differ on {len(disagreements)} pairs; ours right on {sum(o == s for _, _, s, o, _ in disagreements)} of them")
    for g, r, s, o, b in disagreements[:5]:
        print(f"  gold={g!r} response={r[:60]!r} label={s} ours={o} math-verify={b}")


if __name__ == "__main__":
    main()
