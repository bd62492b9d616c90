"""START's data selection: D_seed by the Hint-RFT rule, D_start by rejection-sampling fine-tuning.

Both are pure functions from `traces` rows to (selected rows, rejected rows). A selected row is
its trace plus why it was kept and its dedup cluster; a dropped one goes to `rejected` with the
filter's reason, so `tracemill sql` can say exactly why a problem contributed nothing. D_seed's
rows then go through START's modify step (`modify_premature`). Also here: the hint-infer and RFT
generation jobs, the grading of a trace (a code problem's final solution), and the stages' metrics.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tracemill import filters
from tracemill.formats import FormatParams, code_blocks
from tracemill.hints import HintDraw, HintParams
from tracemill.start_params import GenParams, SelectParams, StartParams  # the section's home; stages import them from here too
from tracemill.store import Quarantine

def pick_problems(problems: Sequence[dict[str, Any]], gp: GenParams) -> list[dict[str, Any]]:
    """The problems a generating stage works on, in a stable order (by id, domains in turn when
    `interleave_domains`) so shards are stable."""
    chosen = [
        p for p in problems
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


def _drop(q: Quarantine, table: str, trace: dict[str, Any], reason: str, detail: str | None = None) -> None:
    q.reject(reason, {"trace_id": trace["trace_id"], "problem_id": trace["problem_id"], "text": response_text(trace)},
             table=table, detail=detail, source=trace["stage"])


def _filtered(
    candidates: Sequence[dict[str, Any]], table: str, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine,
    domains: Mapping[str, str],
) -> list[tuple[dict[str, Any], str]]:
    """Row filters (each trace by its problem's domain, math when unknown), then decontamination, then
    exact/near dedup; returns (trace, cluster) kept."""
    survivors = []
    for trace in candidates:
        text = response_text(trace)
        keep, reason = filters.first_failure(text, fp, domain=domains.get(trace["problem_id"], "math"))
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
    traces: Sequence[dict[str, Any]], sp: SelectParams, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine,
    modify: str = "keep", fmt: FormatParams | None = None, domains: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """D_seed: problems where greedy failed and a hint succeeded (or any hint succeeded, by rule), each
    kept trace's premature answers treated by `modify` (see `modify_premature`)."""
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
    kept = _filtered(candidates, "d_seed", fp, eval_ngrams, q, domains or {})
    picked = _pick(kept, sp.max_per_problem, "d_seed", "hint_fixed_greedy" if sp.rule == "greedy_wrong_hint_right" else "hint_right", q)
    return [modify_premature(t, modify, fmt or FormatParams()) for t in picked]


def _boxed_spans(text: str, fmt: FormatParams) -> list[tuple[int, int]]:
    """(start, end) of every complete `\\boxed{...}` in text, braces balanced."""
    spans, at = [], 0
    while (start := text.find(fmt.boxed + "{", at)) >= 0:
        depth, i = 0, start + len(fmt.boxed)
        for i in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                spans.append((start, i + 1))
                break
        else:
            break
        at = i + 1
    return spans


_SENTENCE_TAIL = re.compile(r"[^.\n]*\.?[ \t]*")


def _rewrite_boxed(text: str, mode: str, fmt: FormatParams) -> tuple[str, int]:
    """text with each boxed answer unboxed (its content stays as a plain claim) or its sentence dropped."""
    spans = _boxed_spans(text, fmt)
    for start, end in reversed(spans):
        if mode == "unbox":
            text = text[:start] + text[start + len(fmt.boxed) + 1 : end - 1] + text[end:]
        else:
            # from the end of the previous sentence (its period stays) or line
            begin = max(text.rfind(". ", 0, start) + 1, text.rfind("\n", 0, start) + 1)
            text = text[:begin] + text[_SENTENCE_TAIL.match(text, end).end() :]
    return text, len(spans)


def modify_premature(trace: dict[str, Any], mode: str, fmt: FormatParams) -> dict[str, Any]:
    """START's modify step: the boxed answers the model wrote before its last hint are premature (it
    concluded, then the hint made it check). `keep` trains on them as written; `unbox` keeps the claim
    without the answer box, so the model learns to check before it commits to a final answer; `drop`
    removes the concluding sentence. The final answer after the hint is untouched. Recorded in metadata."""
    segments = list(trace["segments"])
    last_hint = max((i for i, s in enumerate(segments) if s["kind"] == "hint"), default=-1)
    changed = 0
    if mode != "keep":
        out = []
        for i, seg in enumerate(segments):
            if i < last_hint and seg["kind"] == "model":
                text, n = _rewrite_boxed(seg["text"], mode, fmt)
                changed += n
                if not text:
                    continue
                seg = {**seg, "text": text}
            out.append(seg)
        segments = out
    meta = json.loads(trace["metadata"]) if trace.get("metadata") else {}
    meta.update(modify=mode, premature_answers_modified=changed)
    return {**trace, "segments": segments, "metadata": json.dumps(meta, sort_keys=True, ensure_ascii=False)}


def select_rft(
    samples: Sequence[dict[str, Any]], sp: SelectParams, fp: filters.FilterParams, eval_ngrams: set, q: Quarantine,
    domains: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """D_start's RFT part: correct samples that pass the filters, at most `max_per_problem` each."""
    correct = [t for t in samples if t["correct"]]
    kept = _filtered(correct, "d_start", fp, eval_ngrams, q, domains or {})
    return _pick(kept, sp.max_per_problem, "d_start", "rft_correct", q)


# ---- hint-infer and RFT generation jobs ----------------------------------------------------------


def hint_jobs(problem: dict[str, Any], draws: Sequence[HintDraw], hp: HintParams, prompt: str, greedy: Any, budget: int) -> list[Any]:
    """START's hint-infer for one problem: a greedy trace, then one trace per drawn hint. The hint goes
    after the drawn occurrence of a marker ("Wait", "Alternatively") and, where the model would stop,
    before the stop (`hp.stop`: its end of turn, or a long-CoT model's end of thinking)."""
    from tracemill.hints import example_tests
    from tracemill.tir import TraceJob

    common = dict(prompt=prompt, sampling=greedy, max_turn_tokens_total=budget, stop_strings=tuple(hp.stop_strings()),
                  examples=tuple(example_tests(problem)))
    jobs = [TraceJob(key=f"{problem['problem_id']}:greedy", **common)]
    for i, d in enumerate(draws):
        jobs.append(
            TraceJob(
                key=f"{problem['problem_id']}:{i}:{d.hint.id}",
                marker_hint=d.hint if d.hint.position in ("marker", "any") else None,
                stop_hint=d.hint if d.hint.position in ("stop", "any") else None,
                marker_index=d.marker_index,
                **common,
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
    sample_index: int, sampling: Any, hint: Any | None, meta: dict[str, Any] | None = None,
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
        "hint_at": result.hint_at,
        "metadata": records.to_json({"verdict_reason": verdict.reason, "hints_inserted": result.hint_ids, **(meta or {})}),
    }


# ---- stage work: one shard of problems -> traces rows ---------------------------------------------


def _limits(sp: StartParams) -> Any:
    from tracemill.tir import LoopLimits

    hp = sp.hints
    return LoopLimits(max_tool_calls=hp.max_tool_calls, max_marker_hints=hp.max_marker_hints, max_stop_hints=hp.max_stop_hints)


def graded_text(problem: dict[str, Any], result: Any, fmt: FormatParams) -> str:
    """What the grader reads: a math trace whole (its last boxed answer); for a code problem the last
    code block the model wrote itself, its final solution — never a hint's test harness, which
    travels in the hint segment, nor an earlier draft."""
    if problem["domain"] != "code":
        return result.response
    own = [b for s in result.segments if s["kind"] == "code" for b in code_blocks(s["text"], fmt)]
    return f"{fmt.code_start}\n{own[-1]}\n{fmt.code_end}\n" if own else result.response


def grade_results(rt: Any, problems_by_key: Sequence[dict[str, Any]], results: Sequence[Any]) -> list[Any]:
    return rt.grader.grade_many([(p, graded_text(p, r, rt.fmt)) for p, r in zip(problems_by_key, results)])


def hint_infer_shard(shard: int, problems: list[dict[str, Any]], *, rt: Any, sp: StartParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Greedy and hinted traces for one shard of problems, graded, as `traces` rows."""
    from tracemill.formats import render_prompt
    from tracemill.hints import draw
    from tracemill.tir import Sampling, run_traces

    hp = sp.hints
    gp = sp.hint_infer
    greedy = Sampling(temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_tokens_per_turn, seed=seed)
    jobs, owners, hints = [], [], []
    for problem in problems:
        prompt = render_prompt(problem["question"], rt.tokenizer, rt.fmt, "tir")
        draws = draw(hp, problem["domain"], problem["problem_id"], seed)
        for i, (job, hint) in enumerate(zip(hint_jobs(problem, draws, hp, prompt, greedy, gp.max_tokens_total), [None, *(d.hint for d in draws)])):
            jobs.append(job)
            owners.append((problem, prompt, i))  # i: 0 the greedy trace, then each hint trace (a hint may be drawn twice)
            hints.append(hint)
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, _limits(sp))
    verdicts = grade_results(rt, [o[0] for o in owners], results)
    rows = [
        trace_row(problem, result, verdict, prompt=prompt, stage="hint_infer", round=0, model=rt.model_name,
                  sample_index=i, sampling=greedy, hint=hint)
        for (problem, prompt, i), result, verdict, hint in zip(owners, results, verdicts, hints)
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
    verdicts = grade_results(rt, [o[0] for o in owners], results)
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

# where hint-infer's hints landed: after a "Wait"/"Alternatively" (marker) or at the stop
HINT_POSITION_SQL = """
SELECT position, count(*) AS hints
FROM (SELECT unnest(hint_at) AS position FROM traces WHERE stage = 'hint_infer')
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
        out["hint_at"] = dict(con.execute(HINT_POSITION_SQL).fetchall())
    return out


def seed_yield(traces: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]], domain_of: dict[str, str]) -> dict[str, Any]:
    """D_seed rows per problem that got hint traces, overall and per domain, and where the kept rows' hints landed."""
    hinted = {t["problem_id"] for t in traces if t["hint_id"] is not None}
    per_domain: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [hinted problems, kept rows]
    for pid in hinted:
        per_domain[domain_of[pid]][0] += 1
    positions: dict[str, int] = defaultdict(int)
    for r in kept:
        per_domain[domain_of[r["problem_id"]]][1] += 1
        for p in r.get("hint_at") or []:
            positions[p] += 1
    return {
        "hinted_problems": len(hinted),
        "rows_per_hinted_problem": round(len(kept) / len(hinted), 4) if hinted else 0.0,
        "rows_per_hinted_problem_by_domain": {d: round(k / h, 4) if h else 0.0 for d, (h, k) in sorted(per_domain.items())},
        "kept_hint_at": dict(sorted(positions.items())),
    }
