"""The seeded synthetic problems: exact answers, graded levels, a held-out split, the problems schema."""

from __future__ import annotations

import contextlib
import io
import json
from fractions import Fraction

from tracemill import records
from tracemill.synthetic import SyntheticParams, synthetic_problems

CFG = SyntheticParams(train_per_level=12, eval_per_level=4)


def _run(code: str, scope: dict) -> str:
    """The generator's own reference code (not model output), so running it in-process is safe."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, scope)  # noqa: S102
    return out.getvalue().strip()


def test_same_seed_same_rows_and_another_seed_other_rows() -> None:
    assert synthetic_problems(CFG) == synthetic_problems(CFG)
    other = synthetic_problems(SyntheticParams(seed=1, train_per_level=12, eval_per_level=4))
    assert {r["problem_id"] for r in other} != {r["problem_id"] for r in synthetic_problems(CFG)}


def test_rows_match_the_problems_schema_with_unique_ids() -> None:
    rows = synthetic_problems(CFG)
    table = records.validate("problems", rows)
    assert table.num_rows == len({r["problem_id"] for r in rows})
    assert {r["source"] for r in rows} == {"synthetic"} and {r["domain"] for r in rows} == {"math", "code"}


def test_eval_split_never_shares_a_question_with_train() -> None:
    rows = synthetic_problems(CFG)
    train = {r["question"] for r in rows if r["split"] == "train"}
    held = {r["question"] for r in rows if r["split"] == "eval"}
    assert held and train and not train & held


def test_every_level_of_every_kind_is_present_in_both_splits() -> None:
    rows = [r for r in synthetic_problems(CFG) if r["domain"] == "math"]
    cells = {(json.loads(r["metadata"])["kind"], r["difficulty"], r["split"]) for r in rows}
    assert cells == {(k, lv, s) for k in CFG.kinds for lv in CFG.levels for s in ("train", "eval")}


def test_worked_solution_code_prints_each_step_output_and_the_exact_answer() -> None:
    for row in (r for r in synthetic_problems(CFG) if r["domain"] == "math"):
        scope: dict = {}
        steps = json.loads(row["metadata"])["steps"]
        for step in steps:
            assert _run(step["code"], scope) == step["output"], row["question"]
        assert Fraction(row["answer"]) == Fraction(steps[-1]["output"]), row["question"]


def test_code_problems_carry_mbpp_asserts_that_the_reference_solution_passes() -> None:
    code = [r for r in synthetic_problems(CFG) if r["domain"] == "code"]
    assert code and {r["test_format"] for r in code} == {"mbpp"}
    for row in code:
        scope: dict = {}
        _run(row["answer"] + "\n" + "\n".join(row["tests"]), scope)
        assert callable(scope[row["entry_point"]])
