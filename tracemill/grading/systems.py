"""Equations and systems as answers: named values (`x=5, y=2`, a `cases` system, `(x,y)=(5,2)`)
against each other and against a plain tuple (`(5,2)`).

Named values equal other named values name by name. Against a plain tuple they need an order,
which only the problem can give: the tuple of names its question writes ("Enter the ordered pair
$(x,y)$"), or the x, y, z of coordinates when it asks for a point. A named tuple states its own
order. Without the question no order is assumed, and `x=5, y=2` never equals `(5,2)`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tracemill.grading.normalize import items, shape

_NAME = r"[A-Za-z](?:_\{?\w+\}?)?"
_NAMED = re.compile(rf"^({_NAME})\s*&?=\s*([^=]+)$")
_SYSTEM_ENV = re.compile(r"^\\begin\{(cases|aligned|array|gathered)\}(?:\{[lcr|]*\})?(?P<body>.*)\\end\{\1\}$")
# What separates the equations of a system; a comma inside a value (`x=(1,2)`) leaves a piece
# that names nothing, and then the answer is no system.
_SYSTEM_SEP = re.compile(r"\\\\|\\text\{\s*and\s*\}|(?<![A-Za-z])and\b|;|,")  # `x=5and y=2`: spaces go in normalising
_NAME_TUPLE = re.compile(rf"^\(({_NAME}(?:,{_NAME})+)\)=(\(.+\))$")
# A question that asks for a point or an ordered tuple; `f(x,y)` (a letter before the bracket) is no tuple.
_ASKS_ORDERED = re.compile(r"ordered (?:pair|triple|tuple)|\bpoints?\b|coordinates|solution pairs?|intersect", re.I)
_QUESTION_TUPLE = re.compile(r"(?<![A-Za-z\\])\(\s*([A-Za-z](?:\s*,\s*[A-Za-z])+)\s*\)")
_COORDINATES = ("x", "y", "z")


@dataclass(frozen=True)
class Named:
    """Values by name, in the order written; `ordered` when written as a tuple (`(x,y)=(5,2)`)."""

    pairs: tuple[tuple[str, str], ...]
    ordered: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.pairs)


def align(gold: str, pred: str, question: str | None) -> tuple[str, str]:
    """Normalised gold and prediction, with named values rewritten so the plain comparisons
    settle them: both named -> each as a name-sorted list; one named against a plain tuple ->
    that side as a tuple, in the order `question` asks for (or its own, for a named tuple), else
    as a name-sorted list, which no tuple equals."""
    g_named, p_named = named_values(gold), named_values(pred)
    if g_named and p_named:
        return _as_list(g_named), _as_list(p_named)
    # Without an order, a name-sorted list: it never equals a tuple (math-verify would guess one).
    if g_named and shape(pred) == "tuple":
        return _as_tuple(g_named, question) or _as_list(g_named), pred
    if p_named and shape(gold) == "tuple":
        return gold, _as_tuple(p_named, question) or _as_list(p_named)
    return gold, pred


def named_values(s: str) -> Named | None:
    """`x=5,y=2`, `\\begin{cases}x=5\\\\y=2\\end{cases}`, `x=5\\text{and}y=2` or `(x,y)=(5,2)`
    (normalised text) as Named; None unless at least two distinct names each get one value."""
    if m := _NAME_TUPLE.match(s):
        names, values = m.group(1).split(","), m.group(2)
        if shape(values) != "tuple" or len(items(values, "tuple")) != len(names):
            return None
        return _distinct(tuple(zip(names, items(values, "tuple"))), ordered=True)
    if m := _SYSTEM_ENV.match(s):
        s = m.group("body")
    matches = [_NAMED.match(piece.strip()) for piece in _SYSTEM_SEP.split(s)]
    if len(matches) < 2 or not all(matches):
        return None
    return _distinct(tuple((m.group(1), m.group(2).strip()) for m in matches if m), ordered=False)


def question_order(question: str | None, names: Sequence[str]) -> tuple[str, ...] | None:
    """The order in which `question` asks for the values named `names`: a tuple of those names it
    writes, or x, y, z when it asks for a point in those coordinates; None when it asks for no
    ordered answer or does not tell."""
    if not question or not _ASKS_ORDERED.search(question):
        return None
    for m in _QUESTION_TUPLE.finditer(question):
        written = tuple(n.strip() for n in m.group(1).split(","))
        if sorted(written) == sorted(names):
            return written
    coordinates = _COORDINATES[: len(names)]
    return coordinates if sorted(names) == list(coordinates) else None


def _as_tuple(named: Named, question: str | None) -> str | None:
    order = question_order(question, named.names) or (named.names if named.ordered else None)
    if order is None:
        return None
    values = dict(named.pairs)
    return "(" + ",".join(values[name] for name in order) + ")"


def _as_list(named: Named) -> str:
    return ",".join(f"{name}={value}" for name, value in sorted(named.pairs))


def _distinct(pairs: tuple[tuple[str, str], ...], ordered: bool) -> Named | None:
    names = [name for name, _ in pairs]
    return Named(pairs, ordered) if len(set(names)) == len(names) and all(v for _, v in pairs) else None
