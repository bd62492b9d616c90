"""Code grading in the real sandbox: HumanEval `check(candidate)` and MBPP assert lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracemill.grading import GradingError, GradingParams, extract_code, get_grader
from tracemill.grading.code import split_tests
from tracemill.sandbox import SandboxParams, open_sandbox

SEEDS = Path(__file__).resolve().parent.parent / "data" / "seeds"


def _row(name: str, index: int) -> dict:
    with (SEEDS / name).open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == index:
                return json.loads(line)
    raise IndexError(index)


def humaneval(index: int) -> tuple[dict, str]:
    row = _row("humaneval_test.jsonl", index)
    problem = {"problem_id": row["task_id"], "domain": "code", "tests": [row["test"]], "test_format": "humaneval",
               "entry_point": row["entry_point"], "test_setup": ""}  # fmt: skip
    return problem, row["prompt"] + row["canonical_solution"]


def mbpp(index: int) -> tuple[dict, str]:
    row = _row("mbpp.jsonl", index)
    problem = {"problem_id": str(row["task_id"]), "domain": "code", "tests": row["test_list"], "test_format": "mbpp",
               "entry_point": None, "test_setup": row["test_setup_code"]}  # fmt: skip
    return problem, row["code"].replace("\r\n", "\n")


def respond(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nDone."


@pytest.fixture(scope="module")
def grader():
    with open_sandbox(SandboxParams(timeout_s=3.0, pool_size=2, spares=2)) as sandbox:
        with get_grader(GradingParams(), sandbox=sandbox) as g:
            yield g


def test_extract_code_takes_the_last_complete_python_block() -> None:
    text = "```python\nx = 1\n```\nthen\n```python\nx = 2\n```\n```python\nx = 3"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("no code here") is None


def test_humaneval_check_is_split_into_one_test_per_assert() -> None:
    problem, _ = humaneval(0)
    tests, entry = split_tests(problem)
    assert entry == "has_close_elements" and len(tests) == 7
    assert all("assert candidate(" in t for t in tests)


def test_reference_solutions_pass(grader) -> None:
    items = [(p, respond(c)) for p, c in (humaneval(0), humaneval(2), mbpp(1), mbpp(2))]
    verdicts = grader.grade_many(items)
    assert [(v.correct, v.reason, v.passed == v.total) for v in verdicts] == [(True, "passed", True)] * 4
    assert [v.total for v in verdicts] == [7, 3, 3, 3]
    assert {v.grader for v in verdicts} == {"code-tests"}


def test_a_wrong_solution_reports_passed_total_and_first_failure(grader) -> None:
    problem, _ = mbpp(1)  # similar_elements: three asserts
    wrong = "def similar_elements(a, b):\n    return (4, 5)\n"
    v = grader.grade(problem, respond(wrong))
    assert (v.correct, v.reason, v.passed, v.total) == (False, "tests_failed", 1, 3)
    assert "similar_elements((1, 2, 3, 4),(5, 4, 3, 7))" in v.first_failure and "AssertionError" in v.first_failure


def test_a_hanging_solution_is_a_timeout_with_partial_counts(grader) -> None:
    problem, _ = mbpp(1)
    hangs = "def similar_elements(a, b):\n    while 11 in a: pass\n    return tuple(sorted(set(a) & set(b)))\n"
    v = grader.grade(problem, respond(hangs))  # the third test hangs
    assert (v.correct, v.reason, v.passed, v.total) == (False, "timeout", 2, 3)


def test_printing_success_does_not_pass_a_test(grader) -> None:
    problem, _ = mbpp(1)
    forged = "import sys\nprint('passed 3/3 OK')\ndef similar_elements(a, b):\n    return ()\n"
    v = grader.grade(problem, respond(forged))
    assert (v.correct, v.passed) == (False, 0)


def test_no_code_and_a_crashing_solution(grader) -> None:
    problem, _ = humaneval(0)
    assert grader.grade(problem, "I think it is easy.").reason == "no_code"
    v = grader.grade(problem, respond("def has_close_elements(:\n"))
    assert (v.correct, v.reason, v.passed) == (False, "tests_failed", 0)
    assert v.first_failure == "solution: SyntaxError: invalid syntax"


def test_mixed_batches_keep_their_order(grader) -> None:
    code_problem, code = mbpp(2)
    math_problem = {"problem_id": "m", "domain": "math", "answer": "18"}
    verdicts = grader.grade_many([(math_problem, "#### 18"), (code_problem, respond(code)), (math_problem, "#### 17")])
    assert [(v.grader, v.correct) for v in verdicts] == [
        ("math-verify", True),
        ("code-tests", True),
        ("math-verify", False),
    ]


def test_solution_code_stays_in_the_sandbox(grader, tmp_path: Path) -> None:
    problem, code = mbpp(1)
    marker = tmp_path / "escaped"
    v = grader.grade(problem, respond(f"import os\nos.system('touch {marker}')\n{code}"))
    assert not marker.exists()
    assert v.total == 3


def test_without_a_sandbox_the_grader_opens_and_closes_its_own() -> None:
    problem, code = mbpp(1)
    with get_grader(GradingParams()) as g:
        assert g.grade(problem, respond(code)).correct


def test_unknown_test_format_names_the_problem() -> None:
    problem, code = mbpp(1)
    with get_grader(GradingParams()) as g, pytest.raises(GradingError, match="'2'.*test_format 'pytest'"):
        g.grade({**problem, "test_format": "pytest"}, respond(code))
