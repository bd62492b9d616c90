"""START's data selection: D_seed by the Hint-RFT rule, D_start by rejection-sampling fine-tuning.

Both are pure functions from `traces` rows to (selected rows, rejected rows). A selected row is
its trace plus why it was kept and its dedup cluster; a dropped one goes to `rejected` with the
filter's reason, so `tracemill sql` can say exactly why a problem contributed nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tracemill import filters
from tracemill.params import choices
from tracemill.store import Quarantine

RULES = ("greedy_wrong_hint_right", "hint_right")


@dataclass(frozen=True)
class SelectParams:
    rule: str = choices(*RULES, default="greedy_wrong_hint_right")  # START's Hint-RFT rule
    max_per_problem: int = 1  # START keeps at most one trace per problem
    merge_seed: bool = True  # D_start also holds D_seed (START trains on both)


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
