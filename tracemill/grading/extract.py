"""Final-answer and code extraction from a response. Returns None, never a guess, when none is stated."""

from __future__ import annotations

import re
from collections import deque

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s{$][^\s$]*)")  # `\boxed 5`
_GSM8K = re.compile(r"####\s*([^\n]*)")
# "The final answer is", "Final Answer:", "the answer is", "**Answer:**", a line opening with "Answer".
_ANSWER_CUE = re.compile(
    r"(?:final answer|the answer)\s*(?:\*\*)?\s*(?:is\s*:?|:)\s*(?:\*\*)?"
    r"|\*\*\s*(?:final )?answer\s*:?\s*\*\*\s*:?"
    r"|^[ \t]*(?:final )?answer\b\s*:?",
    re.IGNORECASE | re.MULTILINE,
)
# A concluding sentence names its result without an answer cue: "Hence $y \le 3$ is the solution set."
_CONCLUDES = re.compile(
    r"^(?:therefore|thus|hence|so|in conclusion|finally|consequently)\b|^the (?:[^\s.]+ ){1,5}(?:is|are|equals)\b",
    re.IGNORECASE,
)
# What a chat model emits after its answer is not part of it.
_END_TOKENS = re.compile(r"<\|im_end\|>|<\|im_start\|>|<\|endoftext\|>|</s>")
# `\$` is a dollar sign inside math, not a delimiter; inline math (`$..$`, `\(..\)`) stays on one line.
_MATH_SPAN = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$((?:\\\$|[^\n$])+?)(?<!\\)\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)", re.DOTALL)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_SPAN_OR_END = re.compile(f"(?P<span>{_MATH_SPAN.pattern})|(?P<end>{_SENTENCE_END.pattern})", re.DOTALL)
_COPULA = re.compile(r"(?:\bis|\bare|\bequals|\bwas|=)\s+", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_QUANTITY = re.compile(r"(?:-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(?:\s*\\?%)?")
_BOILERPLATE = re.compile(r"^\s*(?:I hope it is correct|Hope this helps)\b", re.IGNORECASE)
_CODE_FENCE = "```python"
_BRACE = re.compile(r"\\[{}]|[{}]")
# Only the last few `\boxed{` are tried, each over a bounded span: hostile text stays cheap.
_MAX_BOX_TRIES = 8
_MAX_BOX_CHARS = 20_000
# Between two boxes of one final answer stand only joiners: "\boxed{2}, \boxed{5}",
# "\boxed{(1,3)} \text{ and } \boxed{(3,1)}", "$\boxed{a=4}$ and $\boxed{b=7}$".
_JOINER = re.compile(r"\\text\{[^{}\d=]{0,30}\}|\\q?quad|\\[(),;!\[\]]|\band\b|\bor\b|[\s,;.$&]")
_MAX_JOIN_GAP = 60
# What may also stand between two boxes of one answer: a unit word right after a box ("\boxed{1}
# papers and \boxed{2} bins") and the name of the next box ("y_1 = \boxed{..} and y_2 = \boxed{..}").
_UNIT_AFTER_BOX = re.compile(r"^\s*[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})?(?=\s*(?:[,;]|\band\b))")
_NAME_BEFORE_BOX = re.compile(r"(?<![\w\\])[A-Za-z](?:_\{?\w+\}?)?\s*=\s*\$?\s*$")
# A sentence that states its answer is short; a longer tail is prose, not an answer.
_MAX_SENTENCE_CHARS = 400


def extract_answer(text: str, fallback_last_number: bool) -> str | None:
    """The final answer stated in `text`: the last `\\boxed{}`/`\\fbox{}` (with the boxes joined to
    it, as one list), then `#### x`, then an answer line ("The final answer is x", "**Answer:** x",
    "Final Answer: the smallest $k$ is 12"), then a concluding sentence's math ("Hence $y \\le 3$
    is the solution set."), then (only if `fallback_last_number`) the last number."""
    if end := _END_TOKENS.search(text):
        text = text[: end.start()]
    boxed = _final_boxes(text)
    cue = _ANSWER_CUE.search(text, _boxes_end(text))
    if boxed and not cue:  # an answer line after the last box restates or corrects it
        return boxed
    for find in (_last_gsm8k, _last_answer_line, _concluding_sentence):
        found = find(text)
        if found:
            return found
    if boxed:
        return boxed
    if fallback_last_number:
        numbers = _NUMBER.findall(text[-10_000:])  # the end of a response is where its result is
        if numbers:
            return numbers[-1].rstrip(",")
    return None


def gold_answer(answer: str) -> str:
    """A reference answer as problems rows may hold it: bare, after `####`, or in one or more `\\boxed{}`."""
    return _final_boxes(answer) or _last_gsm8k(answer) or answer.strip()


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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last `_MAX_BOX_TRIES` complete boxes, in text order."""
    braced = deque((m for m in _BOX_OPEN.finditer(text)), maxlen=_MAX_BOX_TRIES)
    bare = deque((m for m in _BOX_BARE.finditer(text)), maxlen=1)
    found = []
    for m in braced:
        inner = _balanced(text, m.end())
        if inner is not None and inner.strip():
            found.append((m.start(), m.end() + len(inner) + 1, inner.strip()))
    found += [(m.start(), m.end(), m.group(1)) for m in bare]
    return sorted(found)


def _boxes_end(text: str) -> int:
    boxes = _boxes(text)
    return boxes[-1][1] if boxes else len(text)


def _final_boxes(text: str) -> str | None:
    """The last box, with the boxes before it that only joiners separate from it, as one list."""
    boxes = _boxes(text)
    if not boxes:
        return None
    final = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] : final[0][0]]
        bare = _NAME_BEFORE_BOX.sub("", _UNIT_AFTER_BOX.sub("", gap))
        if box[1] > final[0][0] or len(gap) > _MAX_JOIN_GAP or _JOINER.sub("", bare):
            break
        final.insert(0, box)
    contents = list(dict.fromkeys(c for _, _, c in final))  # a box repeated is one answer
    return ", ".join(contents)


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


def _last_answer_line(text: str) -> str | None:
    matches = list(_ANSWER_CUE.finditer(text[-10_000:]))
    if not matches:
        return None
    rest = text[-10_000:][matches[-1].end() :]
    return _sentence_answer(_first_sentence(rest.lstrip(" \t*:\n")))


def _concluding_sentence(text: str) -> str | None:
    """The math of the last sentence when it opens with "Therefore", "Thus", "Hence", "So"..."""
    sentences = _sentences(text[-_MAX_SENTENCE_CHARS * 10 :])
    while sentences and _BOILERPLATE.match(sentences[-1]):
        sentences.pop()
    if not sentences or not _CONCLUDES.match(sentences[-1]):
        return None
    last = sentences[-1]
    if not _MATH_SPAN.search(last) and not _QUANTITY.search(last):
        return None  # "So we are done." states nothing
    return _sentence_answer(last)


def _sentences(text: str) -> list[str]:
    """Sentences of `text`, with math spans kept whole (their periods end nothing)."""
    out, start = [], 0
    for m in _SPAN_OR_END.finditer(text):
        if m.group("end") is not None:
            out.append(text[start : m.end()].strip())
            start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _first_sentence(text: str) -> str:
    sentences = _sentences(text[: _MAX_SENTENCE_CHARS * 2])
    return sentences[0] if sentences else ""


def _sentence_answer(sentence: str) -> str | None:
    """The answer a sentence states: its last math span, unless a number follows it after "is"
    ("the smallest $k$ is 12"); without math, what follows its last "is"/"="; a lone number."""
    sentence = sentence.strip()
    if not sentence or len(sentence) > _MAX_SENTENCE_CHARS:
        return None
    spans = list(_MATH_SPAN.finditer(sentence))
    tail = sentence[spans[-1].end() :] if spans else sentence
    copulas = list(_COPULA.finditer(tail))
    if copulas and (_NUMBER.search(tail[copulas[-1].end() :]) or not spans):
        return _plain_answer(tail[copulas[-1].end() :])
    if spans:
        inner = next(g for g in spans[-1].groups() if g is not None)
        return inner.strip().rstrip(".,;").strip() or None
    return _plain_answer(sentence)


def _plain_answer(text: str) -> str | None:
    """Text stating an answer without math delimiters: "12 apples" stays (units go later); in a
    longer sentence with one number ("Jane started it 3 hours ago") the number is the answer."""
    text = text.strip().rstrip(".").strip().strip("*").strip()
    numbers = _QUANTITY.findall(text)
    if len(text.split()) > 3 and len(numbers) == 1:
        return numbers[0].rstrip(",")
    return text or None
