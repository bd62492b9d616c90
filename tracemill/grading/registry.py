"""Graders by name, as params.yaml chooses them, behind one `Grader` that routes by domain."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Protocol

from tracemill.grading import code as code_tests
from tracemill.grading.core import GradingError, GradingParams, Verdict
from tracemill.grading.math import RULES_VERSION, Pending, decide, math_verify_version
from tracemill.grading.pool import VerifyPool

Item = tuple[dict, str]  # (problems row, response)
_SEEN_MAX = 100_000  # normalised pairs remembered per grader


def _decide(problem: dict, response: str, params: GradingParams, name: str, version: str) -> Verdict | Pending:
    return decide(problem.get("answer"), response, params, name, version, problem.get("question"))


class DomainGrader(Protocol):
    name: str
    version: str

    def grade_many(self, items: Sequence[Item]) -> list[Verdict]: ...

    def close(self) -> None: ...


class ExactGrader:
    """Normalised text and exact numbers only: no symbolic engine, no processes."""

    name = "exact"
    version = RULES_VERSION

    def __init__(self, params: GradingParams, sandbox: Any = None) -> None:
        self.params = params

    def grade_many(self, items: Sequence[Item]) -> list[Verdict]:
        verdicts = [_decide(p, r, self.params, self.name, self.version) for p, r in items]
        return [v if isinstance(v, Verdict) else self._unsettled(v) for v in verdicts]

    def _unsettled(self, pending: Pending) -> Verdict:
        return Verdict(False, "not_equal", self.name, self.version, pending.predicted)

    def close(self) -> None:
        pass


class MathVerifyGrader:
    """The plain cases settled at once; the rest by math-verify in a pool with a hard timeout."""

    name = "math-verify"

    def __init__(self, params: GradingParams, sandbox: Any = None) -> None:
        self.params = params
        self.version = math_verify_version()
        self._pool: VerifyPool | None = None  # started on the first pair that needs it
        # Samples of one problem often share an answer: each normalised pair goes to math-verify once.
        self._seen: OrderedDict[tuple[str, str], str] = OrderedDict()

    def grade_many(self, items: Sequence[Item]) -> list[Verdict]:
        decided = [_decide(p, r, self.params, self.name, self.version) for p, r in items]
        pending = [(i, d) for i, d in enumerate(decided) if isinstance(d, Pending)]
        outcomes = self._outcomes([(d.gold, d.pred) for _, d in pending])
        for i, d in pending:
            outcome = outcomes[(d.gold, d.pred)]
            decided[i] = Verdict(outcome == "equal", outcome, self.name, self.version, d.predicted)
        return decided  # type: ignore[return-value]

    def _outcomes(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        outcomes = {pair: self._seen[pair] for pair in pairs if pair in self._seen}
        new = [pair for pair in dict.fromkeys(pairs) if pair not in outcomes]
        if new:
            results = self._pool_().run([(g, p, self.params.float_rounding) for g, p in new])
            outcomes.update(zip(new, results, strict=True))
            # A timeout depends on the load of the moment: only settled verdicts are remembered.
            self._seen.update((pair, r) for pair, r in zip(new, results) if r in ("equal", "not_equal"))
            while len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        return outcomes

    def _pool_(self) -> VerifyPool:
        if self._pool is None:
            self._pool = VerifyPool(self.params.workers, self.params.timeout_s, self.params.worker_memory_mb)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class CodeTestsGrader:
    """The problem's tests run against the response's last ```python block in the sandbox.

    Uses the sandbox it is given; without one it opens a local sandbox with default params on
    first need and closes it with the grader.
    """

    name = code_tests.NAME
    version = code_tests.VERSION

    def __init__(self, params: GradingParams, sandbox: Any = None) -> None:
        self._sandbox = sandbox
        self._owned: ExitStack | None = None

    def grade_many(self, items: Sequence[Item]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        programs: list[tuple[int, code_tests.Program]] = []
        for i, (problem, response) in enumerate(items):
            if not problem.get("tests"):
                verdicts[i] = Verdict(False, "no_reference", self.name, self.version)
            elif (program := code_tests.build(problem, response)) is None:
                verdicts[i] = Verdict(False, "no_code", self.name, self.version)
            else:
                programs.append((i, program))
        if programs:
            runs = self._sandbox_().run_many([program.cells for _, program in programs])
            for (i, program), results in zip(programs, runs, strict=True):
                verdicts[i] = code_tests.verdict(program, results)
        return verdicts  # type: ignore[return-value]

    def _sandbox_(self) -> Any:
        if self._sandbox is None:
            from tracemill.sandbox import SandboxParams, open_sandbox

            self._owned = ExitStack()
            self._sandbox = self._owned.enter_context(open_sandbox(SandboxParams()))
        return self._sandbox

    def close(self) -> None:
        if self._owned is not None:  # a sandbox passed in belongs to the caller
            self._owned.close()
            self._owned = None
            self._sandbox = None


GRADERS: dict[str, type] = {"math-verify": MathVerifyGrader, "exact": ExactGrader, "code-tests": CodeTestsGrader}


class Grader:
    """Grades problems rows of either domain with the graders params.yaml names.

    A context manager: it owns the math-verify worker pool (started on first need, stopped on exit).
    """

    def __init__(self, params: GradingParams, sandbox: Any = None) -> None:
        self.params = params
        self._by_domain: dict[str, DomainGrader] = {
            "math": GRADERS[params.math](params, sandbox),
            "code": GRADERS[params.code](params, sandbox),
        }

    def grade(self, problem: dict, response: str) -> Verdict:
        return self.grade_many([(problem, response)])[0]

    def grade_many(self, items: Sequence[Item]) -> list[Verdict]:
        """Verdicts in the order of `items`; each domain's items go to its grader as one batch."""
        verdicts: list[Verdict | None] = [None] * len(items)
        for domain, grader in self._by_domain.items():
            indices = [i for i, (problem, _) in enumerate(items) if problem.get("domain") == domain]
            if indices:
                for i, v in zip(indices, grader.grade_many([items[i] for i in indices]), strict=True):
                    verdicts[i] = v
        unknown = [i for i, v in enumerate(verdicts) if v is None]
        if unknown:
            problem = items[unknown[0]][0]
            raise GradingError(
                f"problem {problem.get('problem_id')!r} has domain {problem.get('domain')!r}; "
                "graders exist for: math, code"
            )
        return verdicts  # type: ignore[return-value]

    def close(self) -> None:
        for grader in self._by_domain.values():
            grader.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def get_grader(params: GradingParams, sandbox: Any = None) -> Grader:
    return Grader(params, sandbox)


def grade_many(params: GradingParams, items: Sequence[Item], sandbox: Any = None) -> list[Verdict]:
    """One-shot grading: a grader for `items`, closed afterwards."""
    with get_grader(params, sandbox) as grader:
        return grader.grade_many(items)
