"""The tool-integrated loop on a real tiny model that has learned one demonstration by heart:
a hint lands exactly after the drawn marker, before the end of thinking or of the turn; tool output is
appended verbatim, its opener is the model's; a code hint's template runs the examples at once."""

import pytest

from tracemill import tiny
from tracemill.formats import FormatParams, render_prompt
from tracemill.hints import Hint
from tracemill.llm import LLMParams, load_backend
from tracemill.sandbox import SandboxParams, open_sandbox
from tracemill.tir import LoopLimits, Sampling, TraceJob, before_hint, run_traces

FMT = FormatParams()
QUESTION = "What is six times seven?"
DEMO = (
    "Let me think. Wait, I will compute it.\n```python\nprint(6 * 7 + 0)\n```\n```output\n42\n```\n"
    "Alternatively, seven sixes are the same.\n</think>\nThe answer is \\boxed{42}."
)


def learned_by_heart(prompt: str, text: str, folder):
    """A tiny model trained 200 steps on prompt + text alone, as a backend."""
    import torch

    tok = tiny.make_tokenizer([prompt + text] * 20, 300)
    model = tiny.make_model(
        tok, tiny.TinyConfig(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)
    )
    ids = tok(prompt + text + tiny.IM_END, return_tensors="pt").input_ids
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return load_backend(LLMParams(), tiny.save(model, tok, folder))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tir") / "model"
    backend = learned_by_heart(render_prompt(QUESTION, None, FMT, "tir"), DEMO, folder)
    with open_sandbox(SandboxParams()) as sandbox:
        yield backend, sandbox, render_prompt(QUESTION, backend.tokenizer, FMT, "tir")


def run(setup, limits=None, **job):
    backend, sandbox, prompt = setup
    jobs = [TraceJob(key="k", prompt=prompt, sampling=Sampling(max_tokens=80), max_turn_tokens_total=300, **job)]
    return run_traces(backend, sandbox, jobs, FMT, LoopLimits() if limits is None else limits)[0]


def test_without_hints_the_code_runs_and_its_output_is_appended(setup):
    r = run(setup)
    assert [s["kind"] for s in r.segments[:4]] == ["model", "code", "model", "output"] and r.tool_calls == 1
    # the model hands control to the interpreter: the opener is its text, with loss; the rest is the sandbox's
    assert r.segments[2] == {"kind": "model", "text": "```output\n", "hint_id": None, "loss": True}
    assert r.segments[3] == {"kind": "output", "text": "42\n```\n", "hint_id": None, "loss": False}
    assert "\\boxed{42}" in r.response and r.finish_reason == "stop" and r.hint_at == []
    assert r.cached_prompt_tokens > 0  # the continuation after the tool output reused its prefix


def test_hint_is_inserted_exactly_at_the_first_marker(setup):
    hint = Hint("h", "Wait, maybe using Python here is a good idea.", position="marker")
    r = run(setup, marker_hint=hint)
    assert r.segments[0] == {"kind": "model", "text": "Let me think. ", "hint_id": None, "loss": True}
    # in a generated trace the hint is marked as inserted text; the sft stage decides whether it trains
    assert r.segments[1]["kind"] == "hint" and r.segments[1]["text"] == hint.text and r.segments[1]["loss"] is False
    assert r.hint_ids == ["h"] and r.hint_at == ["marker"]


def test_hint_goes_after_the_drawn_marker_and_earlier_markers_stay_the_models(setup):
    hint = Hint("h", "Wait, maybe using Python here is a good idea.", position="marker")
    r = run(setup, marker_hint=hint, marker_index=2)
    at = next(i for i, s in enumerate(r.segments) if s["kind"] == "hint")
    before = "".join(s["text"] for s in r.segments[:at])
    assert before.startswith("Let me think. Wait, I will compute it.") and before.endswith(
        "```\n"
    )  # "Alternatively" was replaced
    assert r.hint_at == ["marker"] and r.tool_calls == 1


def test_a_trace_with_fewer_markers_than_drawn_gets_its_hint_at_the_stop(setup):
    hint = Hint("h", "Wait, let me verify this once more.")
    r = run(setup, marker_hint=hint, stop_hint=hint, marker_index=3)
    at = next(i for i, s in enumerate(r.segments) if s["kind"] == "hint")
    assert "\\boxed{42}" in "".join(s["text"] for s in r.segments[:at])  # the model had finished its answer
    assert at < len(r.segments) - 1 and r.hint_at == ["stop"]  # and generation went on after the hint


def test_a_long_cot_models_hint_goes_before_its_end_of_thinking(setup):
    hint = Hint("s", "Wait, let me verify this once more.", position="stop")
    r = run(setup, stop_hint=hint, stop_strings=("</think>",))
    at = next(i for i, s in enumerate(r.segments) if s["kind"] == "hint")
    before = "".join(s["text"] for s in r.segments[:at])
    assert before.endswith("seven sixes are the same.\n") and "boxed" not in before
    assert r.hint_at == ["stop"]


def test_each_stop_hint_is_a_round_and_round_zero_is_the_trace_without_hints(setup):
    plain = run(setup)
    hint = Hint("s", "Wait, let me verify this once more.", position="stop")
    hinted = run(setup, stop_hint=hint, tokens_per_stop_hint=150)
    assert hinted.hint_at == ["stop"]
    zero = before_hint(hinted, 0)
    assert (zero.response, zero.tool_calls, zero.generated_tokens) == (
        plain.response,
        plain.tool_calls,
        plain.generated_tokens,
    )
    assert zero.finish_reason == "stop" and zero.hint_ids == [] and zero.marks == []
    assert (
        hinted.response.startswith(f"{plain.response} {hint.text}") and hinted.generated_tokens > plain.generated_tokens
    )
    assert before_hint(hinted, 1) is hinted  # past the last hint: the whole trace


def test_a_code_hint_runs_the_models_code_on_the_examples_at_once(setup):
    template = '```python\n{candidate}\n{examples}\nprint("examples pass")\n```\n'
    hint = Hint(
        "c", "Wait, let me run the examples.\n", domain="code", kind="test_examples", position="stop", template=template
    )
    r = run(setup, stop_hint=hint, examples=("assert 6 * 7 == 42",))
    at = next(i for i, s in enumerate(r.segments) if s["kind"] == "hint")
    assert "print(6 * 7 + 0)\nassert 6 * 7 == 42" in r.segments[at]["text"]  # the candidate, then the problem's example
    assert r.segments[at + 1]["text"] == "```output\n" and r.segments[at + 2]["text"] == "42\nexamples pass\n```\n"
    assert r.tool_calls == 2


RESTART = "Let me compute.\n```python\ntotal = 6 * 7\nprint(total)\n```\n```output\n42\n```\n"
GO_ON = "One more.\n```python\nprint(total + 1)\n```\n```output\n43\n```\nThe answer is \\boxed{43}."


@pytest.fixture(scope="module")
def restart(tmp_path_factory):
    """A model that learned to go on from a prefix whose first cell defined `total`."""
    prompt = render_prompt(QUESTION, None, FMT, "tir") + RESTART
    backend = learned_by_heart(prompt, GO_ON, tmp_path_factory.mktemp("restart") / "model")
    with open_sandbox(SandboxParams()) as sandbox:
        yield backend, sandbox, render_prompt(QUESTION, backend.tokenizer, FMT, "tir") + RESTART


def test_a_restart_prefix_is_rerun_first_so_its_variables_exist(restart):
    """The cells a restart state ran are run again in the fresh session (their output unseen); without
    them the same continuation meets a NameError."""
    from tracemill.formats import ran_cells

    backend, sandbox, prompt = restart

    def go(cells):
        job = TraceJob(key="k", prompt=prompt, sampling=Sampling(max_tokens=80), setup_cells=cells)
        return run_traces(backend, sandbox, [job], FMT, LoopLimits())[0]

    replayed = go(ran_cells(RESTART, FMT))
    assert "```output\n43\n```" in replayed.response and replayed.tool_calls == 1
    assert "42" not in "".join(s["text"] for s in replayed.segments if s["kind"] == "output")
    assert "NameError" in go(()).response
