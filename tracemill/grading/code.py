"""Code grading: run a problem's tests against the response's last ```python block in the sandbox.

Tests are HumanEval's `check(candidate)` (split into one test per asserting statement) or MBPP's
assert lines. One sandbox session per response: the first cell runs the setup and the solution,
then each test is a cell of its own, so the sandbox's status per cell says which tests passed
(no output to parse that the solution could forge), and a test that hangs costs only itself.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tracemill.grading.core import GradingError, Verdict
from tracemill.grading.extract import extract_code

NAME = "code-tests"
VERSION = "1"


class _Run(Protocol):  # tracemill.sandbox.RunResult
    status: str
    stderr: str

    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True)
class Program:
    """The cells of one grading session: setup + solution first, then one cell per test."""

    cells: list[str]
    predicted: str

    @property
    def total(self) -> int:
        return len(self.cells) - 1


def build(problem: dict, response: str) -> Program | None:
    """The session for `problem` and `response`, None when the response has no code; raises
    GradingError for a problem whose tests cannot be read."""
    code = extract_code(response)
    if code is None:
        return None
    tests, entry = split_tests(problem)
    first = "\n".join(part for part in (problem.get("test_setup") or "", code) if part)
    if entry is not None:
        first += f"\ncandidate = {entry}"
    return Program([first, *tests], code)


def split_tests(problem: dict) -> tuple[list[str], str | None]:
    """One source snippet per test, and the function tests call as `candidate` (HumanEval)."""
    fmt, tests = problem.get("test_format"), list(problem.get("tests") or [])
    if fmt == "mbpp":
        return tests, None
    if fmt == "humaneval":
        entry = problem.get("entry_point")
        if not entry:
            raise GradingError(f"problem {problem.get('problem_id')!r}: humaneval tests need an entry_point")
        return _check_statements(problem, "\n".join(tests)), entry
    raise GradingError(f"problem {problem.get('problem_id')!r}: test_format {fmt!r} is not humaneval or mbpp")


def _check_statements(problem: dict, source: str) -> list[str]:
    """Each statement of `check`'s body that asserts is one test; code before `check` and
    statements that do not assert run as part of the next test."""
    module = ast.parse(source)
    check = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise GradingError(f"problem {problem.get('problem_id')!r}: humaneval tests define no check(candidate)")
    pending = [ast.unparse(n) for n in module.body if n is not check]
    tests: list[str] = []
    for node in check.body:
        pending.append(ast.unparse(node))
        if any(isinstance(n, ast.Assert) for n in ast.walk(node)):
            tests.append("\n".join(pending))
            pending = []
    return tests


def verdict(program: Program, runs: Sequence[_Run]) -> Verdict:
    """passed/total and the first failure from the status of each cell."""
    first, tests = runs[0], runs[1:]
    if not first.ok:
        return _verdict(program, 0, f"solution: {_last_line(first)}", timed_out=first.status == "timeout")
    passed = sum(run.ok for run in tests)
    failed = next(((cell, run) for cell, run in zip(program.cells[1:], tests) if not run.ok), None)
    why = None if failed is None else f"{failed[0].strip().splitlines()[-1][:200]} -> {_last_line(failed[1])}"
    return _verdict(program, passed, why, timed_out=any(run.status == "timeout" for run in tests))


def _verdict(program: Program, passed: int, first_failure: str | None, timed_out: bool) -> Verdict:
    ok = first_failure is None and passed == program.total > 0
    reason = "passed" if ok else ("timeout" if timed_out else "tests_failed")
    return Verdict(ok, reason, NAME, VERSION, program.predicted, passed, program.total, first_failure)


def _last_line(run: _Run) -> str:
    lines = run.stderr.strip().splitlines()
    return (lines[-1] if lines else run.status)[:300]
