"""Code grading: the problem's tests run against the response's code in the sandbox."""

from __future__ import annotations

from typing import Any

from tracemill.grading.extract import extract_code

_SHOWN_FAILURE_CHARS = 300


def test_cells(problem: dict[str, Any]) -> list[str]:
    """One cell per test: MBPP asserts one by one; HumanEval's check(candidate) as one test."""
    tests = problem.get("tests") or []
    if problem.get("test_format") == "humaneval":
        return [f"{tests[0]}\ncheck({problem['entry_point']})"] if tests and problem.get("entry_point") else []
    return list(tests)


def code_jobs(problem: dict[str, Any], response: str) -> tuple[list[str], int] | None:
    """The cells to run (setup, solution, then each test) and how many are tests; None without code."""
    code = extract_code(response)
    if code is None:
        return None
    tests = test_cells(problem)
    setup = [problem["test_setup"]] if problem.get("test_setup") else []
    return setup + [code] + tests, len(tests)


def score(results: list[Any], n_tests: int) -> tuple[int, str | None]:
    """passed tests and the first failure's message, from the sandbox results of code_jobs' cells."""
    solution_ok = all(r.ok for r in results[: len(results) - n_tests])
    passed, first = 0, None
    for r in results[len(results) - n_tests :]:
        if solution_ok and r.ok:
            passed += 1
        elif first is None:
            first = (r.stderr or r.status)[-_SHOWN_FAILURE_CHARS:]
    if not solution_ok and first is None:
        bad = next(r for r in results if not r.ok)
        first = (bad.stderr or bad.status)[-_SHOWN_FAILURE_CHARS:]
    return passed, first
