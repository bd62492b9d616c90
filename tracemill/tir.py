"""The tool-integrated reasoning loop of START: the policy writes; when it closes a python block
the sandbox runs it and the output block is appended; at a hint marker ("Wait", "Alternatively")
or where the model would stop, a hint may be inserted; generation continues.

All live traces advance together: each turn is one batched generation call over every trace that
is still running, and each continuation reuses the backend's cache of its prefix (a handle), so
no trace pays for its prefix twice. One sandbox session per trace keeps state across its cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tracemill import records
from tracemill.formats import FormatParams, output_block, pending_code, strip_tool_stop
from tracemill.hints import Hint


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
    sampling: Sampling = field(default_factory=Sampling)
    max_turn_tokens_total: int = 2048  # all turns together
    max_turns: int = 16  # generation calls per trace: tool calls, hints and continuations together


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


@dataclass
class _Live:
    job: TraceJob
    segments: list[dict[str, Any]]
    session: Any
    handle: Any = None
    pending_append: str = ""
    tool_calls: int = 0
    marker_hints: int = 0
    stop_hints: int = 0
    hint_ids: list[str] = field(default_factory=list)
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


def run_traces(backend: Any, sandbox: Any, jobs: Sequence[TraceJob], fmt: FormatParams, limits: LoopLimits) -> list[TraceResult]:
    """Advance every job to completion in batched turns; returns one result per job, in order."""
    from tracemill.llm import Request

    lives = [_Live(job=j, segments=[], session=sandbox.session().__enter__()) for j in jobs]
    try:
        while True:
            running = [lv for lv in lives if not lv.done]
            if not running:
                break
            requests = [_request(lv, fmt, limits, Request) for lv in running]
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
    return stops


def _request(lv: _Live, fmt: FormatParams, limits: LoopLimits, Request: Any) -> Any:
    s = lv.job.sampling
    common = dict(stop=_stops(lv, fmt, limits), n=1, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed)
    if lv.handle is None:
        return Request(prompt=lv.job.prompt, **common)
    return Request(continues=lv.handle, append=lv.pending_append, **common)


def _advance(lv: _Live, out: Any, fmt: FormatParams, limits: LoopLimits) -> None:
    lv.handle = out
    lv.pending_append = ""
    lv.prompt_tokens += out.prompt_tokens
    lv.cached_prompt_tokens += out.cached_prompt_tokens
    lv.generated_tokens += out.generated_tokens
    text = out.text
    stop = getattr(out, "stop_reason", None)
    if out.finish_reason == "stop" and stop in fmt.tool_stop:
        text = strip_tool_stop(text, fmt)
        code = pending_code(text, fmt)
        before, block = _split_code(text, fmt)
        _add_model_text(lv, before)
        if code is not None and block is not None:
            lv.segments.append(records.segment("code", block))
            result = lv.session.run(code)
            shown = (result.stdout if result.ok else (result.stdout + result.stderr))[-limits.max_output_chars :]
            appended = output_block(shown or ("" if result.ok else result.status), fmt)
            lv.segments.append(records.segment("output", appended))
            lv.pending_append = appended
            lv.tool_calls += 1
        else:
            # an output block with no code before it: the text is the model's own, it goes on writing
            _add_model_text(lv, stop)
            lv.pending_append = stop
        return _maybe_finish_by_budget(lv)
    if out.finish_reason == "stop" and stop in fmt.hint_markers and lv.job.marker_hint is not None:
        text = text[: -len(stop)] if text.endswith(stop) else text
        _add_model_text(lv, text)
        _insert_hint(lv, lv.job.marker_hint)
        lv.marker_hints += 1
        return _maybe_finish_by_budget(lv)
    _add_model_text(lv, text)
    natural_end = out.finish_reason in ("stop", "eos")
    if natural_end and lv.job.stop_hint is not None and lv.stop_hints < limits.max_stop_hints:
        _insert_hint(lv, lv.job.stop_hint)  # before the stop token: the model continues instead of ending
        lv.stop_hints += 1
        return _maybe_finish_by_budget(lv)
    lv.done = True
    lv.finish_reason = "stop" if natural_end else out.finish_reason


def _insert_hint(lv: _Live, hint: Hint) -> None:
    text = hint.text if lv.response.endswith(("\n", " ")) or not lv.response else " " + hint.text
    lv.segments.append(records.segment("hint", text, hint_id=hint.id))
    lv.pending_append = text
    lv.hint_ids.append(hint.id)


def _maybe_finish_by_budget(lv: _Live) -> None:
    lv.turns += 1
    if lv.generated_tokens >= lv.job.max_turn_tokens_total or lv.turns >= lv.job.max_turns:
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
    )
