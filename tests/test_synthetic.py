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


def test_code_problems_fall_in_both_splits_and_held_out_ones_ask_for_functions_train_never_does() -> None:
    code = [r for r in synthetic_problems(CFG) if r["domain"] == "code"]
    train = [r for r in code if r["split"] == "train"]
    held = [r for r in code if r["split"] == "eval"]
    assert len(train) == CFG.code_train_per_task * len(CFG.code_tasks) and len(held) == CFG.code_eval_per_task * len(
        CFG.code_tasks
    )
    assert not {r["question"].splitlines()[0] for r in train} & {r["question"].splitlines()[0] for r in held}
    assert {json.loads(r["metadata"])["kind"] for r in code} == set(CFG.code_tasks)


def test_code_problems_show_one_example_and_the_grader_runs_the_hidden_tests_in_the_sandbox() -> None:
    from tracemill.grading import GradingParams, get_grader
    from tracemill.sandbox import SandboxParams, open_sandbox

    code = [r for r in synthetic_problems(CFG) if r["domain"] == "code"]
    for row in code:
        assert row["test_format"] == "mbpp" and len(row["tests"]) == 3
        assert row["tests"][0] in row["question"] and not any(t in row["question"] for t in row["tests"][1:])
    fence = "```python\n{}\n```\n"
    drafts = [json.loads(r["metadata"])["draft"] for r in code]
    with open_sandbox(SandboxParams()) as sandbox, get_grader(GradingParams(), sandbox) as grader:
        right = grader.grade_many([(r, fence.format(r["answer"])) for r in code])
        wrong = grader.grade_many([(r, fence.format(d)) for r, d in zip(code, drafts)])
    assert all(v.correct and v.passed == 3 for v in right), [v.first_failure for v in right if not v.correct]
    assert not any(v.correct for v in wrong)
    # the draft fails the example the question shows, so running it catches the bug
    assert all(v.first_failure and v.first_failure.startswith(r["tests"][0]) for r, v in zip(code, wrong))


def test_the_embedded_params_send_code_problems_to_hint_infer_and_rft() -> None:
    from pathlib import Path

    from tracemill import params as P
    from tracemill.generate import pick_problems
    from tracemill.start_params import StartParams

    params = P.load(Path(__file__).resolve().parents[1] / "params.yaml")
    rows = synthetic_problems(P.section(SyntheticParams, params, "synthetic"))
    sp = P.section(StartParams, params, "start")
    for gp in (sp.hint_infer, sp.rft):
        picked = pick_problems(rows, gp)
        assert sum(p["domain"] == "code" for p in picked) >= gp.max_problems // 4
        assert sum(p["domain"] == "math" for p in picked) >= gp.max_problems // 4
