"""Answer normalisation and the plain comparisons that need no symbolic engine.

math-verify misses some surface forms (units, currency words, `\\sqrt(2)`, `1.5e3`) and is too
lenient on others (it rounds exact numbers, reads `\\{1,2\\}` as equal to the open interval `(1,2)`,
multiplies the letters of a word). Those cases are settled here, before and instead of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Bounds on numbers read exactly: a longer literal or larger exponent goes to the worker pool,
# whose hard timeout protects the caller (Fraction(Decimal("1e999999999")) would not return).
_MAX_DIGITS = 60
_MAX_EXPONENT = 60

# `\ ` is a LaTeX space, but not the second half of a row break `\\ ` (matrices)
_DROP = re.compile(r"\\left|\\right|\\displaystyle|\\!|\\,|\\;|\\:|\\quad|\\qquad|(?<!\\)\\ |~|\\big|\\Big")
_FRAC = re.compile(r"\\[dtc]frac")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree|\\circ")
_PERCENT = re.compile(r"\\%|%|\s*\\text\{\s*percent\s*\}|\s+percent$|\s+pct$")
_CURRENCY = re.compile(r"\\\$|\$|€|£|\bUSD\b")
_SQRT_PAREN = re.compile(r"\\sqrt\(([^()]*)\)")
_TEXT_MACRO = r"\\(?:text|textbf|textit|mbox|textrm)\s*\{([^{}]*)\}"
_TRAILING_UNIT = re.compile(r"\s*" + _TEXT_MACRO + r"(?:\^\{?[23]\}?)?\s*$")
_TEXT_ONLY = re.compile(r"^" + _TEXT_MACRO + r"$")
_WORDS = re.compile(r"^[A-Za-z]{2,}(?: [A-Za-z]+)*$")
_CHOICE = re.compile(r"^\(([A-Ea-e])\)$")
_VAR_PREFIX = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?=[^=]+$)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER_WORDS = re.compile(r"^(-?(?:\d+\.?\d*|\.\d+))\s+[A-Za-z][A-Za-z ./]*$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_TIMES_TEN = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot|\*)\s*10\^\{?([+-]?\d+)\}?$")
_LATEX_FRAC = re.compile(r"^([+-]?)(\d*)\\frac(?:\{([+-]?\d+)\}|(\d))(?:\{([+-]?\d+)\}|(\d))$")
_SLASH_FRAC = re.compile(r"^([+-]?\d+)\s*/\s*([+-]?\d+)$")


@dataclass(frozen=True)
class Answer:
    """A normalised answer: its canonical text and whether it was written as a percentage."""

    text: str
    percent: bool


def normalize(answer: str) -> Answer:
    s = answer.strip().replace("\n", " ")
    s = _unwrap_math(s)
    s = _DROP.sub("", s)
    s = _FRAC.sub(r"\\frac", s).replace("{,}", ",")
    s = _DEGREES.sub("", s)
    s, percent = _PERCENT.subn("", s)
    s = _CURRENCY.sub("", s)
    s = _SQRT_PAREN.sub(r"\\sqrt{\1}", s)
    s = s.strip().rstrip(".").strip()
    s = _strip_units(s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = _NUMBER_WORDS.sub(r"\1", s)
    s = " ".join(s.split())
    # `x = 3` is the number 3; `y = 2x + 3` stays an equation for math-verify to compare as one.
    if (value := _VAR_PREFIX.sub("", s)) != s and as_number(value) is not None:
        s = value
    return Answer(s, percent > 0)


def _unwrap_math(s: str) -> str:
    """Drop the delimiters of a math span: `$x$`, `\\(x\\)`, `\\[x\\]`."""
    for left, right in (("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right) - 1:
            s = s[len(left) : len(s) - len(right)].strip()
    return s.strip("$").strip()


def _strip_units(s: str) -> str:
    r"""`5\text{ cm}^2` -> `5`, but a bare `\text{Evelyn}` stays: only text after a quantity is a unit."""
    while (m := _TRAILING_UNIT.search(s)) and m.start() > 0 and s[: m.start()].rstrip()[-1:] in "0123456789}":
        s = s[: m.start()].rstrip()
    return s


def as_number(s: str) -> Fraction | None:
    """The exact value of a plain number (`-3`, `1,5` no; `0.25`, `1.5e3`, `1.5\\times10^{3}`,
    `\\frac{3}{4}`, `2\\frac{1}{4}`, `3/4`), or None for anything else."""
    if len(s) > _MAX_DIGITS:
        return None
    if _DECIMAL.match(s):
        return _decimal(s)
    if m := _TIMES_TEN.match(s):
        return _decimal(f"{m.group(1)}e{m.group(2)}")
    if m := _LATEX_FRAC.match(s):
        sign, whole, num, den = m.group(1), m.group(2), m.group(3) or m.group(4), m.group(5) or m.group(6)
        if int(den) == 0:
            return None
        value = Fraction(int(whole or 0)) + Fraction(int(num), int(den))
        return -value if sign == "-" else value
    if m := _SLASH_FRAC.match(s):
        return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) else None
    return None


def _decimal(s: str) -> Fraction | None:
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if abs(d.as_tuple().exponent) > _MAX_EXPONENT:
        return None
    return Fraction(d)


def text_of(s: str) -> str | None:
    r"""The words of a text answer (`\text{Evelyn}`, `Evelyn`, `\text{(C)}`), lower-cased; None if
    `s` is math. Words are compared as words: math-verify would multiply their letters."""
    if m := _TEXT_ONLY.match(s):
        s = m.group(1).strip()
    elif not _WORDS.match(s):
        return None
    if m := _CHOICE.match(s):
        s = m.group(1)
    return s.lower()


def shape(s: str) -> str:
    """`set` (`\\{1,2\\}`), `list` (`1, 2`), `tuple` (`(1,2)`, `[1,2)`: a pair or an interval), or `scalar`."""
    if s.startswith(r"\{") and s.endswith(r"\}") and _closing(s, 0) == len(s) - 2:
        return "set"
    if s[:1] in "([" and s[-1:] in ")]" and _closing(s, 0) == len(s) - 1 and _top_level_comma(s[1:-1]):
        return "tuple"
    return "list" if _top_level_comma(s) else "scalar"


def _closing(s: str, start: int) -> int:
    """Index of the bracket closing the one at `start` (any of `([{` / `)]}`, `\\{` / `\\}`), or -1."""
    depth = 0
    i = start
    while i < len(s):
        token = s[i : i + 2] if s[i] == "\\" and s[i + 1 : i + 2] in ("{", "}") else s[i]
        if token[-1] in "([{":
            depth += 1
        elif token[-1] in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += len(token)
    return -1


def _top_level_comma(s: str) -> bool:
    depth = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            return True
    return False


def compare_plain(gold: Answer, pred: Answer) -> bool | None:
    """A verdict where one needs no symbolic engine: same text, exact numbers, words, mismatched
    shapes. None when it takes math-verify."""
    if gold.text == pred.text and gold.percent == pred.percent:
        return True
    g_num, p_num = as_number(gold.text), as_number(pred.text)
    if g_num is not None and p_num is not None:
        return _numbers_equal(g_num, gold.percent, p_num, pred.percent)
    g_words, p_words = text_of(gold.text), text_of(pred.text)
    if g_words is not None or p_words is not None:
        return (g_words or _plain_words(gold.text)) == (p_words or _plain_words(pred.text))
    if {shape(gold.text), shape(pred.text)} in ({"set", "tuple"}, {"list", "tuple"}):
        return False  # an unordered answer never equals an ordered pair or an interval
    return None


def _plain_words(s: str) -> str:
    return s.strip("()").lower()


def _numbers_equal(gold: Fraction, gold_percent: bool, pred: Fraction, pred_percent: bool) -> bool:
    """Exact equality; a percentage on one side also matches its fraction on the other (28% = 0.28)."""
    if gold == pred:
        return True
    if gold_percent and not pred_percent:
        return pred == gold / 100
    if pred_percent and not gold_percent:
        return pred / 100 == gold
    return False
