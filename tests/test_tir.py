"""The tool-integrated loop on a real tiny model that has learned one demonstration by heart:
a hint lands exactly at the marker and before the stop, tool output is appended verbatim."""

import pytest

from tracemill import tiny
from tracemill.formats import FormatParams, render_prompt
from tracemill.hints import Hint
from tracemill.llm import LLMParams, load_backend
from tracemill.sandbox import SandboxParams, open_sandbox
from tracemill.tir import LoopLimits, Sampling, TraceJob, run_traces

FMT = FormatParams()
QUESTION = "What is six times seven?"
DEMO = "Let me think. Wait, I will compute it.\n```python\nprint(6 * 7 + 0)\n```\n```output\n42\n```\nThe answer is \\boxed{42}."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    prompt = render_prompt(QUESTION, None, FMT, "tir")
    tok = tiny.make_tokenizer([prompt + DEMO] * 20, 300)
    model = tiny.make_model(tok, tiny.TinyConfig(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1))
    ids = tok(prompt + DEMO + tiny.IM_END, return_tensors="pt").input_ids
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    path = tiny.save(model, tok, tmp_path_factory.mktemp("tir") / "model")
    backend = load_backend(LLMParams(), path)
    with open_sandbox(SandboxParams()) as sandbox:
        yield backend, sandbox, render_prompt(QUESTION, backend.tokenizer, FMT, "tir")


def run(setup, **job):
    backend, sandbox, prompt = setup
    jobs = [TraceJob(key="k", prompt=prompt, sampling=Sampling(max_tokens=80), max_turn_tokens_total=300, **job)]
    return run_traces(backend, sandbox, jobs, FMT, LoopLimits())[0]


def test_without_hints_the_code_runs_and_its_output_is_appended(setup):
    r = run(setup)
    kinds = [s["kind"] for s in r.segments]
    assert kinds[:3] == ["model", "code", "output"] and r.tool_calls == 1
    assert r.segments[2]["text"] == "```output\n42\n```\n"  # written by the sandbox, not the model
    assert "\\boxed{42}" in r.response and r.finish_reason == "stop"
    assert r.cached_prompt_tokens > 0  # the continuation after the tool output reused its prefix


def test_hint_is_inserted_exactly_at_the_marker(setup):
    hint = Hint("h", "Wait, maybe using Python here is a good idea.", position="marker")
    r = run(setup, marker_hint=hint)
    assert r.segments[0] == {"kind": "model", "text": "Let me think. ", "hint_id": None, "loss": True}
    assert r.segments[1]["kind"] == "hint" and r.segments[1]["text"] == hint.text and r.segments[1]["loss"] is False
    assert r.hint_ids == ["h"]


def test_hint_is_inserted_before_the_stop_and_the_trace_continues(setup):
    hint = Hint("s", "Wait, let me verify this once more.", position="stop")
    r = run(setup, stop_hint=hint)
    at = next(i for i, s in enumerate(r.segments) if s["kind"] == "hint")
    assert "\\boxed{42}" in "".join(s["text"] for s in r.segments[:at])  # the model had finished its answer
    assert at < len(r.segments) - 1  # and generation went on after the hint
