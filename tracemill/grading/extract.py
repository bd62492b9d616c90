"""Final-answer and code extraction from a response. Returns None, never a guess, when none is stated."""

from __future__ import annotations

import re
from collections import deque

from tracemill.grading.normalize import VALUE_WORDS

# `\\boxed{` is the same box in a text whose backslashes were escaped once more.
_BOX_OPEN = re.compile(r"\\{1,2}(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s{$][^\s$]*)")  # `\boxed 5`
_GSM8K = re.compile(r"####\s*([^\n]*)")
# "The final answer is", "Final Answer:", "the answer is", "**Answer:**", a line opening with "Answer".
_ANSWER_CUE = re.compile(
    r"(?:final answer|the answer)\s*(?:\*\*)?\s*(?:is\s*:?|:)\s*(?:\*\*)?"
    r"|\*\*\s*(?:final )?answer\s*:?\s*\*\*\s*:?"
    r"|^[ \t]*(?:final )?answer\b\s*:?",
    re.IGNORECASE | re.MULTILINE,
)
# A concluding sentence names its result without an answer cue: "Hence $y \le 3$ is the solution set.",
# "We find that $x < 3$."
_CONCLUDES = re.compile(
    r"^(?:therefore|thus|hence|so|in conclusion|finally|consequently|we (?:find|conclude|obtain|get))\b"
    r"|^the (?:[^\s.]+ ){1,5}(?:is|are|equals)\b",
    re.IGNORECASE,
)
# What a chat model emits after its answer is not part of it.
_END_TOKENS = re.compile(r"<\|im_end\|>|<\|im_start\|>|<\|endoftext\|>|</s>")
# `\$` is a dollar sign inside math, not a delimiter; inline math (`$..$`, `\(..\)`) stays on one line.
_MATH_SPAN = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$((?:\\\$|[^\n$])+?)(?<!\\)\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)", re.DOTALL
)
# A sentence also ends where a capitalised conclusion follows math without a period: "$y = 6$ So, ..."
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n|(?<=[$)\]])\s+(?=(?:So|Thus|Hence|Therefore)\b)")
_SPAN_OR_END = re.compile(f"(?P<span>{_MATH_SPAN.pattern})|(?P<end>{_SENTENCE_END.pattern})", re.DOTALL)
_COPULA = re.compile(r"(?:\bis|\bare|\bequals|\bwas|\bmust be|=)\s+", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_QUANTITY = re.compile(r"(?:-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(?:\s*\\?%)?")
_BOILERPLATE = re.compile(r"^\s*(?:I hope it is correct|Hope this helps)\b", re.IGNORECASE)
_CODE_FENCE = "```python"
_BRACE = re.compile(r"\\[{}]|[{}]")
# Only the last few `\boxed{` are tried, each over a bounded span: hostile text stays cheap.
_MAX_BOX_TRIES = 8
_MAX_BOX_CHARS = 20_000
# Between two boxes of one final answer stand only joiners: "\boxed{2}, \boxed{5}",
# "\boxed{(1,3)} \text{ and } \boxed{(3,1)}", "$\boxed{a=4}$ and $\boxed{b=7}$", a line break `\\`, and
# a run of one symbol drawn as a rule between them (`---`, `++++++`: a run is no operator).
_JOINER = re.compile(r"\\text\{[^{}\d=]{0,30}\}|\\q?quad|\\\\|\\[(),;!\[\]]|\band\b|\bor\b|[\s,;.$&]|([-+*=_~])\1{2,}")
_MAX_JOIN_GAP = 60
# What may also stand between two boxes of one answer: a unit word right after a box ("\boxed{1}
# papers and \boxed{2} bins") and the name of the next box ("y_1 = \boxed{..} and y_2 = \boxed{..}").
_UNIT_AFTER_BOX = re.compile(r"^\s*[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})?(?=\s*(?:[,;]|\band\b))")
_NAME_BEFORE_BOX = re.compile(r"(?<![\w\\])[A-Za-z](?:_\{?\w+\}?)?\s*=\s*\$?\s*$")
# A sentence that states its answer is short; a longer tail is prose, not an answer.
_MAX_SENTENCE_CHARS = 400
# What keeps a sentence from stating a value: a condition or an open question ("So if $k$ is 12",
# "check whether $k$ is 12"); in what it states, a negation, a bound or an estimate ("there is no
# solution" states the answer "no solution": `no` is no hedge).
_CONDITIONAL = re.compile(r"(?<!\\)\b(?:if|whether|unless|suppose|assume|assuming)\b", re.IGNORECASE)
_HEDGE = re.compile(
    r"(?<!\\)\b(?:not|never|cannot|at (?:least|most)|(?:more|less|fewer|greater|smaller|larger) than"
    r"|or (?:more|less|fewer)|approximately|about|around|roughly|nearly|almost|close to|between|except"
    r"|maybe|perhaps|probably|possibly|might|may|could|would|should|plus|minus|times|over|under"
    r"|wrong|incorrect|false|impossible|invalid|too)\b|n't\b",
    re.IGNORECASE,
)
# Where the statement of a value ends and its justification starts: "is $12$, since $12 > 11$".
_CLAUSE_BREAK = re.compile(r";|,\s*(?:since|because|as|which|where|given|so|thus|hence|then)\b", re.IGNORECASE)
# What may stand before the math of a sentence without a copula: "Therefore, $k = 12$", "So we get
# $7$", "We find that $x < 3$". Anything else ("we check $k = 12$", "twice $12$") makes the math
# part of another statement.
_LEAD = re.compile(
    r"\s*(?:(?:therefore|thus|hence|so|in conclusion|finally|consequently)\b,?\s*)?"
    r"(?:(?:we|I) (?:get|have|obtain|find|conclude|see)(?: that)?\s*|it follows that\s*|this gives\s*)?",
    re.IGNORECASE,
)
# A copula followed only by words names the math before it as the answer: "$X$ is the solution set".
_NAMES_ANSWER = re.compile(r"\b(?:answer|solutions?|result|correct)\b", re.IGNORECASE)
# What may stand between a copula and the value it states: "is exactly $12$", "equals then 12".
_FILLER = re.compile(r"\s*(?:(?:exactly|precisely|simply|just|then|therefore|thus|indeed|equal to|given by)\s+)?", re.I)
_SPAN_JOINER = re.compile(r"\s*(?:,|,?\s*and|,?\s*or)?\s*", re.IGNORECASE)
_UNIT_WORD = re.compile(r"[A-Za-z]{2,}[A-Za-z'-]*")  # "apples", "hours", "ago"; a single letter is math
# In words that hold one number, an operator makes the number part of an expression ("even + 1").
_OPERATOR = re.compile(r"[+*/^=<>\\]|\s-")
_MASK = "\x00"  # stands for a character of math in a sentence's words


def extract_answer(text: str, fallback_last_number: bool) -> str | None:
    """The final answer stated in `text`: the last `\\boxed{}`/`\\fbox{}` (with the boxes joined to
    it, as one list), then `#### x`, then an answer line ("The final answer is x", "**Answer:** x",
    "Final Answer: the smallest $k$ is 12"), then what a concluding sentence states ("Hence $y \\le 3$
    is the solution set.", "Therefore the smallest $k$ is 12."), then a response that is one span of
    math, then (only if `fallback_last_number`) the last number."""
    if end := _END_TOKENS.search(text):
        text = text[: end.start()]
    boxed = _final_boxes(text)
    cue = _ANSWER_CUE.search(text, _boxes_end(text))
    if boxed and not cue:  # an answer line after the last box restates or corrects it
        return boxed
    for find in (_last_gsm8k, _last_answer_line, _concluding_sentence, _only_math):
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
    return _sentence_answer(_first_sentence(rest.lstrip(" \t*:\n")), cued=True)


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


def _only_math(text: str) -> str | None:
    """A response that is one span of math and nothing else states that math."""
    m = _MATH_SPAN.fullmatch(text.strip())
    return _span_text(m) if m else None


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


def _sentence_answer(sentence: str, cued: bool = False) -> str | None:
    """The answer a sentence states, or None when it states none plainly.

    After its last copula ("is", "are", "=", ...) comes what it states: math spans ("is $12$",
    "are $1$ and $2$", read as one list), or a value with unit words ("is 12 apples"); without a
    copula, its last run of math spans ("Therefore, $k = 12$."); a copula followed by words only
    names the math before it ("Hence $y \\le 3$ is the solution set."). A conditional ("if $k$ is
    12"), a negation or a bound ("is not 12", "is at least 12") states no value. Only after an
    answer cue (`cued`) is the one number of a clause its answer ("Final Answer: Jane started 3
    hours ago"); elsewhere that would be a guess."""
    sentence = sentence.strip()
    if not sentence or len(sentence) > _MAX_SENTENCE_CHARS:
        return None
    spans = list(_MATH_SPAN.finditer(sentence))
    prose = _masked(sentence, spans)  # the words of the sentence; math cannot look like them
    if brk := _CLAUSE_BREAK.search(prose):
        sentence, prose = sentence[: brk.start()], prose[: brk.start()]
        spans = [m for m in spans if m.end() <= brk.start()]
    if _CONDITIONAL.search(prose):
        return None
    copulas = list(_COPULA.finditer(prose))
    start = copulas[-1].end() if copulas else 0
    if _HEDGE.search(prose, start):
        return None
    stated = [m for m in spans if m.start() >= start]
    if stated:
        return _span_list(sentence, stated, start if copulas or cued else None)
    if not copulas:
        return _plain_answer(sentence, cued)
    predicate = sentence[start:]
    if _NUMBER.search(predicate) or not spans:
        return _plain_answer(predicate, cued)
    return _span_text(spans[-1]) if _NAMES_ANSWER.search(predicate) else None


def _masked(sentence: str, spans: list[re.Match]) -> str:
    """`sentence` with each math span replaced by as many `_MASK` characters."""
    out, pos = [], 0
    for m in spans:
        out += [sentence[pos : m.start()], _MASK * (m.end() - m.start())]
        pos = m.end()
    return "".join([*out, sentence[pos:]])


def _span_text(span: re.Match) -> str | None:
    inner = next(g for g in span.groups() if g is not None)
    return inner.strip().rstrip(".,;").strip() or None


def _span_list(sentence: str, spans: list[re.Match], predicate: int | None) -> str | None:
    """The last run of math spans that only joiners ("," "and" "or") separate, as one list.

    With `predicate` (where what a copula or an answer cue states begins), the spans are all of it:
    before the first stands at most a filler ("is exactly $12$", not "is the square of $4$"), and
    every span belongs to the run. Without, what stands before the run is a `_LEAD`."""
    run = [spans[-1]]
    for m in reversed(spans[:-1]):
        if not _SPAN_JOINER.fullmatch(sentence[m.end() : run[0].start()]):
            break
        run.insert(0, m)
    if predicate is not None and (len(run) < len(spans) or not _FILLER.fullmatch(sentence[predicate : run[0].start()])):
        return None
    if predicate is None and not _LEAD.fullmatch(sentence[: run[0].start()]):
        return None
    prose = _masked(sentence, spans)
    if _NUMBER.search(prose[run[-1].end() :]) or VALUE_WORDS.search(prose[run[-1].end() :]):
        return None  # "So $x = 2$ gives 5 solutions", "$12$ squared": the math is part of the statement
    texts = [t for t in (_span_text(m) for m in run) if t]
    return ", ".join(texts) or None


def _plain_answer(text: str, cued: bool) -> str | None:
    """Text stating an answer without math delimiters: words alone ("six", "Evelyn"), or a value
    with words after it ("12 apples", "3 hours ago"; normalisation reads them as units or refuses
    them). A number among other words ("she pays 18 dollars") is the answer only when `cued`."""
    text = _FILLER.sub("", text.strip().rstrip(".").strip().strip("*").strip(), count=1)  # it matches at 0
    if not text or not _NUMBER.search(text):
        return text or None
    tokens = text.split()
    units = len(tokens)
    while units > 0 and _UNIT_WORD.fullmatch(tokens[units - 1]):
        units -= 1
    value = tokens[:units]
    if value and not any(_UNIT_WORD.fullmatch(t) for t in value) and _NUMBER.search(" ".join(value)):
        return text
    numeric = [t.rstrip(",;") for t in tokens if _NUMBER.search(t)]
    if cued and len(numeric) == 1 and _QUANTITY.fullmatch(numeric[0]):  # "12th" is no quantity
        return numeric[0] if not VALUE_WORDS.search(text) and not _OPERATOR.search(text) else None
    return None
