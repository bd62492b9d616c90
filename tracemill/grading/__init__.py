"""Grading: one pure decision per (problem, response), used to label traces, as the RL reward
and as the evaluation metric.

    with get_grader(section(GradingParams, params, "grading"), sandbox=sb) as grader:
        verdicts = grader.grade_many([(problem_row, response_text), ...])

Math answers are extracted (`\\boxed{}`, `####`, "The answer is"), normalised, compared exactly
where that suffices and by math-verify in worker processes with a hard timeout otherwise. Code
is graded by running the problem's tests in the sandbox. Every Verdict names its grader and version.
"""

from tracemill.grading.core import GradingError, GradingParams, Verdict
from tracemill.grading.extract import extract_answer, extract_code
from tracemill.grading.registry import GRADERS, Grader, get_grader, grade_many

__all__ = [
    "GRADERS",
    "Grader",
    "GradingError",
    "GradingParams",
    "Verdict",
    "extract_answer",
    "extract_code",
    "get_grader",
    "grade_many",
]
