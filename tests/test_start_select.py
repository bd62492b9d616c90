from tracemill import filters, records
from tracemill.start import SelectParams, select_rft, select_seed
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
        "trace_id": records.content_id(problem, i), "problem_id": problem, "stage": "hint_infer", "round": 0, "model": "m",
        "sample_index": i, "hint_id": hint, "hint_kind": "python_check" if hint else None, "correct": correct,
        "final_answer": "42" if correct else "41", "grader": "exact", "tool_calls": 1 if hint else 0, "prompt_tokens": 5,
        "cached_prompt_tokens": 0, "generated_tokens": 9, "finish_reason": "stop", "sampling": None, "segments": segs,
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
