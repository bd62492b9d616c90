"""What every generating stage shares: which problems it reads (`GenParams`, `pick_problems`), k seeded
samples per problem through the tool-integrated loop, graded (`sample_shard`), the `traces` row of one
trace (`trace_row`), and what a stage's traces cost (`trace_metrics`).

START's hint-infer and RFT, Satori's samples, evaluation and rStar-Math's problem choice all use these;
each method's own logic stays in its module (start.py, satori.py, rstar/, evaluate.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tracemill import records
from tracemill.formats import FormatParams, code_blocks, render_prompt
from tracemill.hints import Hint
from tracemill.params import at_least, bounded, choices
from tracemill.runtime import Runtime
from tracemill.tir import LoopLimits, Sampling, TraceJob, TraceResult, run_traces

if TYPE_CHECKING:  # grading loads mpmath: only a run that grades pays for it
    from tracemill.grading import Verdict


@dataclass(frozen=True)
class GenParams:
    """Which problems a generating stage reads and how much it may write per trace."""

    split: str = choices("train", "eval", "test", default="train")
    sources: list[str] = field(default_factory=list)  # problem sources to use; empty: all
    domains: list[str] = choices("math", "code", default_factory=lambda: ["math"])
    max_problems: int = at_least(0, default=64)
    offset: int = at_least(
        0, default=0
    )  # skip this many problems of the id-ordered list first (disjoint slices for different stages)
    interleave_domains: bool = (
        False  # take the domains in turn (each in id order), so a small domain is not crowded out by a large one
    )
    max_tokens_per_turn: int = at_least(1, default=256)
    max_tokens_total: int = at_least(1, default=768)
    temperature: float = at_least(0, default=0.0)
    top_p: float = bounded(0, 1, lo_open=True, default=1.0)
    k: int = at_least(1, default=1)  # samples per problem (RFT: START's k=16)


def pick_problems(problems: Sequence[dict[str, Any]], gp: GenParams) -> list[dict[str, Any]]:
    """The problems a generating stage works on, in a stable order (by id, domains in turn when
    `interleave_domains`) so shards are stable."""
    chosen = [
        p
        for p in problems
        if p["split"] == gp.split and p["domain"] in gp.domains and (not gp.sources or p["source"] in gp.sources)
    ]
    chosen.sort(key=lambda p: p["problem_id"])
    if gp.interleave_domains:
        by_domain = [[p for p in chosen if p["domain"] == d] for d in gp.domains]
        chosen = [p for group in itertools.zip_longest(*by_domain) for p in group if p is not None]
    return chosen[gp.offset : gp.offset + gp.max_problems]


def response_text(trace: dict[str, Any]) -> str:
    """Everything the model and the tools wrote, without the prompt."""
    return "".join(s["text"] for s in trace["segments"] if s["kind"] != "prompt")


def sample_jobs(problem: dict[str, Any], prompt: str, k: int, sampling: Sampling, budget: int) -> list[TraceJob]:
    """k samples of one problem; each its own seed so the k samples differ but a re-run repeats them."""
    return [
        TraceJob(
            key=f"{problem['problem_id']}:{i}",
            prompt=prompt,
            sampling=replace(sampling, seed=sampling.seed + i),
            max_turn_tokens_total=budget,
        )
        for i in range(k)
    ]


def trace_row(
    problem: dict[str, Any],
    result: TraceResult,
    verdict: Verdict,
    *,
    prompt: str,
    stage: str,
    round: int,
    model: str,
    sample_index: int,
    sampling: Sampling,
    hint: Hint | None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    segments = [records.segment("prompt", prompt)] + result.segments
    return {
        "trace_id": records.content_id(
            "trace",
            stage,
            round,
            model,
            problem["problem_id"],
            sample_index,
            hint.id if hint else None,
            sampling.as_row(),
        ),
        "problem_id": problem["problem_id"],
        "stage": stage,
        "round": round,
        "model": model,
        "sample_index": sample_index,
        "hint_id": hint.id if hint else None,
        "hint_kind": hint.kind if hint else None,
        "correct": verdict.correct,
        "final_answer": verdict.predicted,
        "grader": f"{verdict.grader}@{verdict.grader_version}",
        "tool_calls": result.tool_calls,
        "prompt_tokens": result.prompt_tokens,
        "cached_prompt_tokens": result.cached_prompt_tokens,
        "generated_tokens": result.generated_tokens,
        "finish_reason": result.finish_reason,
        "sampling": sampling.as_row(),
        "segments": segments,
        "hint_at": result.hint_at,
        "metadata": records.to_json(
            {"verdict_reason": verdict.reason, "hints_inserted": result.hint_ids, **(meta or {})}
        ),
    }


def graded_text(problem: dict[str, Any], result: TraceResult, fmt: FormatParams) -> str:
    """What the grader reads: a math trace whole (its last boxed answer); for a code problem the last
    code block the model wrote itself, its final solution — never a hint's test harness, which
    travels in the hint segment, nor an earlier draft."""
    if problem["domain"] != "code":
        return result.response
    own = [b for s in result.segments if s["kind"] == "code" for b in code_blocks(s["text"], fmt)]
    return f"{fmt.code_start}\n{own[-1]}\n{fmt.code_end}\n" if own else result.response


def grade_results(
    rt: Runtime, problems_by_key: Sequence[dict[str, Any]], results: Sequence[TraceResult]
) -> list[Verdict]:
    return rt.grader.grade_many([(p, graded_text(p, r, rt.fmt)) for p, r in zip(problems_by_key, results)])


def sample_shard(
    shard: int,
    problems: list[dict[str, Any]],
    *,
    rt: Runtime,
    gp: GenParams,
    limits: LoopLimits,
    seed: int,
    stage: str,
    style: str,
) -> dict[str, list[dict[str, Any]]]:
    """gp.k tool-integrated samples per problem with gp's sampling, graded, as `traces` rows of `stage`."""
    base = Sampling(temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_tokens_per_turn, seed=seed)
    jobs, owners = [], []
    for problem in problems:
        prompt = render_prompt(problem["question"], rt.tokenizer, rt.fmt, style)
        for i, job in enumerate(sample_jobs(problem, prompt, gp.k, base, gp.max_tokens_total)):
            jobs.append(job)
            owners.append((problem, prompt, i))
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, limits)
    verdicts = grade_results(rt, [o[0] for o in owners], results)
    rows = [
        trace_row(
            problem,
            result,
            verdict,
            prompt=prompt,
            stage=stage,
            round=0,
            model=rt.model_name,
            sample_index=i,
            sampling=job.sampling,
            hint=None,
        )
        for (problem, prompt, i), job, result, verdict in zip(owners, jobs, results, verdicts)
    ]
    return {"traces": rows}


# ---- metrics, computed with SQL over what the stage wrote ------------------------------------------

TRACE_COST_SQL = """
SELECT count(*) AS traces, avg(correct::INT) AS accuracy, avg(tool_calls) AS tool_calls_per_trace,
       sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
       sum(generated_tokens) AS generated_tokens
FROM traces WHERE stage = ?
"""


def trace_metrics(data_dir: str, stage: str) -> dict[str, Any]:
    """A stage's traces: how many, how often right, tool calls and tokens."""
    from tracemill import sql  # duckdb loads only where a stage reads its metrics, not wherever GenParams is parsed

    cur = sql.connect(data_dir).execute(TRACE_COST_SQL, [stage])
    names = [d[0] for d in cur.description]
    return dict(zip(names, sql.one_row(cur)))
