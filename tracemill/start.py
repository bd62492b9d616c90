"""START's data selection: D_seed by the Hint-RFT rule, D_start by rejection-sampling fine-tuning.

Both are pure functions from `traces` rows to (selected rows, rejected rows). A selected row is
its trace plus why it was kept and its dedup cluster; a dropped one goes to `rejected` with the
filter's reason, so `tracemill sql` can say exactly why a problem contributed nothing. D_seed's
rows then go through START's modify step (`modify_premature`). Also here: the hint-infer and RFT
generation jobs (the sampling they share with the other methods is in generate.py), writing a
selection, and the stages' metrics.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from tracemill import filters, sql, store
from tracemill.formats import FormatParams, render_prompt
from tracemill.generate import grade_results, response_text, sample_shard, trace_metrics, trace_row
from tracemill.hints import HintDraw, HintParams, draw, example_tests
from tracemill.runtime import Runtime
from tracemill.start_params import SelectParams, StartParams
from tracemill.store import Quarantine
from tracemill.tir import LoopLimits, Sampling, TraceJob, run_traces


def _drop(q: Quarantine, table: str, trace: dict[str, Any], reason: str, detail: str | None = None) -> None:
    q.reject(
        reason,
        {"trace_id": trace["trace_id"], "problem_id": trace["problem_id"], "text": response_text(trace)},
        table=table,
        detail=detail,
        source=trace["stage"],
    )


def _filtered(
    candidates: Sequence[dict[str, Any]],
    table: str,
    fp: filters.FilterParams,
    eval_ngrams: set,
    q: Quarantine,
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


def _pick(
    kept: Iterable[tuple[dict[str, Any], str]], limit: int, table: str, reason_kept: str, q: Quarantine
) -> list[dict[str, Any]]:
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
    traces: Sequence[dict[str, Any]],
    sp: SelectParams,
    fp: filters.FilterParams,
    eval_ngrams: set,
    q: Quarantine,
    modify: str = "keep",
    fmt: FormatParams | None = None,
    domains: Mapping[str, str] | None = None,
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
    picked = _pick(
        kept,
        sp.max_per_problem,
        "d_seed",
        "hint_fixed_greedy" if sp.rule == "greedy_wrong_hint_right" else "hint_right",
        q,
    )
    return [modify_premature(t, modify, fmt or FormatParams()) for t in picked]


def _boxed_spans(text: str, fmt: FormatParams) -> list[tuple[int, int]]:
    """(start, end) of every complete `\\boxed{...}` in text, braces balanced."""
    spans, at = [], 0
    while (start := text.find(fmt.boxed + "{", at)) >= 0:
        depth = 0
        for i in range(start + len(fmt.boxed), len(text)):
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
            tail = cast(re.Match[str], _SENTENCE_TAIL.match(text, end))  # it matches the empty string too
            text = text[:begin] + text[tail.end() :]
    return text, len(spans)


def modify_premature(trace: dict[str, Any], mode: str, fmt: FormatParams) -> dict[str, Any]:
    """START's modify step: the boxed answers the model wrote before its last hint are premature (it
    concluded, then the hint made it check). `keep` trains on them as written; `unbox` keeps the claim
    without the answer box, so the model learns to check before it commits to a final answer; `drop`
    removes the concluding sentence; `mask` keeps the text before the hint as written but without loss,
    so the model learns to say the hint after a conclusion without learning the wrong attempt that led
    to it. The final answer after the hint is untouched. Recorded in metadata (with how many answers,
    or for `mask` segments, were changed)."""
    segments = list(trace["segments"])
    last_hint = max((i for i, s in enumerate(segments) if s["kind"] == "hint"), default=-1)
    changed = 0
    if mode == "mask":
        masked = [i < last_hint and s["kind"] in ("model", "code") and s["loss"] for i, s in enumerate(segments)]
        segments = [{**s, "loss": False} if m else s for s, m in zip(segments, masked)]
        changed = sum(masked)
    elif mode != "keep":
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
    samples: Sequence[dict[str, Any]],
    sp: SelectParams,
    fp: filters.FilterParams,
    eval_ngrams: set,
    q: Quarantine,
    domains: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """D_start's RFT part: correct samples that pass the filters, at most `max_per_problem` each."""
    correct = [t for t in samples if t["correct"]]
    kept = _filtered(correct, "d_start", fp, eval_ngrams, q, domains or {})
    return _pick(kept, sp.max_per_problem, "d_start", "rft_correct", q)


# ---- hint-infer and RFT generation jobs ----------------------------------------------------------


def hint_jobs(
    problem: dict[str, Any], draws: Sequence[HintDraw], hp: HintParams, prompt: str, greedy: Sampling, budget: int
) -> list[TraceJob]:
    """START's hint-infer for one problem: a greedy trace, then one trace per drawn hint. The hint goes
    after the drawn occurrence of a marker ("Wait", "Alternatively") and, where the model would stop,
    before the stop (`hp.stop`: its end of turn, or a long-CoT model's end of thinking)."""
    common: dict[str, Any] = dict(
        prompt=prompt,
        sampling=greedy,
        max_turn_tokens_total=budget,
        stop_strings=tuple(hp.stop_strings()),
        examples=tuple(example_tests(problem)),
    )
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


# ---- stage work: one shard of problems -> traces rows ---------------------------------------------


def _limits(sp: StartParams) -> LoopLimits:
    hp = sp.hints
    return LoopLimits(
        max_tool_calls=hp.max_tool_calls, max_marker_hints=hp.max_marker_hints, max_stop_hints=hp.max_stop_hints
    )


def hint_infer_shard(
    shard: int, problems: list[dict[str, Any]], *, rt: Runtime, sp: StartParams, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Greedy and hinted traces for one shard of problems, graded, as `traces` rows."""
    hp = sp.hints
    gp = sp.hint_infer
    greedy = Sampling(temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_tokens_per_turn, seed=seed)
    jobs, owners, hints = [], [], []
    for problem in problems:
        prompt = render_prompt(problem["question"], rt.tokenizer, rt.fmt, "tir")
        draws = draw(hp, problem["domain"], problem["problem_id"], seed)
        for i, (job, hint) in enumerate(
            zip(hint_jobs(problem, draws, hp, prompt, greedy, gp.max_tokens_total), [None, *(d.hint for d in draws)])
        ):
            jobs.append(job)
            owners.append(
                (problem, prompt, i)
            )  # i: 0 the greedy trace, then each hint trace (a hint may be drawn twice)
            hints.append(hint)
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, _limits(sp))
    verdicts = grade_results(rt, [o[0] for o in owners], results)
    rows = [
        trace_row(
            problem,
            result,
            verdict,
            prompt=prompt,
            stage="hint_infer",
            round=0,
            model=rt.model_name,
            sample_index=i,
            sampling=greedy,
            hint=hint,
        )
        for (problem, prompt, i), result, verdict, hint in zip(owners, results, verdicts, hints)
    ]
    return {"traces": rows}


def rft_shard(
    shard: int, problems: list[dict[str, Any]], *, rt: Runtime, sp: StartParams, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """k tool-integrated samples per problem from START-0 (T=0.6, top-p 0.95), graded."""
    return sample_shard(shard, problems, rt=rt, gp=sp.rft, limits=_limits(sp), seed=seed, stage="rft", style="tir")


def eval_ngrams(problems: Sequence[dict[str, Any]], sp: StartParams) -> set:
    return filters.ngrams(
        (p["question"] for p in problems if p["split"] in sp.decontaminate_splits), sp.filters.decontam_ngram
    )


# ---- metrics, computed with SQL over what the stage wrote ------------------------------------------

HINT_SUCCESS_SQL = """
WITH g AS (
    SELECT problem_id, bool_or(correct) AS greedy_ok
    FROM traces WHERE stage = 'hint_infer' AND hint_id IS NULL GROUP BY 1
)
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


def hint_infer_metrics(data_dir: str) -> dict[str, Any]:
    """hint_infer's traces (`generate.trace_metrics`), greedy accuracy, each hint kind's success and how
    many wrong greedy answers it fixed, and where the hints landed."""
    con = sql.connect(data_dir)
    rows = con.execute(HINT_SUCCESS_SQL).fetchall()
    return {
        **trace_metrics(data_dir, "hint_infer"),
        "greedy_accuracy": sql.one_row(
            con.execute("SELECT avg(correct::INT) FROM traces WHERE stage = 'hint_infer' AND hint_id IS NULL")
        )[0],
        "hint_success": {
            kind: {"traces": n, "success_rate": rate, "fixed_greedy": fixed} for kind, n, rate, fixed in rows
        },
        "hint_at": dict(con.execute(HINT_POSITION_SQL).fetchall()),
    }


# ---- writing a selection (d_seed, d_start) --------------------------------------------------------


# ---- writing a selection (d_seed, d_start) --------------------------------------------------------


def write_selection(
    paths: dict[str, str],
    table: str,
    kept: list[dict[str, Any]],
    quarantine: Quarantine,
    fingerprint: str,
    candidates: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """What d_seed and d_start write: one shard in paths["out"], paths["metrics"] with drop reasons (and
    `extra`), the drop-reason plot paths["drops"] (the stage's command-line paths)."""
    drops = dict(quarantine.counts)
    out = store.StageOutput(paths["out"], [table, "rejected"], fingerprint)
    out.write_shard(0, {table: kept, "rejected": quarantine.take()})
    counts = out.finalize([0])
    store.write_json(
        paths["metrics"],
        {
            "size": counts[table],
            "problems": len({r["problem_id"] for r in kept}),
            "candidate_traces": candidates,
            "dropped": drops,
            **(extra or {}),
        },
    )
    store.write_csv(
        paths["drops"],
        [{"reason": k, "count": v} for k, v in sorted(drops.items())] or [{"reason": "none", "count": 0}],
    )
    print(
        f"{table}: kept {counts[table]} traces; dropped {sum(drops.values())} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(drops.items())) or 'none'})"
    )


def seed_yield(
    traces: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]], domain_of: dict[str, str]
) -> dict[str, Any]:
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
        "rows_per_hinted_problem_by_domain": {
            d: round(k / h, 4) if h else 0.0 for d, (h, k) in sorted(per_domain.items())
        },
        "kept_hint_at": dict(sorted(positions.items())),
    }
