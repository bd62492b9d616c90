"""START's data selection: D_seed by the Hint-RFT rule, D_start by rejection-sampling fine-tuning.

Both are pure functions from `traces` rows to (selected rows, rejected rows). A selected row is
its trace plus why it was kept and its dedup cluster; a dropped one goes to `rejected` with the
filter's reason, so `tracemill sql` can say exactly why a problem contributed nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracemill import filters
from tracemill.hints import HintParams
from tracemill.params import at_least, bounded, choices
from tracemill.store import Quarantine

RULES = ("greedy_wrong_hint_right", "hint_right")


@dataclass(frozen=True)
class GenParams:
    """Which problems a generating stage reads and how much it may write per trace."""

    split: str = choices("train", "eval", "test", default="train")
    sources: list[str] = field(default_factory=list)  # problem sources to use; empty: all
    domains: list[str] = choices("math", "code", default_factory=lambda: ["math"])
    max_problems: int = at_least(0, default=64)
    offset: int = at_least(0, default=0)  # skip this many problems of the id-ordered list first (disjoint slices for different stages)
    max_tokens_per_turn: int = at_least(1, default=256)
    max_tokens_total: int = at_least(1, default=768)
    temperature: float = at_least(0, default=0.0)
    top_p: float = bounded(0, 1, lo_open=True, default=1.0)
    k: int = at_least(1, default=1)  # samples per problem (RFT: START's k=16)


@dataclass(frozen=True)
class SelectParams:
    rule: str = choices(*RULES, default="greedy_wrong_hint_right")  # START's Hint-RFT rule
    max_per_problem: int = at_least(1, default=1)  # START keeps at most one trace per problem
    merge_seed: bool = True  # D_start also holds D_seed (START trains on both)


def pick_problems(problems: Sequence[dict[str, Any]], gp: GenParams) -> list[dict[str, Any]]:
    """The problems a generating stage works on, in a stable order (by id) so shards are stable."""
    chosen = [
        p for p in problems
        if p["split"] == gp.split and p["domain"] in gp.domains and (not gp.sources or p["source"] in gp.sources)
    ]
    chosen.sort(key=lambda p: p["problem_id"])
    return chosen[gp.offset : gp.offset + gp.max_problems]


def response_text(trace: dict[str, Any]) -> str:
    """Everything the model and the tools wrote, without the prompt."""
    return "".join(s["text"] for s in trace["segments"] if s["kind"] != "prompt")


def _drop(q: Quarantine, table: str, trace: dict[str, Any], reason: str, detail: str | None = None) -> None:
    q.reject(reason, {"trace_id": trace["trace_id"], "problem_id": trace["problem_id"], "text": response_text(trace)},
             table=table, detail=detail, source=trace["stage"])


def _filtered(
    candidates: Sequence[dict[str, Any]], table: str, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine
) -> list[tuple[dict[str, Any], str]]:
    """Row filters, then decontamination, then exact/near dedup; returns (trace, cluster) kept."""
    survivors = []
    for trace in candidates:
        text = response_text(trace)
        keep, reason = filters.first_failure(text, fp)
        if keep and eval_ngrams and filters.contaminated(text, eval_ngrams, fp.decontam_ngram):
            keep, reason = False, "contaminated"
        if keep:
            survivors.append(trace)
        else:
            _drop(q, table, trace, reason)
    result = filters.dedup([response_text(t) for t in survivors], [t["problem_id"] for t in survivors], fp)
    kept = []
    for trace, keep, reason, cluster in zip(survivors, result.keep, result.reasons, result.cluster):
        if keep:
            kept.append((trace, cluster))
        else:
            _drop(q, table, trace, reason)
    return kept


def _pick(kept: Iterable[tuple[dict[str, Any], str]], limit: int, table: str, reason_kept: str, q: Quarantine) -> list[dict[str, Any]]:
    """At most `limit` per problem: the shortest correct response first (ties by id, so it is deterministic)."""
    by_problem: dict[str, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for trace, cluster in kept:
        by_problem[trace["problem_id"]].append((trace, cluster))
    out = []
    for items in by_problem.values():
        items.sort(key=lambda tc: (len(response_text(tc[0])), tc[0]["trace_id"]))
        for trace, cluster in items[:limit]:
            out.append({**trace, "reason_kept": reason_kept, "dedup_cluster": cluster})
        for trace, _ in items[limit:]:
            _drop(q, table, trace, "over_per_problem_limit")
    return out


def select_seed(
    traces: Sequence[dict[str, Any]], sp: SelectParams, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine
) -> list[dict[str, Any]]:
    """D_seed: problems where greedy failed and a hint succeeded (or any hint succeeded, by rule)."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        by_problem[t["problem_id"]].append(t)
    candidates = []
    for items in by_problem.values():
        greedy = [t for t in items if t["hint_id"] is None]
        hinted = [t for t in items if t["hint_id"] is not None]
        greedy_right = any(t["correct"] for t in greedy)
        for t in hinted:
            if not t["correct"]:
                continue
            if sp.rule == "greedy_wrong_hint_right" and greedy_right:
                _drop(q, "d_seed", t, "greedy_already_right")
                continue
            candidates.append(t)
    kept = _filtered(candidates, "d_seed", fp, eval_ngrams, q)
    return _pick(kept, sp.max_per_problem, "d_seed", "hint_fixed_greedy" if sp.rule == "greedy_wrong_hint_right" else "hint_right", q)


def select_rft(
    samples: Sequence[dict[str, Any]], sp: SelectParams, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine
) -> list[dict[str, Any]]:
    """D_start's RFT part: correct samples that pass the filters, at most `max_per_problem` each."""
    correct = [t for t in samples if t["correct"]]
    kept = _filtered(correct, "d_start", fp, eval_ngrams, q)
    return _pick(kept, sp.max_per_problem, "d_start", "rft_correct", q)


# ---- hint-infer and RFT generation jobs ----------------------------------------------------------


def hint_jobs(problem: dict[str, Any], hints: Sequence[Any], prompt: str, greedy: Any, budget: int) -> list[Any]:
    """START's hint-infer for one problem: a greedy trace, then one trace per hint. A hint is
    inserted at a marker ("Wait", "Alternatively") and, where the model would stop, before the stop."""
    from tracemill.tir import TraceJob

    jobs = [TraceJob(key=f"{problem['problem_id']}:greedy", prompt=prompt, sampling=greedy, max_turn_tokens_total=budget)]
    for hint in hints:
        jobs.append(
            TraceJob(
                key=f"{problem['problem_id']}:{hint.id}",
                prompt=prompt,
                marker_hint=hint if hint.position in ("marker", "any") else None,
                stop_hint=hint if hint.position in ("stop", "any") else None,
                sampling=greedy,
                max_turn_tokens_total=budget,
            )
        )
    return jobs


def sample_jobs(problem: dict[str, Any], prompt: str, k: int, sampling: Any, budget: int) -> list[Any]:
    """k samples of one problem; each its own seed so the k samples differ but a re-run repeats them."""
    from dataclasses import replace

    from tracemill.tir import TraceJob

    return [
        TraceJob(key=f"{problem['problem_id']}:{i}", prompt=prompt, sampling=replace(sampling, seed=sampling.seed + i), max_turn_tokens_total=budget)
        for i in range(k)
    ]


def trace_row(
    problem: dict[str, Any], result: Any, verdict: Any, *, prompt: str, stage: str, round: int, model: str,
    sample_index: int, sampling: Any, hint: Any | None,
) -> dict[str, Any]:
    from tracemill import records

    segments = [records.segment("prompt", prompt)] + result.segments
    return {
        "trace_id": records.content_id("trace", stage, round, model, problem["problem_id"], sample_index, hint.id if hint else None, sampling.as_row()),
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
        "metadata": records.to_json({"verdict_reason": verdict.reason, "hints_inserted": result.hint_ids}),
    }


# ---- stage work: one shard of problems -> traces rows ---------------------------------------------


def _default_rft() -> GenParams:
    return GenParams(k=16, temperature=0.6, top_p=0.95)  # START's RFT sampling


@dataclass(frozen=True)
class StartParams:
    hint_infer: GenParams = field(default_factory=GenParams)
    rft: GenParams = field(default_factory=_default_rft)
    hints: HintParams = field(default_factory=HintParams)
    filters: filters.FilterParams = field(default_factory=filters.FilterParams)
    select: SelectParams = field(default_factory=SelectParams)
    decontaminate_splits: list[str] = choices("eval", "test", default_factory=lambda: ["test", "eval"])  # eval sets never leak in


def _limits(sp: StartParams) -> Any:
    from tracemill.tir import LoopLimits

    hp = sp.hints
    return LoopLimits(max_tool_calls=hp.max_tool_calls, max_marker_hints=hp.max_marker_hints, max_stop_hints=hp.max_stop_hints)


def _grade_rows(rt: Any, problems_by_key: list[dict[str, Any]], results: list[Any]) -> list[Any]:
    return rt.grader.grade_many([(p, r.response) for p, r in zip(problems_by_key, results)])


def hint_infer_shard(shard: int, problems: list[dict[str, Any]], *, rt: Any, sp: StartParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Greedy and hinted traces for one shard of problems, graded, as `traces` rows."""
    from tracemill.formats import render_prompt
    from tracemill.hints import select
    from tracemill.tir import Sampling, run_traces

    hp = sp.hints
    gp = sp.hint_infer
    greedy = Sampling(temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_tokens_per_turn, seed=seed)
    jobs, owners, hints = [], [], []
    for problem in problems:
        prompt = render_prompt(problem["question"], rt.tokenizer, rt.fmt, "tir")
        chosen = select(hp, problem["domain"], problem["problem_id"])
        for job, hint in zip(hint_jobs(problem, chosen, prompt, greedy, gp.max_tokens_total), [None, *chosen]):
            jobs.append(job)
            owners.append((problem, prompt))
            hints.append(hint)
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, _limits(sp))
    verdicts = _grade_rows(rt, [o[0] for o in owners], results)
    rows = [
        trace_row(problem, result, verdict, prompt=prompt, stage="hint_infer", round=0, model=rt.model_name,
                  sample_index=0, sampling=greedy, hint=hint)
        for (problem, prompt), result, verdict, hint in zip(owners, results, verdicts, hints)
    ]
    return {"traces": rows}


def rft_shard(shard: int, problems: list[dict[str, Any]], *, rt: Any, sp: StartParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """k tool-integrated samples per problem from START-0 (T=0.6, top-p 0.95), graded."""
    return sample_shard(shard, problems, rt=rt, gp=sp.rft, limits=_limits(sp), seed=seed, stage="rft", style="tir")


def sample_shard(
    shard: int, problems: list[dict[str, Any]], *, rt: Any, gp: GenParams, limits: Any, seed: int, stage: str, style: str
) -> dict[str, list[dict[str, Any]]]:
    """gp.k tool-integrated samples per problem with gp's sampling, graded, as `traces` rows of `stage`."""
    from tracemill.formats import render_prompt
    from tracemill.tir import Sampling, run_traces

    base = Sampling(temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_tokens_per_turn, seed=seed)
    jobs, owners = [], []
    for problem in problems:
        prompt = render_prompt(problem["question"], rt.tokenizer, rt.fmt, style)
        for i, job in enumerate(sample_jobs(problem, prompt, gp.k, base, gp.max_tokens_total)):
            jobs.append(job)
            owners.append((problem, prompt, i))
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, limits)
    verdicts = _grade_rows(rt, [o[0] for o in owners], results)
    rows = [
        trace_row(problem, result, verdict, prompt=prompt, stage=stage, round=0, model=rt.model_name,
                  sample_index=i, sampling=job.sampling, hint=None)
        for (problem, prompt, i), job, result, verdict in zip(owners, jobs, results, verdicts)
    ]
    return {"traces": rows}


def eval_ngrams(problems: Sequence[dict[str, Any]], sp: StartParams) -> set:
    return filters.ngrams((p["question"] for p in problems if p["split"] in sp.decontaminate_splits), sp.filters.decontam_ngram)


# ---- metrics, computed with SQL over what the stage wrote ------------------------------------------

HINT_SUCCESS_SQL = """
WITH g AS (SELECT problem_id, bool_or(correct) AS greedy_ok FROM traces WHERE stage = 'hint_infer' AND hint_id IS NULL GROUP BY 1)
SELECT t.hint_kind, count(*) AS traces, avg(t.correct::INT) AS success_rate,
       sum((t.correct AND NOT g.greedy_ok)::INT) AS fixed_greedy
FROM traces t JOIN g USING (problem_id)
WHERE t.stage = 'hint_infer' AND t.hint_id IS NOT NULL
GROUP BY 1 ORDER BY 1
"""

TRACE_COST_SQL = """
SELECT count(*) AS traces, avg(correct::INT) AS accuracy, avg(tool_calls) AS tool_calls_per_trace,
       sum(prompt_tokens) AS prompt_tokens, sum(cached_prompt_tokens) AS cached_prompt_tokens,
       sum(generated_tokens) AS generated_tokens
FROM traces WHERE stage = ?
"""


def trace_metrics(data_dir: str, stage: str) -> dict[str, Any]:
    from tracemill import sql

    con = sql.connect(data_dir)
    cur = con.execute(TRACE_COST_SQL, [stage])
    names = [d[0] for d in cur.description]
    out: dict[str, Any] = dict(zip(names, cur.fetchone()))
    if stage == "hint_infer":
        rows = con.execute(HINT_SUCCESS_SQL).fetchall()
        out["greedy_accuracy"] = con.execute(
            "SELECT avg(correct::INT) FROM traces WHERE stage = 'hint_infer' AND hint_id IS NULL").fetchone()[0]
        out["hint_success"] = {kind: {"traces": n, "success_rate": rate, "fixed_greedy": fixed} for kind, n, rate, fixed in rows}
    return out
