"""What every grader shares: its params section, its verdict, its error."""

from __future__ import annotations

from dataclasses import dataclass

from tracemill.errors import TracemillError
from tracemill.params import above, at_least, choices

MATH_GRADERS = ("math-verify", "exact")
CODE_GRADERS = ("code-tests",)


class GradingError(TracemillError):
    """A grader cannot be built or run as configured."""


@dataclass(frozen=True)
class GradingParams:
    """The `grading` section of params.yaml."""

    math: str = choices(*MATH_GRADERS, default="math-verify")
    code: str = choices(*CODE_GRADERS, default="code-tests")
    # Taking the last number of a response that states no answer is a guess: off for training data.
    fallback_last_number: bool = False
    workers: int = at_least(1, default=2)  # processes that run math-verify
    timeout_s: float = above(0, default=5.0)  # hard limit per (gold, prediction) pair; past it the verdict is `timeout`
    worker_memory_mb: int = at_least(
        1, default=2048
    )  # address-space cap per worker, so a hostile answer cannot exhaust the host
    float_rounding: int = at_least(0, default=6)  # decimals math-verify rounds to when one side is a decimal
    max_answer_chars: int = at_least(1, default=1000)  # a longer extracted answer is `too_long`, never parsed


@dataclass(frozen=True)
class Verdict:
    """One grading decision and who made it.

    `reason`: equal | not_equal | no_answer | too_long | timeout | verifier_error | no_reference
    (math); passed | tests_failed | timeout | no_code | no_reference (code).
    """

    correct: bool
    reason: str
    grader: str
    grader_version: str
    predicted: str | None = None
    passed: int | None = None
    total: int | None = None
    first_failure: str | None = None
