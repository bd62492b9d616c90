"""Evaluation metrics as pure functions over one problem's samples: pass@k, maj@k, best-of-N.

Each returns the expected score of one problem; a benchmark's figure is their mean over problems.
Answers handed to maj@k are already canonical (the grader's normalized form), so equal answers compare equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from tracemill.errors import TracemillError


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
