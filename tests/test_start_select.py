import json

import pytest

from tracemill import filters, records
from tracemill.formats import FormatParams
from tracemill.generate import graded_text
from tracemill.hints import HintParams, draw, example_tests
from tracemill.start import modify_premature, seed_yield, select_rft, select_seed
from tracemill.start_params import SelectParams
from tracemill.store import Quarantine

FP = filters.FilterParams()


def trace(problem: str, i: int, *, hint: str | None, correct: bool, body: str) -> dict:
    segs = [records.segment("prompt", "Q"), records.segment("model", body)]
    if hint:
        segs.append(records.segment("hint", "Wait, let me check with Python.", hint_id=hint))
        segs.append(records.segment("code", "```python\nprint(6*7)\n```\n"))
        segs.append(records.segment("output", "```output\n42\n```\n"))
    segs.append(records.segment("model", f"The answer is \\boxed{{{42 if correct else 41}}}."))
    return {
        "trace_id": records.content_id(problem, i),
        "problem_id": problem,
        "stage": "hint_infer",
        "round": 0,
        "model": "m",
        "sample_index": i,
        "hint_id": hint,
        "hint_kind": "python_check" if hint else None,
        "correct": correct,
        "final_answer": "42" if correct else "41",
        "grader": "exact",
        "tool_calls": 1 if hint else 0,
        "prompt_tokens": 5,
        "cached_prompt_tokens": 0,
        "generated_tokens": 9,
        "finish_reason": "stop",
        "sampling": None,
        "segments": segs,
        "metadata": None,
    }


BODY = "We multiply six by seven to get the product of the two numbers given in the problem statement."


def test_hint_rft_rule_keeps_only_problems_greedy_got_wrong():
    traces = [
        trace("fixed", 0, hint=None, correct=False, body=BODY),
        trace("fixed", 1, hint="h1", correct=True, body=BODY),
        trace("already", 0, hint=None, correct=True, body=BODY),
        trace("already", 1, hint="h1", correct=True, body=BODY),
        trace("unsolved", 0, hint=None, correct=False, body=BODY),
        trace("unsolved", 1, hint="h1", correct=False, body=BODY),
    ]
    q = Quarantine("d_seed")
    kept = select_seed(traces, SelectParams(), FP, set(), q)
    assert [(t["problem_id"], t["reason_kept"]) for t in kept] == [("fixed", "hint_fixed_greedy")]
    assert q.counts == {"greedy_already_right": 1}
    records.validate("d_seed", kept)
    loose = select_seed(traces, SelectParams(rule="hint_right"), FP, set(), Quarantine("d_seed"))
    assert sorted(t["problem_id"] for t in loose) == ["already", "fixed"]


def test_repetitive_duplicate_and_contaminated_traces_are_dropped_with_reasons():
    loop = " ".join(["so six times seven is forty two and we check again"] * 15)
    eval_q = "A baker has six trays with seven loaves of bread on each tray in the shop"
    traces = [
        trace("p", 0, hint=None, correct=False, body=BODY),
        trace("p", 1, hint="h1", correct=True, body=BODY),
        trace("p", 2, hint="h2", correct=True, body=BODY),  # exact duplicate of 1
        trace("p", 3, hint="h3", correct=True, body=loop),
        trace("c", 0, hint=None, correct=False, body=BODY),
        trace("c", 1, hint="h1", correct=True, body="Restating: " + eval_q + ". " + BODY),
    ]
    q = Quarantine("d_seed")
    kept = select_seed(traces, SelectParams(), FP, filters.ngrams([eval_q], FP.decontam_ngram), q)
    assert [t["trace_id"] for t in kept] == [traces[1]["trace_id"]]
    assert q.counts == {"exact_duplicate": 1, "repetition_ngram": 1, "contaminated": 1}


def test_rft_keeps_at_most_one_correct_sample_per_problem():
    samples = [trace("p", i, hint=None, correct=i % 2 == 0, body=BODY + " Step " * i) for i in range(6)]
    q = Quarantine("d_start")
    kept = select_rft(samples, SelectParams(), FP, set(), q)
    assert len(kept) == 1 and kept[0]["correct"] and kept[0]["reason_kept"] == "rft_correct"
    assert kept[0]["sample_index"] == 0  # the shortest correct response
    assert sum(q.counts.values()) == 2 and set(q.counts) <= {"over_per_problem_limit", "near_duplicate"}
    records.validate("d_start", kept)


# ---- START's modify step, the loss of each segment kind, hint draws, code answers ----------------

FMT = FormatParams()


def premature(hint_at: str = "stop") -> dict:
    """A hinted trace that boxed a wrong answer before its hint and the right one after it."""
    t = trace("p", 1, hint="h1", correct=True, body="Six times seven is 41. The answer is \\boxed{41}.\n")
    t["hint_at"] = [hint_at]
    return t


@pytest.mark.parametrize(
    ("mode", "before"),
    [
        ("keep", "Six times seven is 41. The answer is \\boxed{41}.\n"),
        ("unbox", "Six times seven is 41. The answer is 41.\n"),
        ("drop", "Six times seven is 41.\n"),
    ],
)
def test_modify_treats_only_the_answer_boxed_before_the_hint(mode: str, before: str):
    t = modify_premature(premature(), mode, FMT)
    texts = [s["text"] for s in t["segments"] if s["kind"] == "model"]
    assert texts == [before, "The answer is \\boxed{42}."]  # the final answer after the hint stays boxed
    assert json.loads(t["metadata"]) == {"modify": mode, "premature_answers_modified": 0 if mode == "keep" else 1}
    records.validate("d_seed", [{**t, "reason_kept": "hint_fixed_greedy", "dedup_cluster": None}])


def test_mask_keeps_the_attempt_before_the_hint_as_context_without_loss():
    t = modify_premature(premature(), "mask", FMT)
    assert [s["text"] for s in t["segments"]] == [s["text"] for s in premature()["segments"]]  # text untouched
    hint = next(i for i, s in enumerate(t["segments"]) if s["kind"] == "hint")
    before = [s for s in t["segments"][:hint] if s["kind"] in ("model", "code")]
    after = [s for s in t["segments"][hint + 1 :] if s["kind"] == "model"]
    assert before and not any(s["loss"] for s in before)  # the wrong attempt is not learned
    assert after and all(s["loss"] for s in after)  # the fix after the hint is
    assert json.loads(t["metadata"]) == {"modify": "mask", "premature_answers_modified": len(before)}


def test_sft_rows_train_the_hint_and_the_tool_output_opener_and_mask_prompt_and_output():
    from tracemill import tiny
    from tracemill.formats import output_segments
    from tracemill.train import IGNORE_INDEX, build_labels
    from tracemill.train.examples import trace_sft_rows

    segs = [
        records.segment("prompt", "Q"),
        records.segment("model", "It is 41.\n"),
        records.segment("hint", "Wait, maybe using Python here is a good idea.\n", hint_id="h1"),
        records.segment("code", "```python\nprint(6 * 7)\n```\n"),
        *output_segments("42", FMT),
        records.segment("model", "So \\boxed{42}."),
    ]
    t = {
        **trace("p", 1, hint="h1", correct=True, body=""),
        "segments": segs,
        "metadata": records.to_json({"modify": "unbox"}),
    }
    problems = {"p": {"question": "What is six times seven?"}}
    tok = tiny.make_tokenizer(["What is six times seven?" + "".join(s["text"] for s in segs)] * 4, 300)
    for hint_loss in (True, False):
        (row,) = trace_sft_rows([t], problems, "d_seed", hint_loss)
        records.validate("sft", [row])
        assert row["hint_loss"] is hint_loss and json.loads(row["metadata"])["modify"] == "unbox"
        ids, labels = build_labels(tok, row["prompt"], row["segments"], fmt=FMT)
        prompt_len = len(ids) - len(
            tok("".join(s["text"] for s in row["segments"]) + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        )
        assert set(labels[:prompt_len]) == {IGNORE_INDEX}
        trained = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
        assert ("maybe using Python" in trained) is hint_loss
        assert (
            "print(6 * 7)" in trained and "```output" in trained
        )  # the model's code and its hand-over to the interpreter
        assert "42\n```\nSo" not in trained and "So \\boxed{42}." in trained  # the interpreter's output is masked


def test_hint_draws_are_seeded_per_trace_with_distinct_kinds_and_spread_wordings():
    hp = HintParams()
    a = draw(hp, "math", "p1", seed=0)
    assert a == draw(hp, "math", "p1", seed=0) and len(a) == hp.per_problem
    assert len({d.hint.kind for d in a}) == hp.per_problem  # each trace of a problem tries another kind
    assert all(1 <= d.marker_index <= hp.marker_choices for d in a)
    many = [d for i in range(40) for d in draw(hp, "math", f"p{i}", seed=0)]
    assert len({d.hint.kind for d in many}) == 5 and len({d.hint.id for d in many}) >= 10
    assert len({d.marker_index for d in many}) == hp.marker_choices  # not always the first marker
    assert all(d.hint.template for d in draw(hp, "code", "p1", seed=0))


def test_example_tests_are_mbpps_first_assert_and_humanevals_docstring_examples():
    mbpp = {"test_format": "mbpp", "tests": ["assert f(1) == 2", "assert f(2) == 3"], "question": "..."}
    assert example_tests(mbpp) == ["assert f(1) == 2"]
    humaneval = {
        "test_format": "humaneval",
        "tests": ["def check(candidate): ..."],
        "question": 'def inc(x):\n    """Add one.\n    >>> inc(1)\n    2\n    """\n',
    }
    assert example_tests(humaneval) == ["assert inc(1) == 2"]


def test_a_code_problem_grades_the_models_last_own_code_not_the_hints_harness():
    from tracemill.tir import TraceResult

    solution = "```python\ndef inc(x):\n    return x + 1\n```\n"
    harness = "Wait, let me run the examples.\n```python\ndef inc(x):\n    return x + 1\nassert inc(1) == 2\n```\n"
    segs = [
        records.segment("code", "```python\ndef inc(x):\n    return x\n```\n"),
        records.segment("model", "Fixed:\n"),
        records.segment("code", solution),
        records.segment("hint", harness, hint_id="c"),
        records.segment("output", "ok\n```\n"),
        records.segment("model", "The examples pass."),
    ]
    r = TraceResult("k", "".join(s["text"] for s in segs), segs, 2, ["c"], 0, 0, 0, "stop")
    assert graded_text({"domain": "code"}, r, FMT) == solution
    assert graded_text({"domain": "math"}, r, FMT) == r.response


def test_seed_yield_counts_rows_per_hinted_problem_by_domain_and_where_kept_hints_landed():
    traces = [
        trace("m1", 1, hint="h", correct=True, body=BODY),
        trace("m2", 1, hint="h", correct=False, body=BODY),
        trace("c1", 1, hint="h", correct=True, body=BODY),
        trace("g", 0, hint=None, correct=False, body=BODY),
    ]
    kept = [{**traces[0], "hint_at": ["marker", "stop"]}, {**traces[2], "hint_at": ["stop"]}]
    y = seed_yield(traces, kept, {"m1": "math", "m2": "math", "c1": "code", "g": "math"})
    assert y["hinted_problems"] == 3 and y["rows_per_hinted_problem"] == round(2 / 3, 4)
    assert y["rows_per_hinted_problem_by_domain"] == {"code": 1.0, "math": 0.5}
    assert y["kept_hint_at"] == {"marker": 1, "stop": 2}
