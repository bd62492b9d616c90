"""Graders chosen by name in params.yaml: `math-verify` and `exact` for math, `code-tests` for code.

One grader labels traces, is the reward in RL and is the metric in evaluation. Every verdict
records which grader and version decided it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from tracemill.grading import code as code_grading
from tracemill.grading.core import GradingParams, Verdict
from tracemill.grading.extract import extract_answer, gold_answer
from tracemill.grading.normalize import compare_plain, normalize

MATH_VERIFY = "math-verify"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


class Grader:
    """Grades (problem row, response text) pairs; a context manager owning its worker pool."""

    def __init__(self, params: GradingParams, sandbox: Any = None) -> None:
        self.params = params
        self._stack = ExitStack()
        self._sandbox = sandbox
        self._pool = None
        self.math_version = _version("math-verify") if params.math == MATH_VERIFY else _version("tracemill")
        self.code_version = _version("tracemill")

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._stack.close()

    def grade(self, problem: dict[str, Any], response: str) -> Verdict:
        return self.grade_many([(problem, response)])[0]

    def grade_many(self, items: Sequence[tuple[dict[str, Any], str]]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(items)
        math_items = [(i, p, r) for i, (p, r) in enumerate(items) if p.get("domain", "math") == "math"]
        code_items = [(i, p, r) for i, (p, r) in enumerate(items) if p.get("domain") == "code"]
        for i, verdict in self._grade_math(math_items):
            out[i] = verdict
        for i, verdict in self._grade_code(code_items):
            out[i] = verdict
        return out  # type: ignore[return-value]

    # ---- math --------------------------------------------------------------------------------

    def _math_verdict(self, correct: bool, reason: str, predicted: str | None) -> Verdict:
        return Verdict(correct, reason, self.params.math, self.math_version, predicted)

    def _grade_math(self, items: list[tuple[int, dict[str, Any], str]]) -> list[tuple[int, Verdict]]:
        results: list[tuple[int, Verdict]] = []
        pending: list[tuple[int, str, str]] = []
        for i, problem, response in items:
            pred = extract_answer(response, self.params.fallback_last_number)
            if not problem.get("answer"):
                results.append((i, self._math_verdict(False, "no_reference", pred)))
            elif pred is None:
                results.append((i, self._math_verdict(False, "no_answer", None)))
            elif len(pred) > self.params.max_answer_chars:
                results.append((i, self._math_verdict(False, "too_long", pred[:200])))
            else:
                gold = gold_answer(problem["answer"])
                plain = compare_plain(normalize(gold), normalize(pred))
                if plain is not None:
                    results.append((i, self._math_verdict(plain, "equal" if plain else "not_equal", pred)))
                elif self.params.math == MATH_VERIFY:
                    pending.append((i, gold, pred))
                else:
                    results.append((i, self._math_verdict(False, "not_equal", pred)))
        if pending:
            reasons = self._verify_pool().verify_many([(normalize(g).text, normalize(p).text) for _, g, p in pending])
            for (i, _, pred), reason in zip(pending, reasons):
                results.append((i, self._math_verdict(reason == "equal", "not_equal" if reason == "unparsed" else reason, pred)))
        return results

    def _verify_pool(self):
        if self._pool is None:
            from tracemill.grading.pool import VerifyPool

            p = self.params
            self._pool = VerifyPool(p.workers, p.timeout_s, p.worker_memory_mb, p.float_rounding)
        return self._pool

    # ---- code --------------------------------------------------------------------------------

    def _code_sandbox(self):
        if self._sandbox is None:
            from tracemill.sandbox import SandboxParams, open_sandbox

            self._sandbox = self._stack.enter_context(open_sandbox(SandboxParams()))
        return self._sandbox

    def _grade_code(self, items: list[tuple[int, dict[str, Any], str]]) -> list[tuple[int, Verdict]]:
        results: list[tuple[int, Verdict]] = []
        jobs, owners = [], []
        for i, problem, response in items:
            job = code_grading.code_jobs(problem, response)
            total = len(code_grading.test_cells(problem))
            if not total:
                results.append((i, Verdict(False, "no_reference", self.params.code, self.code_version, total=0)))
            elif job is None:
                results.append((i, Verdict(False, "no_code", self.params.code, self.code_version, passed=0, total=total)))
            else:
                jobs.append(job[0])
                owners.append((i, job[1]))
        if jobs:
            for (i, n_tests), runs in zip(owners, self._code_sandbox().run_many(jobs)):
                passed, first = code_grading.score(runs, n_tests)
                ok = passed == n_tests
                results.append((i, Verdict(ok, "passed" if ok else "tests_failed", self.params.code, self.code_version,
                                           passed=passed, total=n_tests, first_failure=first)))
        return results


def get_grader(params: GradingParams, sandbox: Any = None) -> Grader:
    return Grader(params, sandbox)
