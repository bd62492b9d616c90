"""START's hint library: what hint-infer inserts after a hint marker ("Wait", "Alternatively") or at the stop.

The library (`start.hints.library`) holds several wordings of each kind of hint START describes:
for math, using Python for a calculation, a self-check of a result, a logic check, an alternative
method and deeper thinking; for code, running the problem's example tests (its hint carries a code
template, see `fill_template`). Each hint trace of a problem draws one kind and one wording with a
seeded draw of its own, and the marker after which the hint goes, so a re-run makes the same traces
and the kinds and wordings spread over the data.

Where the model stops depends on its family (`stop`): a long-CoT model ends its thinking with
`think_end` and the hint goes before it; an instruct model ends its turn, and the hint goes where
the end of turn would be.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tracemill.errors import ParamsError
from tracemill.params import at_least, choices

POSITIONS = ("marker", "stop", "any")
STOPS = ("turn_end", "think_end")


@dataclass(frozen=True)
class Hint:
    id: str
    text: str
    domain: str = choices("math", "code", default="math")
    kind: str = "tool_use"
    position: str = choices(*POSITIONS, default="any")
    # Code hints: a python block the hint continues with; `fill_template` puts the model's last code in
    # {candidate} and the problem's example tests in {examples}, and the loop runs it.
    template: str | None = None

    def fits(self, domain: str, position: str) -> bool:
        return self.domain == domain and self.position in (position, "any")


_CODE_TEMPLATE = '```python\n{candidate}\n\n# the examples from the problem\n{examples}\nprint("examples pass")\n```\n'

_WORDINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("math", "tool_use"): (
        "Wait, maybe using Python here is a good idea.",  # START's own example
        "Wait, this calculation is easy to get wrong by hand. Let me compute it with Python.",
        "Wait, I can use Python to do this arithmetic exactly.",
    ),
    ("math", "self_check"): (
        "Wait, let me check this result with a quick Python calculation before I conclude.",
        "Wait, I should double-check that number by running it in Python.",
        "Wait, let me verify the last step with code.",
    ),
    ("math", "logic_check"): (
        "Wait, does this answer satisfy every condition of the problem? Let me test it in Python.",
        "Wait, let me re-check the reasoning step by step, computing each quantity with Python.",
    ),
    ("math", "alternative"): (
        "Alternatively, I can solve it another way with Python and compare the results.",
        "Alternatively, let me try a different method and check it with code.",
    ),
    ("math", "deeper"): (
        "Wait, I should think about this more carefully. "
        "Let me work through it again and compute each step with Python.",
        "Wait, let me slow down and redo the computation with Python, one quantity at a time.",
    ),
    ("code", "test_examples"): (
        "Wait, I should run my function on the examples from the problem before answering.\n",
        "Wait, let me test the code on the problem's examples to make sure it is correct.\n",
        "Wait, the code may have a bug. Let me run the example tests first.\n",
    ),
}


def _default_library() -> list[Hint]:
    return [
        Hint(f"{domain}-{kind}-{i}", text, domain, kind, "any", _CODE_TEMPLATE if domain == "code" else None)
        for (domain, kind), texts in _WORDINGS.items()
        for i, text in enumerate(texts, 1)
    ]


@dataclass(frozen=True)
class HintParams:
    library: list[Hint] = field(default_factory=_default_library)
    per_problem: int = at_least(0, default=3)  # hint traces per problem, each with its own kind
    max_stop_hints: int = at_least(0, default=1)  # hints inserted at the stop in one trace
    max_marker_hints: int = at_least(0, default=1)  # hints inserted after a marker in one trace
    # A hint goes after the n-th "Wait"/"Alternatively" of the trace, n drawn from 1..marker_choices,
    # so not always after the first; a trace with fewer markers gets its hint at the stop.
    marker_choices: int = at_least(1, default=3)
    max_tool_calls: int = at_least(0, default=6)  # START: at most 6 code executions per trace
    stop: str = choices(*STOPS, default="turn_end")  # the model family: instruct (end of turn) or long-CoT (think_end)
    think_end: str = "</think>"  # a long-CoT model's end of thinking

    def check(self) -> None:
        ids = [h.id for h in self.library]
        if len(set(ids)) != len(ids):
            raise ParamsError("params 'start.hints.library' has a duplicate hint id")
        if self.stop == "think_end" and not self.think_end:
            raise ParamsError("params 'start.hints.stop' = think_end needs a non-empty 'start.hints.think_end'")
        for h in self.library:
            if h.template is not None and h.domain != "code":
                raise ParamsError(
                    f"params 'start.hints.library' hint '{h.id}' has a code template but domain '{h.domain}'"
                )

    def stop_strings(self) -> list[str]:
        """Extra stop strings at which a stop hint goes in (the end of turn needs none: it ends generation)."""
        return [self.think_end] if self.stop == "think_end" else []


@dataclass(frozen=True)
class HintDraw:
    """One hint trace's draw: its hint, and after which marker occurrence (1-based) it is inserted."""

    hint: Hint
    marker_index: int


def draw(params: HintParams, domain: str, problem_id: str, seed: int) -> list[HintDraw]:
    """`per_problem` hint traces for a problem: distinct kinds while kinds last, a wording of each and
    a marker occurrence, each from a random stream of its own (seed, problem, trace index)."""
    by_kind: dict[str, list[Hint]] = {}
    for h in params.library:
        if h.domain == domain:
            by_kind.setdefault(h.kind, []).append(h)
    if not by_kind:
        return []
    kinds = sorted(by_kind)
    random.Random(f"{seed}:{problem_id}:kinds").shuffle(kinds)
    draws = []
    for i in range(params.per_problem):
        rng = random.Random(f"{seed}:{problem_id}:{i}")
        hint = rng.choice(by_kind[kinds[i % len(kinds)]])
        draws.append(HintDraw(hint, rng.randint(1, params.marker_choices)))
    return draws


def example_tests(problem: dict[str, Any], limit: int = 1) -> list[str]:
    """The tests a problem states in its text, which a model may run before answering: MBPP's first
    assert, or HumanEval's docstring examples (`>>> f(x)` and the line that follows) as asserts."""
    if problem.get("test_format") == "humaneval":
        lines = problem["question"].splitlines()
        found = []
        for i, line in enumerate(lines[:-1]):
            call = line.strip()
            if call.startswith(">>> ") and lines[i + 1].strip() and not lines[i + 1].strip().startswith(">>>"):
                found.append(f"assert {call[4:]} == {lines[i + 1].strip()}")
        return found[:limit]
    return [t for t in (problem.get("tests") or []) if t.strip().startswith("assert")][:limit]


def fill_template(hint: Hint, candidate: str, examples: Sequence[str]) -> str:
    """A code hint's template with the model's candidate solution and the example tests filled in."""
    return (hint.template or "").replace("{candidate}", candidate.rstrip()).replace("{examples}", "\n".join(examples))
