from tracemill import filters
from tracemill.params import parse_section

P = filters.FilterParams()

TRACE = (
    "Natalia sold 48 clips in April and half as many in May. Let me compute with Python.\n"
    "```python\napril = 48\nmay = april // 2\nprint(april + may)\n```\n```output\n72\n```\n"
    "So she sold \\boxed{72} clips."
)


def test_a_normal_trace_passes_every_row_filter():
    assert filters.first_failure(TRACE, P) == (True, "kept")


def test_looping_trace_is_dropped_for_repetition():
    loop = TRACE + " ".join(["so the total is 48 plus 24 which makes 72 clips and we check it again"] * 12)
    assert filters.repetition(loop, P) == (False, "repetition_ngram")
    lines = TRACE + "\n" + "\n".join(["Wait, let me recompute this."] * 6)
    assert filters.repetition(lines, P) == (False, "repetition_lines")


def test_format_and_length_checks_name_their_reason():
    assert filters.first_failure("short", P) == (False, "too_short")
    assert filters.first_failure(TRACE.replace("\\boxed{72}", "72"), P) == (False, "no_boxed_answer")
    assert filters.first_failure(TRACE + "\n```python\nprint(1)", P) == (False, "unclosed_code_block")


def test_exact_and_near_duplicates_are_dropped_within_a_problem():
    near = TRACE.replace("clips.", "clips in total.")
    other = "A different approach entirely: 48 + 48/2 gives \\boxed{72} after checking each month separately."
    texts = [TRACE, TRACE.upper(), near, other, TRACE]
    groups = ["p1", "p1", "p1", "p1", "p2"]
    result = filters.dedup(texts, groups, P)
    assert result.reasons == ["kept", "exact_duplicate", "near_duplicate", "kept", "kept"]
    assert result.cluster[2] == result.cluster[0] != result.cluster[3]


def test_global_scope_dedups_across_problems():
    p = parse_section(filters.FilterParams, {"dedup_scope": "global"}, "filters")
    assert filters.dedup([TRACE, TRACE], ["p1", "p2"], p).reasons == ["kept", "exact_duplicate"]


def test_decontamination_finds_an_eval_question_inside_a_trace():
    eval_q = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins."
    grams = filters.ngrams([eval_q], P.decontam_ngram)
    assert filters.contaminated("Problem: " + eval_q + " Answer: 18", grams, P.decontam_ngram)
    assert not filters.contaminated(TRACE, grams, P.decontam_ngram)


def test_a_code_trace_needs_a_closed_python_block_not_a_boxed_answer():
    code = "Here is the function.\n```python\ndef add_nums(a, b):\n    return a + b\n```\nIt adds its arguments."
    assert filters.first_failure(code, P, domain="code") == (True, "kept")
    assert filters.first_failure(code, P) == (False, "no_boxed_answer")  # a math trace still needs its box
    assert filters.first_failure("I would write a function that adds a and b.", P, domain="code") == (
        False,
        "no_code_answer",
    )
