"""pass@k, maj@k and best-of-N against values worked out by hand."""

from math import comb

import pytest

from tracemill.evaluate import MetricError, best_of_n, maj_at_k, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),
        (10, 10, 5, 1.0),
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (6, 4, 3, 1.0),  # fewer than k wrong samples: some draw of k always holds a correct one
    ],
)
def test_pass_at_k_matches_hand_computed_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_the_binomial_form_for_large_n() -> None:
    n, c, k = 200, 13, 16
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_inconsistent_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(MetricError, match="pass@k"):
        pass_at_k(n, c, k)


def test_maj_at_k_votes_the_most_frequent_answer() -> None:
    answers = ["7", "8", "7", None, "8", "8"]
    correct = [True, False, True, False, False, False]
    assert maj_at_k(answers, correct) == 0.0  # "8" has three votes
    assert maj_at_k(answers, correct, k=3) == 1.0  # "7" leads the first three
    assert maj_at_k(answers, correct, k=2) == 0.5  # "7" and "8" tie: half credit
    assert maj_at_k([None, None], [False, False]) == 0.0


def test_best_of_n_picks_the_highest_score() -> None:
    scores = [0.1, 0.9, -0.4, 0.9]
    assert best_of_n(scores, [True, False, True, False]) == 0.0
    assert best_of_n(scores, [False, True, False, False]) == 0.5  # two samples tie at 0.9
    assert best_of_n(scores, [True, False, True, False], n=1) == 1.0


def test_metrics_reject_mismatched_lengths() -> None:
    with pytest.raises(MetricError):
        maj_at_k(["1"], [True, False])
    with pytest.raises(MetricError):
        best_of_n([0.1, 0.2], [True], n=1)
