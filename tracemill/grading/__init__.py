"""Grading: answer extraction, math equivalence (math-verify behind a worker pool) and code tests.

One pure decision used in three places: labelling traces, the RL reward, the evaluation metric.
"""

from tracemill.grading.core import CODE_GRADERS, MATH_GRADERS, GradingError, GradingParams, Verdict
from tracemill.grading.extract import extract_answer, extract_code, gold_answer
from tracemill.grading.registry import Grader, get_grader

__all__ = [
    "CODE_GRADERS", "MATH_GRADERS", "Grader", "GradingError", "GradingParams", "Verdict",
    "extract_answer", "extract_code", "get_grader", "gold_answer",
]
