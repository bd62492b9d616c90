"""Evaluation: metrics as pure functions over one problem's samples (pass@k, maj@k, best-of-N), and
the held-out evaluation of a model folder that the `evaluate` stage runs for every model.

Each metric returns the expected score of one problem; a benchmark's figure is their mean over problems.
Answers handed to maj@k are already canonical (the grader's normalized form), so equal answers compare equal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tracemill.errors import ParamsError, TracemillError
from tracemill.formats import STYLES, render_prompt
from tracemill.generate import grade_results, sample_jobs, trace_row
from tracemill.hints import Hint
from tracemill.params import at_least, bounded, choices
from tracemill.runtime import Runtime
from tracemill.tir import LoopLimits, Sampling, before_hint, run_traces


class MetricError(TracemillError):
    """A metric was asked for with inconsistent counts."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k) for n samples of which c are correct.

    Computed as a product, 1 - prod_{i=n-c+1}^{n} (1 - k/i), so large n never overflows a binomial.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise MetricError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    remaining = 1.0
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def _first(values: Sequence, k: int | None, name: str) -> Sequence:
    if k is None:
        return values
    if not 1 <= k <= len(values):
        raise MetricError(f"{name} needs 1 <= k <= {len(values)} samples; got k={k}")
    return values[:k]


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int | None = None) -> float:
    """Majority vote over the first k samples' answers (None: no answer, never votes); 1.0 when the most
    frequent answer is correct, the correct share of the tied answers on a tie, 0.0 when none answered."""
    if len(answers) != len(correct):
        raise MetricError(f"maj@k got {len(answers)} answers and {len(correct)} correctness flags")
    answers, correct = _first(answers, k, "maj@k"), _first(correct, k, "maj@k")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    answer_correct: dict[Hashable, bool] = {}
    for answer, ok in zip(answers, correct):
        answer_correct.setdefault(answer, bool(ok))
    winners = [answer for answer, count in votes.items() if count == top]
    return sum(answer_correct[answer] for answer in winners) / len(winners)


def best_of_n(scores: Sequence[float], correct: Sequence[bool], n: int | None = None) -> float:
    """Correctness of the highest-scored of the first n samples (e.g. by the PPM); a tie counts its correct share."""
    if len(scores) != len(correct):
        raise MetricError(f"best-of-N got {len(scores)} scores and {len(correct)} correctness flags")
    scores, correct = _first(scores, n, "best-of-N"), _first(correct, n, "best-of-N")
    best = max(scores, default=None)
    picked = [ok for s, ok in zip(scores, correct) if s == best]
    return sum(picked) / len(picked) if picked else 0.0


# ---- held-out evaluation of model folders (the `evaluate` stage) ----------------------------------


@dataclass(frozen=True)
class EvalModel:
    """One model the evaluate stage scores: a name for tables and plots, its folder, its prompt style."""

    name: str
    path: str | None = None  # None: the policy (policy.model, or models/bootstrap)
    style: str = choices(*STYLES, default="tir")  # the system prompt the model was trained with


@dataclass(frozen=True)
class EvalParams:
    """Held-out problems, and how each model answers them: greedy for pass@1, k samples for pass@k and maj@k."""

    split: str = choices("train", "eval", "test", default="eval")
    sources: list[str] = field(default_factory=list)  # empty: all sources
    domains: list[str] = choices("math", "code", default_factory=lambda: ["math"])
    max_problems: int = at_least(1, default=500)
    k: int = at_least(0, default=16)  # samples per problem for pass@k / maj@k; 0: greedy only
    temperature: float = at_least(0, default=0.6)
    top_p: float = bounded(0, 1, lo_open=True, default=0.95)
    max_tokens_per_turn: int = at_least(1, default=1024)
    max_tokens_total: int = at_least(1, default=8192)
    max_tool_calls: int = at_least(0, default=6)  # code executions per trace; 0: the model writes its own outputs
    # START's sequential test-time scaling: the greedy trace gets the hint at its stop up to this many
    # times, and each round's answer is scored (round 0: no hint, the plain greedy answer).
    hint_rounds: int = bounded(0, 16, default=3)
    tokens_per_hint_round: int = at_least(0, default=2048)  # thinking budget each round adds to max_tokens_total
    hint_math: str = "Wait, maybe using Python here is a good idea."  # START's hint at the stop
    hint_code: str = "Wait, let me run the code on the examples from the problem before answering.\n"
    think_end: str | None = None  # a long-CoT model's end of thinking, where the hint goes; null: its end of turn
    models: list[EvalModel] = field(default_factory=lambda: [EvalModel("base")])

    def check(self) -> None:
        if self.k and not self.temperature:
            raise ParamsError(
                "params 'evaluate.temperature' = 0 with 'evaluate.k' > 0: the k samples would be greedy "
                "traces too, which `score` counts as pass@1 — set a temperature > 0, or k: 0 for greedy only"
            )
        names = [m.name for m in self.models]
        if not names or len(set(names)) != len(names):
            raise ParamsError(f"params 'evaluate.models' needs at least one model and distinct names; got {names}")


def k_points(k: int) -> list[int]:
    """The k of a pass@k curve: powers of two up to k, and k itself."""
    points = [1 << i for i in range(k.bit_length()) if 1 << i <= k]
    return points + ([k] if k and points[-1] != k else [])


def evaluate_traces(
    rt: Runtime, problems: Sequence[dict[str, Any]], ep: EvalParams, style: str, seed: int
) -> list[dict[str, Any]]:
    """The graded answers of the model open in runtime `rt` (`traces` rows of stage `evaluate`; `score`
    turns them into metrics): per problem one greedy trace, scored once per hint round (sample_index
    and metadata `hint_round` r: the trace as it stood before its (r+1)-th hint, so round 0 is the
    greedy answer without hints), and, when ep.k > 0, k sampled traces without hints."""
    limits = LoopLimits(max_tool_calls=ep.max_tool_calls, max_marker_hints=0, max_stop_hints=0)
    prompts = [render_prompt(p["question"], rt.tokenizer, rt.fmt, style) for p in problems]
    greedy = Sampling(temperature=0.0, max_tokens=ep.max_tokens_per_turn, seed=seed)
    hints = {
        d: Hint(f"evaluate-{d}", text, d, "tool_use", "stop")
        for d, text in (("math", ep.hint_math), ("code", ep.hint_code))
    }
    jobs = [
        replace(
            job,
            stop_hint=hints[p["domain"]] if ep.hint_rounds else None,
            tokens_per_stop_hint=ep.tokens_per_hint_round,
            stop_strings=(ep.think_end,) if ep.think_end else (),
        )
        for p, q in zip(problems, prompts)
        for job in sample_jobs(p, q, 1, greedy, ep.max_tokens_total)
    ]
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, replace(limits, max_stop_hints=ep.hint_rounds))
    cut = [
        (p, q, r, before_hint(res, r))
        for p, q, res in zip(problems, prompts, results)
        for r in range(ep.hint_rounds + 1)
    ]
    verdicts = grade_results(rt, [c[0] for c in cut], [c[3] for c in cut])
    rows = [
        trace_row(
            p,
            res,
            v,
            prompt=q,
            stage="evaluate",
            round=0,
            model=rt.model_name,
            sample_index=r,
            sampling=greedy,
            hint=hints[p["domain"]] if r else None,
            meta={"hint_round": r},
        )
        for (p, q, r, res), v in zip(cut, verdicts)
    ]
    if ep.k:
        sampling = Sampling(temperature=ep.temperature, top_p=ep.top_p, max_tokens=ep.max_tokens_per_turn, seed=seed)
        owners = [(p, q, i) for p, q in zip(problems, prompts) for i in range(ep.k)]
        jobs = [
            job for p, q in zip(problems, prompts) for job in sample_jobs(p, q, ep.k, sampling, ep.max_tokens_total)
        ]
        results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, limits)
        verdicts = grade_results(rt, [o[0] for o in owners], results)
        rows.extend(
            trace_row(
                p,
                r,
                v,
                prompt=q,
                stage="evaluate",
                round=0,
                model=rt.model_name,
                sample_index=i,
                sampling=j.sampling,
                hint=None,
            )
            for (p, q, i), j, r, v in zip(owners, jobs, results, verdicts)
        )
    return rows


def score(rows: Sequence[dict[str, Any]], problems: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One model's metrics from its evaluate traces: greedy pass@1 overall and per difficulty level, tool
    calls per problem, accuracy and generated tokens per hint round (greedy rows' sample_index); from the
    sampled traces (temperature > 0) the unbiased pass@k curve, maj@k and sample accuracy."""
    level = {p["problem_id"]: str(p["difficulty"]) for p in problems}
    rounds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["sampling"]["temperature"] == 0.0:
            rounds[r["sample_index"]].append(r)
    greedy = rounds[0]
    by_level: dict[str, list[bool]] = defaultdict(list)
    for r in greedy:
        by_level[level[r["problem_id"]]].append(r["correct"])
    result: dict[str, Any] = {
        "problems": len(greedy),
        "pass@1": round(sum(r["correct"] for r in greedy) / max(1, len(greedy)), 4),
        "per_level": {lv: round(sum(ok) / len(ok), 4) for lv, ok in sorted(by_level.items())},
        # START's measure of a model that calls tools unprompted: code runs per problem, greedy, no hint
        "tool_calls_per_problem": round(sum(r["tool_calls"] for r in greedy) / max(1, len(greedy)), 4),
        "hint_rounds": {
            str(n): {
                "accuracy": round(sum(r["correct"] for r in rs) / len(rs), 4),
                "tokens": round(sum(r["generated_tokens"] for r in rs) / len(rs), 1),
            }
            for n, rs in sorted(rounds.items())
        },
    }
    sampled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["sampling"]["temperature"] > 0.0:
            sampled[r["problem_id"]].append(r)
    if sampled:
        k = min(len(v) for v in sampled.values())
        groups = [sorted(v, key=lambda r: r["sample_index"])[:k] for v in sampled.values()]
        result["pass@k"] = {
            str(j): round(sum(pass_at_k(k, sum(r["correct"] for r in g), j) for g in groups) / len(groups), 4)
            for j in k_points(k)
        }
        result[f"maj@{k}"] = round(
            sum(maj_at_k([r["final_answer"] for r in g], [r["correct"] for r in g]) for g in groups) / len(groups), 4
        )
        result["sampled_accuracy"] = round(sum(r["correct"] for g in groups for r in g) / (k * len(groups)), 4)
    return result
