"""Grading cases drawn from the answer formats of GSM8K, MATH and their grader failure reports."""

import time

import pytest

from tracemill.grading import GradingParams, extract_answer, extract_code, get_grader


@pytest.fixture(scope="module")
def grader():
    with get_grader(GradingParams(timeout_s=2.0, workers=2)) as g:
        yield g


EQUAL = [
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac12"), ("\\dfrac{3}{4}", "\\tfrac{3}{4}"), ("1450000", "1,450,000"),
    ("18", "\\$18"), ("18", "18 dollars"), ("28\\%", "28"), ("0.28", "28\\%"), ("30^\\circ", "30"),
    ("5", "5\\text{ cm}^2"), ("3", "x = 3"), ("1.5\\times10^{3}", "1500"), ("2.5e-3", "0.0025"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("2\\sqrt{3}", "\\sqrt{12}"), ("x^2+2x+1", "(x+1)^2"),
    ("(1,2)", "(1, 2)"), ("[0, 1)", "[0,1)"), ("\\{1,2\\}", "\\{2,1\\}"), ("-10", "-10"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"), ("\\text{Evelyn}", "Evelyn"),
    ("2, 3", "3, 2"),
]
UNEQUAL = [
    ("2", "2.0001"), ("1/3", "0.33"), ("\\frac{1}{3}", "0.333"), ("(1,2)", "\\{1,2\\}"), ("[0,1)", "(0,1)"),
    ("18", "81"), ("12", "12.5"), ("\\sqrt{2}", "1.41"), ("x+1", "x-1"), ("\\text{Evelyn}", "Eve"), ("28\\%", "0.27"),
]


def boxed(ans):
    return f"Some reasoning. The final answer is \\boxed{{{ans}}}."


@pytest.mark.parametrize("gold, pred", EQUAL)
def test_equal_answers(grader, gold, pred):
    v = grader.grade({"domain": "math", "answer": gold}, boxed(pred))
    assert v.correct, (gold, pred, v)
    assert v.grader == "math-verify" and v.grader_version


@pytest.mark.parametrize("gold, pred", UNEQUAL)
def test_near_misses_are_unequal(grader, gold, pred):
    v = grader.grade({"domain": "math", "answer": gold}, boxed(pred))
    assert not v.correct, (gold, pred, v)


def test_extraction_order_and_no_guessing():
    assert extract_answer("\\boxed{1} then \\boxed{\\frac{2}{3}}", False) == "\\frac{2}{3}"
    assert extract_answer("\\fbox{7}", False) == "7"
    assert extract_answer("so #### 1,234", False) == "1,234"
    assert extract_answer("The answer is 42. I hope it helps.", False) == "42"
    assert extract_answer("we got 3 apples and 5 pears", False) is None
    assert extract_answer("we got 3 apples and 5 pears", True) == "5"
    assert extract_answer("\\boxed{a{b}c}", False) == "a{b}c"


def test_code_extraction_takes_the_last_complete_block():
    text = "```python\nx = 1\n```\nthen\n```python\ndef f():\n    return 2\n```\n```python\nunfinished"
    assert extract_code(text) == "def f():\n    return 2\n"


def test_hostile_answers_return_within_the_timeout(grader):
    cases = [("5", "\\boxed{" + "9" * 10_000_000 + "}"), ("5", "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}"),
             ("10", "\\boxed{10^{10^{10}}}"), ("1", "\\boxed{" + "x^" * 500 + "2}")]
    start = time.monotonic()
    verdicts = grader.grade_many([({"domain": "math", "answer": g}, r) for g, r in cases])
    assert time.monotonic() - start < 2.0 * len(cases) + 3
    assert not any(v.correct for v in verdicts)
    assert {v.reason for v in verdicts} <= {"too_long", "no_answer", "timeout", "not_equal", "verifier_crashed"}


def test_no_reference_and_no_answer_reasons(grader):
    assert grader.grade({"domain": "math", "answer": None}, boxed("1")).reason == "no_reference"
    assert grader.grade({"domain": "math", "answer": "1"}, "I am not sure.").reason == "no_answer"


MBPP = {"domain": "code", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"],
        "test_format": "mbpp", "entry_point": "add", "test_setup": None}
HUMANEVAL = {"domain": "code", "tests": ["def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"],
             "test_format": "humaneval", "entry_point": "total"}


def test_code_tests_report_passed_total_and_first_failure(grader):
    good = grader.grade(MBPP, "```python\ndef add(a, b):\n    return a + b\n```")
    assert good.correct and (good.passed, good.total) == (3, 3)
    bad = grader.grade(MBPP, "```python\ndef add(a, b):\n    return a * b if a > 0 else a + b\n```")
    assert not bad.correct and (bad.passed, bad.total) == (2, 3) and "AssertionError" in bad.first_failure
    he = grader.grade_many([(HUMANEVAL, "```python\ndef total(xs):\n    return sum(xs)\n```"),
                            (HUMANEVAL, "no code here")])
    assert he[0].correct and he[0].total == 1
    assert not he[1].correct and he[1].reason == "no_code"


def test_hostile_solution_code_stays_in_the_sandbox(grader):
    v = grader.grade(MBPP, "```python\nimport os\nos.system('touch /tmp/tracemill-pwned')\ndef add(a, b):\n    return a + b\n```")
    import os

    assert not os.path.exists("/tmp/tracemill-pwned")
    assert v.total == 3
