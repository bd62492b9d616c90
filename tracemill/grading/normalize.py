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
from typing import TypeGuard, cast

from tracemill.grading.numeric import compare_numeric

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
_NUMBER_WORDS = re.compile(r"^(-?(?:\d[\d,]*\.?\d*|\.\d+))\s+[A-Za-z][A-Za-z ./'-]*$")
# Words after a number that change what it states ("12 thousand", "12 squared", "12 or more"):
# such a number is no value with units. Normalised text has no space before them (`12thousand`).
VALUE_WORDS = re.compile(
    r"(?<![\\A-Za-z])(?:hundred|thousand|million|billion|trillion|dozen|squared|cubed|factorial|plus|minus|times|over"
    r"|divided|or|more|less|fewer|than|least|most|not)\b",
    re.IGNORECASE,
)
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_TIMES_TEN = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot|\*)\s*10\^\{?([+-]?\d+)\}?$")
_LATEX_FRAC = re.compile(r"^([+-]?)(\d*)\\frac(?:\{([+-]?\d+)\}|(\d))(?:\{([+-]?\d+)\}|(\d))$")
_SLASH_FRAC = re.compile(r"^([+-]?\d+)\s*/\s*([+-]?\d+)$")
# Thousands groups set apart by `,\!`, a thin space `\,` or a plain space: `12,\! 345`, `2 500`.
_GROUPED = re.compile(r"(?<=\d),\\!\s*(?=\d{3}\b)|(?<=\d)\\,(?=\d{3}\b)")
_SPACED_THOUSANDS = re.compile(r"^-?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_BOLD = re.compile(r"^(?:\\mathbf|\\textbf|\\boldsymbol)\s*\{(.*)\}$|^\*\*(.*)\*\*$")
# sympy's printer, as tool-integrated traces copy it: `3*pi/4`, `sqrt(2)/2`, `exp(2) + 1`, `x**2`, `2.0 + 3.0*I`.
_PROGRAM = re.compile(r"\*\*|\*|\b(?:sqrt|exp|log|sin|cos|tan|cot|sec|csc|pi|oo|I)\b")
_PROGRAM_FUNC = re.compile(r"\b(sqrt|log|sin|cos|tan|cot|sec|csc)\(")
_PROGRAM_NAMES = (
    (re.compile(r"\bpi\b"), r"\\pi "),
    (re.compile(r"\boo\b"), r"\\infty "),
    (re.compile(r"\bI\b"), "i"),
    (re.compile(r"\bE\b"), "e"),
)
_NUMBER_TIMES_NAME = re.compile(r"(?<=[\d)])\*(?=[A-Za-z\\(])")
_QUANTIFIER = re.compile(r"\\forall|\\exists|\bfor all\b|\bthere exists?\b", re.IGNORECASE)
_ELLIPSIS = re.compile(r"\\[lc]?dots|\\ldots|\.\.\.|…")
_NEQ = re.compile(r"\\neq?(?![A-Za-z])|!=")
# `[\begin{array}{cc}..\end{array}]` (after `\left`/`\right` are dropped) and bmatrix are pmatrix:
# the brackets are typography. vmatrix is a determinant and stays.
_MATRIX = re.compile(
    r"\\begin\{[pb]matrix\}(?P<body>.*?)\\end\{[pb]matrix\}"
    r"|[\[(]\s*\\begin\{array\}\{[lcr|\s]*\}(?P<body2>.*?)\\end\{array\}\s*[\])]"
)
_RATIO = re.compile(r"(?<![:=<>\\])\s*:\s*(?![=])")


@dataclass(frozen=True)
class Answer:
    """A normalised answer: its canonical text, whether it was written as a percentage, and
    whether it was a list in TeX grouping braces (`{1,3}`)."""

    text: str
    percent: bool
    grouped: bool = False


def normalize(answer: str) -> Answer:
    s = answer.strip().replace("\n", " ").replace("...", r"\ldots ").replace("…", r"\ldots ")
    s = _unwrap_math(s)
    if m := _BOLD.match(s):
        s = (m.group(1) or m.group(2)).strip()
    grouped = False
    while s.startswith("{") and _closing(s, 0) == len(s) - 1:
        s = s[1:-1].strip()  # TeX grouping (`{35 cm,4}`, `\mathbf{{7}}`); a set is `\{..\}`
        grouped = _top_level_comma(s)
    s = _GROUPED.sub("", s)
    s = _DROP.sub("", s)
    if "\\" not in s and _PROGRAM.search(s):
        s = _program_to_latex(s)
    s = _FRAC.sub(r"\\frac", s).replace("{,}", ",")
    s = _NEQ.sub(r"\\neq ", s)
    s = _MATRIX.sub(lambda m: "\\begin{pmatrix}" + (m.group("body") or m.group("body2")) + "\\end{pmatrix}", s)
    s = _DEGREES.sub("", s)
    s, percent = _PERCENT.subn("", s)
    s = _CURRENCY.sub("", s)
    s = _SQRT_PAREN.sub(r"\\sqrt{\1}", s)
    s = s.strip().rstrip(".").strip()
    s = _without_units(s)
    if _THOUSANDS.match(s) or _SPACED_THOUSANDS.match(s):
        s = s.replace(",", "").replace(" ", "")
    s = " ".join(s.split())
    if (value := words_to_number(s)) is not None:
        s = str(value)
    s = as_interval(s) or s
    s = _tight(s)
    # `x = 3` is the number 3; `y = 2x + 3` stays an equation for math-verify to compare as one.
    if (bare := _VAR_PREFIX.sub("", s)) != s and as_number(bare) is not None:
        s = bare
    return Answer(s, percent > 0, grouped)


def grouped_alike(gold: Answer, pred: Answer) -> tuple[str, str]:
    """The texts of both, a grouped list (`{1,3}`) read as one object: a tuple in its order
    against a tuple, as math-verify reads it; a list against anything else."""

    def read(a: Answer, other: Answer) -> str:
        return f"({a.text})" if a.grouped and shape(other.text) == "tuple" else a.text

    return read(gold, pred), read(pred, gold)


def _unwrap_math(s: str) -> str:
    """Drop the delimiters of a math span: `$x$`, `\\(x\\)`, `\\[x\\]`."""
    for left, right in (("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right) - 1:
            s = s[len(left) : len(s) - len(right)].strip()
    return s.strip("$").strip()


def _strip_units(s: str) -> str:
    r"""`5\text{ cm}^2` -> `5`, but a bare `\text{Evelyn}` stays: only text after a quantity is a unit."""
    while (
        (m := _TRAILING_UNIT.search(s))
        and m.start() > 0
        and s[: m.start()].rstrip()[-1:] in "0123456789}"
        and not VALUE_WORDS.search(m.group(1))  # `12\text{ thousand}` is no 12 with a unit
    ):
        s = s[: m.start()].rstrip()
    return s


def _without_units(s: str) -> str:
    """Units after the answer, or after each element of a list (`35 cm, 4`: a box per element)."""
    parts = _split(s, ",")
    if len(parts) == 1:
        return _drop_unit_words(_strip_units(s))
    bare = [_drop_unit_words(_strip_units(part)) for part in parts]
    return ",".join(bare) if bare != parts else s


def _drop_unit_words(s: str) -> str:
    """`45,000 dollars` -> `45,000`; a number followed by words that change it stays as written."""
    if (m := _NUMBER_WORDS.match(s)) and not VALUE_WORDS.search(s):
        return m.group(1)
    return s


def _program_to_latex(s: str) -> str:
    """sympy's printed form as LaTeX math-verify reads: `3*pi/4` -> `3\\cdot\\pi/4`, `x**2` -> `x^2`."""
    s = s.replace("**", "^")
    s = _PROGRAM_FUNC.sub(r"\\\1(", s)
    s = _SQRT_PAREN.sub(r"\\sqrt{\1}", s)
    s = re.sub(r"\bexp\(([^()]*)\)", r"e^{\1}", s)
    for name, latex in _PROGRAM_NAMES:
        s = name.sub(latex, s)
    s = _NUMBER_TIMES_NAME.sub("", s)  # `5*i` is `5i`: math-verify reads `5\cdot i` as something else
    s = re.sub(r"\^\(([^()]*)\)", r"^{\1}", s)
    return s.replace("*", r"\cdot ").strip()


def _tight(s: str) -> str:
    """Spaces only where they separate words or a command from a letter: `(2, \\infty)` = `(2,\\infty)`."""
    return re.sub(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])", "", s)


_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def words_to_number(s: str) -> int | None:
    """An English number word answer (`twenty-four`, `one hundred and five`), or None."""
    tokens = s.lower().replace("-", " ").split()
    if not tokens or any(t not in _UNITS and t not in _TENS and t not in _SCALES and t != "and" for t in tokens):
        return None
    if tokens[0] in _SCALES or tokens[-1] == "and":
        return None
    total = current = 0
    for t in tokens:
        if t in _UNITS:
            current += _UNITS[t]
        elif t in _TENS:
            current += _TENS[t]
        elif t == "hundred":
            current *= 100
        elif t in _SCALES:
            total += current * _SCALES[t]
            current = 0
    return total + current


# --- intervals and the inequalities that state them -------------------------------------------

_REL = re.compile(r"\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt|<=|>=|=<|=>|<|>")
_REL_KIND = {
    "\\leqslant": "<=",
    "\\geqslant": ">=",
    "\\leq": "<=",
    "\\geq": ">=",
    "\\le": "<=",
    "\\ge": ">=",
    "\\lt": "<",
    "\\gt": ">",
    "<=": "<=",
    ">=": ">=",
    "=<": "<=",
    "=>": ">=",
    "<": "<",
    ">": ">",
}
_OR = re.compile(r"\\text\{\s*or\s*\}|\\(?:vee|lor)\b|\bor\b|\\cup")
_AND = re.compile(r"\\text\{\s*and\s*\}|\\(?:wedge|land)\b|\band\b")
_VARIABLE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?$")
_NAMED = re.compile(r"^([A-Za-z](?:_\{?\w+\}?)?)\s*=\s*([^=]+)$")
_PMATRIX = ("\\begin{pmatrix}", "\\end{pmatrix}")
_HOLE = re.compile(r"^([A-Za-z](?:_\{?\w+\}?)?)\s*\\neq\s*(.+)$")
_IN = re.compile(r"^([A-Za-z](?:_\{?\w+\}?)?)\s*\\in\s*(.+)$")
_INF = ("\\infty", "+\\infty", "\\infty", "-\\infty")
Bound = tuple[str, bool]  # (endpoint, closed)


def as_interval(s: str) -> str | None:
    r"""An answer stated as inequalities in one variable, in interval notation: `1 < x < 7.5` ->
    `(1,7.5)`, `t \ge \sqrt3` -> `[\sqrt3,\infty)`, `x<2 or x>3` -> `(-\infty,2)\cup(3,\infty)`;
    `x \in S` -> `S`. None when `s` is not such a statement."""
    if m := _IN.match(s):
        return m.group(2).strip()
    if not _REL.search(s) and not _HOLE.match(s):
        return None
    pieces, variable = [], None
    for alternative in _OR.split(s):
        lower: Bound = ("-\\infty", False)
        upper: Bound = ("\\infty", False)
        holes = []
        for clause in _AND.split(alternative):
            clause = clause.strip()
            if m := _HOLE.match(clause):
                bounds: tuple[str, Bound | None, Bound | None] | None = (m.group(1), None, None)
                holes.append(m.group(2))
            else:
                bounds = _bounds(clause)
            if bounds is None or (variable is not None and bounds[0] != variable):
                return None
            variable = bounds[0]
            lower = bounds[1] or lower
            upper = bounds[2] or upper
        cut = _cut(lower, upper, holes)
        if cut is None:
            return None
        pieces += cut
    return "\\cup".join(pieces)


def _cut(lower: Bound, upper: Bound, holes: list[str]) -> list[str] | None:
    """`lower..upper` in interval notation, split at the excluded points `holes` (`x \\neq 9`);
    None unless every hole is a number strictly inside, so the pieces come out in order."""
    maybe = [as_number(h) for h in holes]
    if None in maybe:
        return None
    values = cast(list[Fraction], maybe)  # no None, as checked above
    order = sorted(range(len(holes)), key=lambda i: values[i])
    low, high = as_number(lower[0]), as_number(upper[0])
    if any((low is not None and values[i] <= low) or (high is not None and values[i] >= high) for i in order):
        return None
    ends = [lower] + [(holes[i], False) for i in order for _ in (0, 1)] + [upper]
    return [f"{'[' if a[1] else '('}{a[0]},{b[0]}{']' if b[1] else ')'}" for a, b in zip(ends[::2], ends[1::2])]


def _bounds(clause: str) -> tuple[str, Bound | None, Bound | None] | None:
    """(variable, lower bound, upper bound) of `a < x`, `x >= b` or `a < x <= b`; None otherwise."""
    parts = _REL.split(clause)
    ops = [_REL_KIND[o] for o in _REL.findall(clause)]
    parts = [p.strip() for p in parts]
    if any(not p for p in parts) or len(ops) not in (1, 2):
        return None
    if len(ops) == 2:
        if not _VARIABLE.match(parts[1]) or ops[0][0] != ops[1][0]:
            return None
        lo, hi = (0, 2) if ops[0][0] == "<" else (2, 0)
        return parts[1], (parts[lo], "=" in ops[0]), (parts[hi], "=" in ops[1])
    left, right, op = parts[0], parts[1], ops[0]
    if left[:1] == "-" and _VARIABLE.match(left[1:]) and (number := as_number(right)) is not None:
        # `-x > -1` is `x < 1`
        left, right, op = left[1:], str(-number), op.replace("<", "#").replace(">", "<").replace("#", ">")
    if _VARIABLE.match(left) and not _VARIABLE.match(right):
        variable, value, op = left, right, op
    elif _VARIABLE.match(right) and not _VARIABLE.match(left):
        variable, value, op = right, left, op.replace("<", "#").replace(">", "<").replace("#", ">")
    else:
        return None
    if value in _INF:
        return variable, None, None  # `x < \infty` bounds nothing
    bound = (value, "=" in op)
    return (variable, None, bound) if op[0] == "<" else (variable, bound, None)


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
    exponent = d.as_tuple().exponent  # an int: the patterns that call this admit finite numbers only
    if not isinstance(exponent, int) or abs(exponent) > _MAX_EXPONENT:
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
    shapes, and the kinds a symbolic engine calls equal too easily (quantified statements,
    sequences with an ellipsis, ratios), which are decided here term by term. None when it takes
    math-verify."""
    if gold.text == pred.text and gold.percent == pred.percent:
        return True
    g_num, p_num = as_number(gold.text), as_number(pred.text)
    if g_num is not None and p_num is not None:
        return _numbers_equal(g_num, gold.percent, p_num, pred.percent)
    if (g_num is not None and VALUE_WORDS.search(pred.text)) or (p_num is not None and VALUE_WORDS.search(gold.text)):
        return False  # `12\text{ thousand}`, `12 or more`: a number with words that change what it states
    g_words, p_words = text_of(gold.text), text_of(pred.text)
    if g_words is not None or p_words is not None:
        return (g_words or _plain_words(gold.text)) == (p_words or _plain_words(pred.text))
    if _QUANTIFIER.search(gold.text) or _QUANTIFIER.search(pred.text):
        return False  # a restricted statement is another statement; equal text was settled above
    if _ELLIPSIS.search(gold.text) or _ELLIPSIS.search(pred.text):
        return _termwise(_split(_ELLIPSIS.sub("…", gold.text), ","), _split(_ELLIPSIS.sub("…", pred.text), ","))
    g_ratio, p_ratio = _ratio(gold.text), _ratio(pred.text)
    if g_ratio or p_ratio:
        return _termwise(g_ratio or [gold.text], p_ratio or [pred.text])
    g_cells, p_cells = _matrix(gold.text), _matrix(pred.text)
    if g_cells is not None and p_cells is not None:
        if [len(r) for r in g_cells] != [len(r) for r in p_cells]:
            return False
        return _all_equal(
            [_element_equal(g, p) for g_row, p_row in zip(g_cells, p_cells) for g, p in zip(g_row, p_row)]
        )
    g_shape, p_shape = shape(gold.text), shape(pred.text)
    if {g_shape, p_shape} in ({"set", "tuple"}, {"list", "tuple"}):
        return False  # an unordered answer never equals an ordered pair or an interval
    if {g_shape, p_shape} == {"list", "scalar"} and (
        as_number(gold.text) is not None or as_number(pred.text) is not None
    ):
        return False  # `32, 349` lists two numbers: a comma and a space group no thousands
    return _elementwise(gold.text, g_shape, pred.text, p_shape)


def _split(s: str, sep: str) -> list[str]:
    """`s` split at top-level `sep` (not inside brackets or braces)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, s[start:]]]


def _ratio(s: str) -> list[str] | None:
    """The terms of `a:b:c` (after any `name =`), or None if `s` is no ratio."""
    s = s.rsplit("=", 1)[-1]  # `S_1:S_2 = 7:32` states the ratio 7:32; `A:B = 1` states no ratio
    terms = _RATIO.split(s)
    return terms if len(terms) > 1 and all(terms) else None


def _termwise(gold: list[str], pred: list[str]) -> bool:
    """Equal only when every term is plainly equal, in order: no symbolic engine's leniency."""
    return len(gold) == len(pred) and all(_term_equal(normalize(g), normalize(p)) for g, p in zip(gold, pred))


def _term_equal(gold: Answer, pred: Answer) -> bool:
    if gold.text == pred.text:
        return True
    g_num, p_num = as_number(gold.text), as_number(pred.text)
    return g_num is not None and p_num is not None and _numbers_equal(g_num, gold.percent, p_num, pred.percent)


def _elementwise(gold: str, g_shape: str, pred: str, p_shape: str) -> bool | None:
    """Lists, sets and tuples (intervals too) compared element by element without math-verify:
    in order for a tuple, as multisets otherwise. None when an element pair is undecided."""
    if g_shape == "scalar" or p_shape == "scalar" or (g_shape == "tuple") != (p_shape == "tuple"):
        return None
    g_items, p_items = items(gold, g_shape), items(pred, p_shape)
    if len(g_items) != len(p_items):
        return False if all(as_number(x) is not None for x in g_items + p_items) else None
    if g_shape == "tuple":
        same = [_element_equal(g, p) for g, p in zip(g_items, p_items)]
        if False not in same and None not in same and gold[0] + gold[-1] != pred[0] + pred[-1]:
            return False
        return _all_equal(same)
    g_named, p_named = [_NAMED.match(x) for x in g_items], [_NAMED.match(x) for x in p_items]
    if _all_matched(g_named) and _all_matched(p_named):
        # `a=4, b=7` and `b=7, a=4`: values compared by name
        g_by, p_by = ({m.group(1): m.group(2) for m in named} for named in (g_named, p_named))
        if len(g_by) != len(g_items) or set(g_by) != set(p_by):
            return None
        return _all_equal([_element_equal(g_by[k], p_by[k]) for k in g_by])
    if _all_matched(g_named) and not any(p_named):
        # `y_1=.., y_2=..` answered `.., ..`: in the order of the names
        return _all_equal([_element_equal(m.group(2), p) for m, p in zip(g_named, p_items)])
    return _same_multiset(g_items, p_items)


def _all_matched(matches: list[re.Match[str] | None]) -> TypeGuard[list[re.Match[str]]]:
    return all(matches)


def _all_equal(same: list[bool | None]) -> bool | None:
    return False if False in same else None if None in same else True


def _matrix(s: str) -> list[list[str]] | None:
    """The cells of a `\\begin{pmatrix}` answer (every matrix environment is one after
    normalising), row by row; None if `s` is no single matrix."""
    if not (s.startswith(_PMATRIX[0]) and s.endswith(_PMATRIX[1])) or s.count(_PMATRIX[0]) != 1:
        return None
    rows = s[len(_PMATRIX[0]) : -len(_PMATRIX[1])].split("\\\\")
    return [[cell.strip() for cell in row.split("&")] for row in rows if row.strip()]


def _same_multiset(gold: list[str], pred: list[str]) -> bool | None:
    """Equal element counts matched greedily (equality is an equivalence, so greedy suffices);
    None when an undecided comparison could change the matching."""
    left = list(pred)
    for g in gold:
        same = [_element_equal(g, p) for p in left]
        if True in same:
            del left[same.index(True)]
        elif None in same:
            return None
        else:
            return False
    return True


_INFINITIES = {"\\infty": "+", "+\\infty": "+", "-\\infty": "-"}


def _element_equal(gold: str, pred: str) -> bool | None:
    """One element: exact numbers, infinities by sign, otherwise the interval evaluation."""
    if gold == pred:
        return True
    g_num, p_num = as_number(gold), as_number(pred)
    if g_num is not None and p_num is not None:
        return g_num == p_num
    if gold in _INFINITIES or pred in _INFINITIES:
        return _INFINITIES.get(gold, gold) == _INFINITIES.get(pred, pred)
    return compare_numeric(gold, pred)


def items(s: str, kind: str) -> list[str]:
    """The elements of an answer of `shape` `kind`."""
    inner = s[2:-2] if kind == "set" else s[1:-1] if kind == "tuple" else s
    return _split(inner, ",")


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
