"""START's hint library: what to insert at a hint marker ("Wait", "Alternatively") or before the stop.

Hints are params entries (`hints.library`), each with an id, a domain, a kind (what it asks the
model to do) and where it may be inserted. `select` picks the hints a hint-infer run tries for a
problem, deterministically, so the traces of a re-run are the same traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracemill.errors import ParamsError
from tracemill.params import at_least, choices

POSITIONS = ("marker", "stop", "any")


@dataclass(frozen=True)
class Hint:
    id: str
    text: str
    domain: str = choices("math", "code", default="math")
    kind: str = "python_check"
    position: str = choices(*POSITIONS, default="any")

    def fits(self, domain: str, position: str) -> bool:
        return self.domain == domain and self.position in (position, "any")


def _default_library() -> list[Hint]:
    # The kinds START describes for math (use Python to check, verify a step, explore another
    # method) and for code (write and run test cases, debug).
    return [
        Hint("math-python", "Wait, maybe using Python here is a good idea. Let me compute it with code.", "math", "python_check"),
        Hint("math-verify", "Wait, I should verify this step with a quick Python calculation.", "math", "verify_step"),
        Hint("math-explore", "Alternatively, I can solve it another way and check the result in Python.", "math", "explore_method"),
        Hint("code-tests", "Wait, I should write some test cases and run them to check my code.", "code", "test_cases"),
        Hint("code-debug", "Wait, let me run the code on the examples to debug it.", "code", "debug"),
    ]


@dataclass(frozen=True)
class HintParams:
    library: list[Hint] = field(default_factory=_default_library)
    per_problem: int = at_least(0, default=3)  # hint traces per problem (each tries one hint)
    max_stop_hints: int = at_least(0, default=1)  # hints inserted before the stop token in one trace
    max_marker_hints: int = at_least(0, default=1)  # hints inserted at a marker in one trace
    max_tool_calls: int = at_least(0, default=6)  # START: at most 6 code executions per trace

    def check(self) -> None:
        ids = [h.id for h in self.library]
        if len(set(ids)) != len(ids):
            raise ParamsError("params 'hints.library' has a duplicate hint id")


def select(params: HintParams, domain: str, problem_id: str, position: str = "any") -> list[Hint]:
    """Up to `per_problem` hints for a problem, rotated by its id so every hint kind gets used."""
    pool = [h for h in params.library if h.domain == domain and (position == "any" or h.fits(domain, position))]
    if not pool:
        return []
    start = int(problem_id[:8], 16) % len(pool) if all(c in "0123456789abcdef" for c in problem_id[:8]) else 0
    rotated = pool[start:] + pool[:start]
    return rotated[: params.per_problem]
