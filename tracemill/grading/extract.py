"""Final-answer and code extraction from a response. Returns None, never a guess, when none is stated."""

from __future__ import annotations

import re
from collections import deque

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s{$][^\s$]*)")  # `\boxed 5`
_GSM8K = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_CODE_FENCE = "```python"
_BRACE = re.compile(r"\\[{}]|[{}]")
# Only the last few `\boxed{` are tried, each over a bounded span: hostile text stays cheap.
_MAX_BOX_TRIES = 8
_MAX_BOX_CHARS = 20_000


def extract_answer(text: str, fallback_last_number: bool) -> str | None:
    """The final answer stated in `text`: last `\\boxed{}`/`\\fbox{}`, then `#### x`, then
    "The answer is x", then (only if `fallback_last_number`) the last number."""
    for find in (_last_boxed, _last_gsm8k, _last_answer_is):
        found = find(text)
        if found:
            return found
    if fallback_last_number:
        numbers = _NUMBER.findall(text[-10_000:])  # the end of a response is where its result is
        if numbers:
            return numbers[-1].rstrip(",")
    return None


def gold_answer(answer: str) -> str:
    """A reference answer as problems rows may hold it: bare, after `####`, or inside `\\boxed{}`."""
    return _last_boxed(answer) or _last_gsm8k(answer) or answer.strip()


def extract_code(text: str) -> str | None:
    """The last complete ```python block of a response (a truncated last block is skipped)."""
    end = len(text)
    while (start := text.rfind(_CODE_FENCE, 0, end)) >= 0:
        body = text.find("\n", start)
        close = text.find("```", body) if body >= 0 else -1
        if close >= 0:
            return text[body + 1 : close]
        end = start
    return None


def _last_boxed(text: str) -> str | None:
    braced = deque(((m.end(), None) for m in _BOX_OPEN.finditer(text)), maxlen=_MAX_BOX_TRIES)
    bare = deque(((m.start(), m.group(1)) for m in _BOX_BARE.finditer(text)), maxlen=1)
    for start, inner in sorted([*braced, *bare], reverse=True):
        inner = inner if inner is not None else _balanced(text, start)
        if inner and inner.strip():
            return inner.strip()
    return None


def _balanced(text: str, start: int) -> str | None:
    r"""The text from `start` to the brace closing the one just before it; `\{`, `\}` are content.

    None if it does not close within `_MAX_BOX_CHARS` (no answer is that long; a hostile text
    of nested braces stays cheap)."""
    depth = 1
    for m in _BRACE.finditer(text, start, min(len(text), start + _MAX_BOX_CHARS)):
        token = m.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[start : m.start()]
    return None


def _last_gsm8k(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return matches[-1].strip() or None if matches else None


def _last_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    # A sentence ends at a period followed by a space ("18. I hope..."); "3.5" keeps its point.
    rest = re.split(r"\.\s", rest, maxsplit=1)[0].strip().rstrip(".").strip()
    rest = rest.strip("$").strip()
    if rest.startswith(r"\(") and rest.endswith(r"\)"):
        rest = rest[2:-2].strip()
    return rest or None
