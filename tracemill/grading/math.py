"""Math grading: extract, normalise, settle plain and arithmetic cases at once, leave the rest to math-verify.

`decide` is pure and cheap; it returns a Verdict, or a `Pending` pair for the worker pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

from tracemill.grading.core import GradingParams, Verdict
from tracemill.grading.extract import extract_answer, gold_answer
from tracemill.grading.normalize import Answer, compare_plain, grouped_alike, normalize
from tracemill.grading.numeric import compare_numeric
from tracemill.grading.systems import align

# Bump when extraction, normalisation, the plain or the numeric comparisons change a verdict.
RULES_VERSION = "4"


@dataclass(frozen=True)
class Pending:
    """A pair only math-verify can settle: the extracted answer and both normalised texts."""

    predicted: str
    gold: str
    pred: str


def decide(
    gold: str | None,
    response: str,
    params: GradingParams,
    grader: str,
    grader_version: str,
    question: str | None = None,
) -> Verdict | Pending:
    """`question` (the problem's text, when known) tells the order in which named values
    (`x=5, y=2`) answer a tuple gold (`(5,2)`); without it they never do."""

    def verdict(correct: bool, reason: str, predicted: str | None = None) -> Verdict:
        return Verdict(correct, reason, grader, grader_version, predicted)

    if not gold or not gold.strip():
        return verdict(False, "no_reference")
    predicted = extract_answer(response, params.fallback_last_number)
    if predicted is None:
        return verdict(False, "no_answer")
    if len(predicted) > params.max_answer_chars:
        return verdict(False, "too_long", predicted[: params.max_answer_chars])
    g, p = normalize(gold_answer(gold)), normalize(predicted)
    g_text, p_text = align(*grouped_alike(g, p), question)
    g, p = Answer(g_text, g.percent), Answer(p_text, p.percent)
    settled = compare_plain(g, p)
    if settled is None and not (g.percent or p.percent):
        settled = compare_numeric(g.text, p.text)
    if settled is not None:
        return verdict(settled, "equal" if settled else "not_equal", predicted)
    return Pending(predicted, g.text, p.text)


def math_verify_version() -> str:
    return (
        f"{RULES_VERSION}+math-verify-{version('math-verify')}+latex2sympy2_extended-{version('latex2sympy2_extended')}"
    )
