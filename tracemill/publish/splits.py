"""Splits: what a train split may hold. Rows of held-out problems, of unknown problems, or sharing a word
n-gram with a held-out question are held back from it, with the reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tracemill import filters
from tracemill.publish.params import BY_PROBLEM, TEST, TRAIN

# Why a row was kept out of a train split (the n-gram reason is f"held_out_{n}gram").
HELD_OUT_PROBLEM = "held_out_problem"
UNKNOWN_PROBLEM = "unknown_problem"


@dataclass(frozen=True)
class Guard:
    """The held-out problems a train split must not touch: their ids, the word n-grams of their questions
    (the decontamination helper START's filters use, filters.ngrams / filters.contaminated) and the train
    problems whose question shares one of those n-grams."""

    split_of: dict[str, str]  # problem_id -> the problem's split
    ngrams: frozenset[tuple[str, ...]]
    n: int
    twins: frozenset[str]  # train problems whose own question shares an n-gram with a held-out one

    @classmethod
    def of(cls, problems: pa.Table, n: int) -> Guard:
        ids, splits = problems.column("problem_id").to_pylist(), problems.column("split").to_pylist()
        questions = problems.column("question").to_pylist()
        held = [q for q, s in zip(questions, splits) if s != TRAIN]
        grams = frozenset(filters.ngrams(held, n) - {()})  # an empty question would match every empty string
        twins = frozenset(
            i for i, s, q in zip(ids, splits, questions) if s == TRAIN and filters.contaminated(q, grams, n)
        )
        return cls(dict(zip(ids, splits)), grams, n, twins)

    @property
    def ngram_reason(self) -> str:
        return f"held_out_{self.n}gram"

    def verdict(self, row: dict[str, Any]) -> str | None:
        """None when `row` may go in a train split, else why not."""
        split = self.split_of.get(row.get("problem_id") or "")
        if split is None:
            return UNKNOWN_PROBLEM  # no problem, or one the problems table lacks: its split cannot be checked
        if split != TRAIN:
            return HELD_OUT_PROBLEM
        if row["problem_id"] in self.twins or any(
            filters.contaminated(text, self.ngrams, self.n) for text in _strings(row)
        ):
            return (
                self.ngram_reason
            )  # rows of a twin problem too, though they may not quote its question (trajectories)
        return None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a row, nested segments and lists included: any of them could carry a question."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def split_rows(data: pa.Table, mode: str, guard: Guard) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """The rows of each published split (non-empty ones, train first) and the rows held back from train, by reason."""
    if mode == TEST:
        return ({TEST: data} if data.num_rows else {}), {}
    verdicts = [guard.verdict(row) for row in data.to_pylist()]
    to_test = mode == BY_PROBLEM
    train = [i for i, v in enumerate(verdicts) if v is None]
    test = [i for i, v in enumerate(verdicts) if to_test and v == HELD_OUT_PROBLEM]
    held_back = Counter(v for v in verdicts if v is not None and not (to_test and v == HELD_OUT_PROBLEM))
    splits = {TRAIN: data.take(pa.array(train, pa.int64())), TEST: data.take(pa.array(test, pa.int64()))}
    return {s: t for s, t in splits.items() if t.num_rows}, dict(sorted(held_back.items()))
