"""The shared text formats: ChatML prompts, TIR blocks and segments, boxed answers, rStar steps."""

from __future__ import annotations

import pytest

from tracemill import params as P
from tracemill.errors import ParamsError
from tracemill.formats import (
    FormatParams,
    Step,
    code_block,
    last_boxed,
    malformed_step,
    output_block,
    parse_steps,
    pending_code,
    render_prompt,
    render_steps,
    split_tir,
    strip_tool_stop,
)
from tracemill.tiny import make_tokenizer

FMT = FormatParams()


def test_prompt_is_chatml_with_the_style_system_prompt_and_an_open_assistant_turn() -> None:
    text = render_prompt("What is 2 + 3?", None, FMT, "steps")
    assert text == (
        f"<|im_start|>system\n{FMT.step_system_prompt}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_prompt_from_a_tokenizer_chat_template_matches_the_hand_written_one() -> None:
    tok = make_tokenizer(["What is 2 + 3? system user assistant"], vocab_size=300)
    assert render_prompt("What is 2 + 3?", tok, FMT) == render_prompt("What is 2 + 3?", None, FMT)


def test_split_tir_labels_code_output_hint_and_model_text_and_keeps_every_character() -> None:
    hint = "Wait, maybe using Python here is a good idea.\n"
    text = "First add.\n" + code_block("print(2 + 3)", FMT) + output_block("5", FMT) + hint + "So \\boxed{5}."
    segments = split_tir(text, FMT, hints=[hint])
    assert [s["kind"] for s in segments] == ["model", "code", "model", "output", "hint", "model"]
    assert "".join(s["text"] for s in segments) == text
    assert [s["loss"] for s in segments] == [True, True, True, False, False, True]
    assert segments[2]["text"] == "```output\n"  # the model hands over to the interpreter: trained
    assert not segments[3]["text"].startswith("```output")


def test_coat_segments_train_the_output_opener_after_every_step_of_code() -> None:
    from tracemill.satori import coat_segments

    text = (
        "<|continue|>Add.\n"
        + code_block("print(2 + 3)", FMT)
        + output_block("5", FMT)
        + "<|reflect|>"
        + code_block("print(2 + 3)", FMT)
        + output_block("5", FMT)
        + "<|continue|>So \\boxed{5}.\n"
    )
    segments = coat_segments(text, FMT)
    assert "".join(s["text"] for s in segments) == text
    trained = "".join(s["text"] for s in segments if s["loss"])
    untrained = "".join(s["text"] for s in segments if not s["loss"])
    assert trained.count("```output\n") == 2 and "```output" not in untrained
    assert untrained == "5\n```\n" * 2


def test_pending_code_is_the_last_closed_block_only_when_generation_stopped_after_it() -> None:
    text = "Add.\n" + code_block("x = 2\nprint(x + 3)", FMT)
    assert pending_code(text, FMT) == "x = 2\nprint(x + 3)"
    assert pending_code(text + "```output", FMT) == "x = 2\nprint(x + 3)"
    assert strip_tool_stop(text + "```output", FMT) == text
    assert pending_code(text + output_block("5", FMT), FMT) is None
    assert pending_code("no code here", FMT) is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{12}.", "12"),
        ("\\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("no box", None),
        ("\\boxed{3", None),
    ],
)
def test_last_boxed_balances_braces(text: str, answer: str | None) -> None:
    assert last_boxed(text, FMT) == answer


def test_steps_round_trip_and_the_boxed_step_is_terminal() -> None:
    steps = [Step("Add the apples.", "total = 2 + 3\nprint(total)", "5"), Step("The answer is \\boxed{5}.")]
    text = render_steps(steps, FMT)
    assert text.count(FMT.step_delimiter) == 2
    assert parse_steps(text, FMT) == steps


@pytest.mark.parametrize(
    ("text", "code", "why"),
    [  # steps the embedded policy sampled at temperature 1.6
        ("The answer is \\boxed{284}.4}.", None, "after_answer"),
        ("The answer is \\boxed{324}.\n0}.", None, "after_answer"),
        ("The leftover is the remainder of 417\ufffd'", "left = 417 % 2", "undecodable"),
        ("Add them.", "print(2 \ufffd 3)", "undecodable"),
        ("The answer is \\boxed{\\frac{1}{2}}.", None, None),  # nested braces close the box
        ("The answer is \\boxed{5} apples.", None, None),
        ("So \\boxed{5}.", None, None),
        ("Take away the 183 given away.", "left = total - 183", None),
    ],
)
def test_a_malformed_step_is_named_and_a_well_formed_one_passes(text: str, code: str | None, why: str | None) -> None:
    assert malformed_step(Step(text, code), FMT) == why


def test_format_params_reject_an_unknown_key_and_an_empty_delimiter() -> None:
    with pytest.raises(ParamsError, match="format.step_delim"):
        P.parse_section(FormatParams, {"step_delim": "x"}, "format")
    with pytest.raises(ParamsError, match="format.step_delimiter"):
        P.parse_section(FormatParams, {"step_delimiter": ""}, "format")


def test_ran_cells_are_the_code_blocks_an_output_block_follows():
    from tracemill.formats import ran_cells

    text = (
        "Step.\n```python\na = 1\nprint(a)\n```\n```output\n1\n```\n"
        "Then.\n```python\nb = a + 1\n```\n\n```output\n```\n"  # ran, printed nothing
        "Unrun.\n```python\nc = 3\n```\nThe answer is 2."
    )
    assert ran_cells(text, FMT) == ("a = 1\nprint(a)", "b = a + 1")
    assert ran_cells("No code at all.", FMT) == ()
