"""rStar-Math best-of-N on held-out problems: does PPM r pick policy r's right answers?

Policy r samples n step-style solutions per held-out problem with the `evaluate` stage's sampling and
grader; PPM r scores each whole solution, and four accuracies are compared as the number of samples
grows: one sample (pass@1, the mean over all samples), the majority answer (maj@n), the PPM's pick
(best-of-n) and the oracle (pass@n, some sample right). The PPM scores a solution by its final step,
as rStar-Math selects its answer: the scored text is the prompt and every step, i.e. `prefix + step`
of the last step, the concatenation the PPM was trained on. The selection math is evaluate's
(`maj_at_k`, `best_of_n`, `pass_at_k`), so a tie splits evenly everywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tracemill.evaluate import EvalParams, MetricError, best_of_n, evaluate_traces, k_points, maj_at_k, pass_at_k
from tracemill.params import at_least
from tracemill.rstar.mcts import Scorer
from tracemill.runtime import Runtime

METHODS = ("pass@1", "maj@n", "ppm_best_of_n", "pass@n")
CSV_COLUMNS = ["round", "n_samples", "method", "accuracy"]


@dataclass(frozen=True)
class BestOfNParams:
    """The `rstar_bestofn` section of params.yaml: each round's policy samples n solutions per held-out problem
    (the `evaluate` section's problems and sampling) and PPM r picks one, against pass@1, maj@n and the
    oracle pass@n. A section of its own, not part of `rstar`: the search stages fingerprint all of `rstar`,
    so a change here re-runs only rstar_bestofn@r."""

    n: int = at_least(1, default=64)  # samples per problem; the paper's largest test-time budget (rStar-Math64)
    max_problems: int | None = at_least(
        1, default=None
    )  # the first held-out problems by id; None: evaluate.max_problems


@dataclass(frozen=True)
class Sample:
    """One graded solution and the PPM's score of its final step."""

    answer: Hashable | None  # the grader's canonical answer; None: no answer, never votes
    correct: bool
    ppm_score: float


def accuracy(groups: Sequence[Sequence[Sample]], method: str, n: int) -> float:
    """A method's accuracy with the first n samples of each problem's group, averaged over problems.
    pass@1 and pass@n use all samples (the unbiased estimators), so their curves do not depend on order."""

    def one(g: Sequence[Sample]) -> float:
        correct = [s.correct for s in g]
        if method == "pass@1":
            return pass_at_k(len(g), sum(correct), 1)
        if method == "pass@n":
            return pass_at_k(len(g), sum(correct), n)
        if method == "maj@n":
            return maj_at_k([s.answer for s in g], correct, n)
        if method == "ppm_best_of_n":
            return best_of_n([s.ppm_score for s in g], correct, n)
        raise MetricError(f"unknown best-of-N method '{method}'; one of {', '.join(METHODS)}")

    return round(sum(one(g) for g in groups) / len(groups), 4) if groups else 0.0


def curve(groups: Sequence[Sequence[Sample]], round_: int) -> list[dict[str, Any]]:
    """Plot rows: every method's accuracy at 1, 2, 4, ... samples up to the smallest group."""
    n = min((len(g) for g in groups), default=0)
    return [
        {"round": round_, "n_samples": k, "method": m, "accuracy": accuracy(groups, m, k)}
        for k in k_points(n)
        for m in METHODS
    ]


def summary(groups: Sequence[Sequence[Sample]]) -> dict[str, Any]:
    """The metrics at the full n: pass@1, maj@n, ppm_best_of_n, pass@n, named with n."""
    n = min((len(g) for g in groups), default=0)
    out: dict[str, Any] = {"problems": len(groups), "n": n}
    if n:
        names = {"pass@1": "pass@1", "maj@n": f"maj@{n}", "ppm_best_of_n": f"ppm_best_of_{n}", "pass@n": f"pass@{n}"}
        out.update({names[m]: accuracy(groups, m, n) for m in METHODS})
    return out


def solution_text(trace: dict[str, Any]) -> str:
    """What the PPM scores: the prompt and every step the policy and the sandbox wrote."""
    return "".join(s["text"] for s in trace["segments"])


def sample_groups(
    rt: Runtime, ppm: Scorer, problems: Sequence[dict[str, Any]], ep: EvalParams, n: int, seed: int
) -> list[list[Sample]]:
    """n graded step-style samples per problem from the policy open in `rt`, each scored by `ppm`,
    grouped per problem in `problems` order, by sample index. The samples are
    evaluate's (same seeds, so the first k equal its pass@k samples); evaluate_traces also writes one
    greedy trace per problem, which is evaluate's greedy pass@1 and is left out here."""
    rows = [
        r
        for r in evaluate_traces(rt, problems, replace(ep, k=n, hint_rounds=0), "steps", seed)
        if r["sampling"]["temperature"] > 0.0
    ]
    scores = ppm.score_many([solution_text(r) for r in rows])
    by_problem: dict[str, list[tuple[int, Sample]]] = defaultdict(list)
    for r, score in zip(rows, scores, strict=True):
        by_problem[r["problem_id"]].append((r["sample_index"], Sample(r["final_answer"], bool(r["correct"]), score)))
    return [[s for _, s in sorted(by_problem[p["problem_id"]], key=lambda t: t[0])] for p in problems]
