"""The tool-integrated reasoning loop of START: the policy writes; when it closes a python block
the sandbox runs it and the output block is appended; after a hint marker ("Wait", "Alternatively")
or where the model would stop, a hint may be inserted; generation continues.

A trace's hint goes after the job's `marker_index`-th marker (the loop stops at every marker and
writes it back until then) or at the stop: the end of turn, or a long-CoT model's end of thinking
when the job lists it in `stop_strings`. Each insertion is recorded with the counters at that
moment (`HintMark`), so `before_hint` can cut a trace back to what the model had written before
its n-th hint: the answers of sequential test-time scaling, one per round, from one trace.

All live traces advance together: each turn is one batched generation call over every trace that
is still running, and each continuation reuses the backend's cache of its prefix (a handle), so
no trace pays for its prefix twice. One sandbox session per trace keeps state across its cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from tracemill import records
from tracemill.formats import FormatParams, code_blocks, output_segments, pending_code, strip_tool_stop
from tracemill.hints import Hint, fill_template
from tracemill.llm import Backend, Completion, Request
from tracemill.sandbox.base import Sandbox, Session


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512  # per turn
    seed: int = 0

    def as_row(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass
class TraceJob:
    """One trace to produce: a prompt, the hints it may receive, and its sampling."""

    key: str  # caller's id (problem id + variant)
    prompt: str
    marker_hint: Hint | None = None
    stop_hint: Hint | None = None
    marker_index: int = 1  # the marker_hint goes after this occurrence of a marker (1: the first)
    stop_strings: tuple[
        str, ...
    ] = ()  # where the model stops besides its end of turn (a long-CoT model's end of thinking)
    examples: tuple[str, ...] = ()  # a code problem's example tests, for a hint's code template
    sampling: Sampling = field(default_factory=Sampling)
    max_turn_tokens_total: int = 2048  # all turns together, before any stop hint
    tokens_per_stop_hint: int = 0  # budget added by each stop hint: the thinking time a round of test-time scaling buys
    max_turns: int = 16  # generation calls per trace: tool calls, hints and continuations together
    setup_cells: tuple[str, ...] = ()  # run in the session before generation (a restart state's cells)


@dataclass(frozen=True)
class HintMark:
    """One inserted hint: where, and the trace's counters just before it."""

    position: str  # records.HINT_POSITIONS
    segment_index: int  # the hint's segment; segments before it are what the model had written
    tool_calls: int
    prompt_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int


@dataclass
class TraceResult:
    key: str
    response: str
    segments: list[dict[str, Any]]
    tool_calls: int
    hint_ids: list[str]
    prompt_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int
    finish_reason: str
    marks: list[HintMark] = field(default_factory=list)

    @property
    def hint_at(self) -> list[str]:
        return [m.position for m in self.marks]


def before_hint(result: TraceResult, n: int) -> TraceResult:
    """`result` as it stood just before its n-th hint (0-based): the answer the model had given
    when the hint came. With n past the last hint, the whole trace."""
    if n >= len(result.marks):
        return result
    m = result.marks[n]
    segments = result.segments[: m.segment_index]
    return TraceResult(
        key=result.key,
        response="".join(s["text"] for s in segments),
        segments=segments,
        tool_calls=m.tool_calls,
        hint_ids=result.hint_ids[:n],
        prompt_tokens=m.prompt_tokens,
        cached_prompt_tokens=m.cached_prompt_tokens,
        generated_tokens=m.generated_tokens,
        finish_reason="stop" if m.position == "stop" else "hint",
        marks=result.marks[:n],
    )


@dataclass
class _Live:
    job: TraceJob
    segments: list[dict[str, Any]]
    session: Session
    handle: Completion | None = None
    pending_append: str = ""
    tool_calls: int = 0
    marker_hints: int = 0
    markers_seen: int = 0
    stop_hints: int = 0
    hint_ids: list[str] = field(default_factory=list)
    marks: list[HintMark] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str = ""
    turns: int = 0
    done: bool = False

    @property
    def response(self) -> str:
        return "".join(s["text"] for s in self.segments)


@dataclass(frozen=True)
class LoopLimits:
    max_tool_calls: int = 6  # START: at most 6 executions per trace
    max_marker_hints: int = 1
    max_stop_hints: int = 1
    max_output_chars: int = 1_000  # tool output shown to the model


def _add_model_text(live: _Live, text: str) -> None:
    if text:
        live.segments.append(records.segment("model", text))


def _split_code(text: str, fmt: FormatParams) -> tuple[str, str | None]:
    """Split generated text ending in a closed code block into (text before, the code block)."""
    start = text.rfind(fmt.code_start)
    if start < 0:
        return text, None
    return text[:start], text[start:]


def run_traces(
    backend: Backend, sandbox: Sandbox, jobs: Sequence[TraceJob], fmt: FormatParams, limits: LoopLimits
) -> list[TraceResult]:
    """Advance every job to completion in batched turns; returns one result per job, in order."""
    lives = [_Live(job=j, segments=[], session=sandbox.session().__enter__()) for j in jobs]
    try:
        for lv in lives:
            for cell in lv.job.setup_cells:  # the prompt already shows what these printed
                lv.session.run(cell)
        while True:
            running = [lv for lv in lives if not lv.done]
            if not running:
                break
            requests = [_request(lv, fmt, limits) for lv in running]
            outputs = backend.generate(requests)
            for lv, outs in zip(running, outputs):
                _advance(lv, outs[0], fmt, limits)
            backend.release([lv.handle for lv in running if lv.done and lv.handle is not None])
    finally:
        for lv in lives:
            lv.session.__exit__(None, None, None)
    return [_result(lv) for lv in lives]


def _stops(lv: _Live, fmt: FormatParams, limits: LoopLimits) -> list[str]:
    stops = list(fmt.tool_stop) if lv.tool_calls < limits.max_tool_calls else []
    if lv.job.marker_hint is not None and lv.marker_hints < limits.max_marker_hints:
        stops += list(fmt.hint_markers)
    if _stop_hint_due(lv, limits):
        stops += list(lv.job.stop_strings)
    return stops


def _stop_hint_due(lv: _Live, limits: LoopLimits) -> bool:
    return lv.job.stop_hint is not None and lv.stop_hints < limits.max_stop_hints


def _request(lv: _Live, fmt: FormatParams, limits: LoopLimits) -> Request:
    s = lv.job.sampling
    common: dict[str, Any] = dict(
        stop=_stops(lv, fmt, limits),
        n=1,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.seed,
    )
    if lv.handle is None:
        return Request(prompt=lv.job.prompt, **common)
    return Request(continues=lv.handle, append=lv.pending_append, **common)


def _advance(lv: _Live, out: Completion, fmt: FormatParams, limits: LoopLimits) -> None:
    lv.handle = out
    lv.pending_append = ""
    lv.prompt_tokens += out.prompt_tokens
    lv.cached_prompt_tokens += out.cached_prompt_tokens
    lv.generated_tokens += out.generated_tokens
    text = out.text
    stop = out.stop_reason or ""  # "" matches no tool stop, marker or stop string
    if out.finish_reason == "stop" and stop in fmt.tool_stop:
        text = strip_tool_stop(text, fmt)
        code = pending_code(text, fmt)
        before, block = _split_code(text, fmt)
        _add_model_text(lv, before)
        if code is not None and block is not None:
            lv.segments.append(records.segment("code", block))
            lv.pending_append = _run(lv, code, fmt, limits)
        else:
            # an output block with no code before it: the text is the model's own, it goes on writing
            _add_model_text(lv, stop)
            lv.pending_append = stop
        return _maybe_finish_by_budget(lv)
    if out.finish_reason == "stop" and stop in fmt.hint_markers and lv.job.marker_hint is not None:
        text = text[: -len(stop)] if text.endswith(stop) else text
        lv.markers_seen += 1
        if lv.markers_seen < lv.job.marker_index:  # not the drawn marker: the model's word stands, it goes on
            _add_model_text(lv, text + stop)
            lv.pending_append = stop
            return _maybe_finish_by_budget(lv)
        _add_model_text(lv, text)
        _insert_hint(lv, lv.job.marker_hint, "marker", fmt, limits)
        lv.marker_hints += 1
        return _maybe_finish_by_budget(lv)
    at_stop_string = out.finish_reason == "stop" and stop in lv.job.stop_strings
    _add_model_text(lv, text)
    natural_end = out.finish_reason in ("stop", "eos")
    if natural_end and _stop_hint_due(lv, limits):
        # before the end of turn (or of thinking): the model continues instead of ending
        _insert_hint(lv, cast(Hint, lv.job.stop_hint), "stop", fmt, limits)  # _stop_hint_due: it is set
        lv.stop_hints += 1
        return _maybe_finish_by_budget(lv)
    if at_stop_string:  # no hint left: the model's end of thinking stands, and it goes on to answer
        _add_model_text(lv, stop)
        lv.pending_append = stop
        return _maybe_finish_by_budget(lv)
    lv.done = True
    lv.finish_reason = "stop" if natural_end else out.finish_reason


def _run(lv: _Live, code: str, fmt: FormatParams, limits: LoopLimits) -> str:
    """Run `code` in the trace's session and append its output block; returns the text to append to the context."""
    result = lv.session.run(code)
    shown = (result.stdout if result.ok else (result.stdout + result.stderr))[-limits.max_output_chars :]
    segments = output_segments(shown or ("" if result.ok else result.status), fmt)
    lv.segments.extend(segments)
    lv.tool_calls += 1
    return "".join(s["text"] for s in segments)


def _insert_hint(lv: _Live, hint: Hint, position: str, fmt: FormatParams, limits: LoopLimits) -> None:
    """Insert `hint`; a code hint's template (the model's last code and the problem's example tests)
    comes with it and runs at once, so the model reads the tests' result next."""
    lv.marks.append(
        HintMark(
            position, len(lv.segments), lv.tool_calls, lv.prompt_tokens, lv.cached_prompt_tokens, lv.generated_tokens
        )
    )
    text = hint.text if lv.response.endswith(("\n", " ")) or not lv.response else " " + hint.text
    candidate = [b for s in lv.segments if s["kind"] == "code" for b in code_blocks(s["text"], fmt)]
    runs = (
        hint.template is not None
        and bool(candidate)
        and bool(lv.job.examples)
        and lv.tool_calls < limits.max_tool_calls
    )
    if runs:
        text += fill_template(hint, candidate[-1], lv.job.examples)
    lv.segments.append(records.segment("hint", text, hint_id=hint.id))
    lv.pending_append = text
    if runs:
        lv.pending_append += _run(lv, pending_code(text, fmt) or "", fmt, limits)
    lv.hint_ids.append(hint.id)


def _maybe_finish_by_budget(lv: _Live) -> None:
    lv.turns += 1
    budget = lv.job.max_turn_tokens_total + lv.stop_hints * lv.job.tokens_per_stop_hint
    if lv.generated_tokens >= budget or lv.turns >= lv.job.max_turns:
        lv.done = True
        lv.finish_reason = "length"


def _result(lv: _Live) -> TraceResult:
    return TraceResult(
        key=lv.job.key,
        response=lv.response,
        segments=lv.segments,
        tool_calls=lv.tool_calls,
        hint_ids=lv.hint_ids,
        prompt_tokens=lv.prompt_tokens,
        cached_prompt_tokens=lv.cached_prompt_tokens,
        generated_tokens=lv.generated_tokens,
        finish_reason=lv.finish_reason,
        marks=lv.marks,
    )
