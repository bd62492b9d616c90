"""What a grading worker process runs: math-verify on one (gold, prediction) pair at a time.

Imported only in worker processes (math-verify and sympy are heavy). math-verify's own SIGALRM
timeouts are off: the pool enforces a hard deadline by killing the process, which also stops
work that a signal cannot interrupt (a C-level big-integer power).
"""

from __future__ import annotations

import logging
import resource
import sys
from functools import lru_cache
from multiprocessing.connection import Connection

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Expr, Float, Rational

_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())
# Relative difference above which two exact values are different however close: math-verify
# compares them to `numeric_precision` absolute digits, so 1/2^99 and 1/2^98 came out equal.
_EXACT_RTOL = 1e-30
_DIGITS = 50  # working precision of the check, well past _EXACT_RTOL
# Values given to free symbols when two expressions are checked at a point: rationals no identity
# singles out, so `2 - 1/e` and `2 + 1/e` (e read as a symbol) cannot agree there by chance.
_SAMPLE = (Rational(7, 3), Rational(-5, 11), Rational(13, 17), Rational(19, 7))


def serve(conn: Connection, memory_mb: int) -> None:
    """Answer `(gold, pred, float_rounding)` requests with `equal`, `not_equal` or `error` until EOF."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it warns once that its timeouts are off
    # sympy and the LaTeX parser build their tables on first use (seconds on a loaded host): done
    # here, before "ready", so the pool's per-pair deadline measures the pair and not the warm-up.
    verify_pair("2x+4y-3=0", "y=-\\frac{x}{2}+\\frac{3}{4}", 6)
    conn.send("ready")
    while True:
        try:
            gold, pred, float_rounding = conn.recv()
        except EOFError:
            return
        try:
            outcome = "equal" if verify_pair(gold, pred, float_rounding) else "not_equal"
        except (Exception, RecursionError, MemoryError):  # a verdict per pair, whatever the input
            outcome = "error"
        conn.send(outcome)


def verify_pair(gold: str, pred: str, float_rounding: int) -> bool:
    g, p = _parse_gold(gold), _parse(pred)
    if not g or not p:
        return False
    if not verify(g, p, float_rounding=float_rounding, timeout_seconds=None):
        return False
    return not _values_differ(g[0], p[0])


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Golds repeat across the samples of one problem: parse each once per worker."""
    return _parse(gold)


def _parse(answer: str) -> list:
    return parse(f"${answer}$", extraction_config=_CONFIG, parsing_timeout=None)


def _values_differ(gold: object, pred: object) -> bool:
    """True when two exact expressions (no decimals) take different values: as they are, or with
    the same sample values for their symbols. A symbolic engine's "equal" on a sign flip or a
    near miss does not survive evaluation."""
    if not (isinstance(gold, Expr) and isinstance(pred, Expr)):
        return False
    if gold.atoms(Float) or pred.atoms(Float):
        return False  # a decimal answer is compared to `float_rounding` places, as configured
    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    point = {s: _SAMPLE[i % len(_SAMPLE)] + i for i, s in enumerate(symbols)}
    g, p = gold.subs(point).evalf(_DIGITS), pred.subs(point).evalf(_DIGITS)
    diff, scale = abs(g - p), max(abs(g), abs(p))
    if not (diff.is_number and scale.is_number and diff.is_finite and scale.is_finite):
        return False
    return bool(diff > _EXACT_RTOL * scale) if scale != 0 else bool(diff != 0)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
