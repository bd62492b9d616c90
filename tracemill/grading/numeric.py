"""Exact comparison of arithmetic answers by rigorous interval evaluation, without a symbolic engine.

An answer built from integers, single-letter variables, `+ - * / ^`, `\\frac`, `\\sqrt`, `\\pi`,
`e` and `\\sin \\cos \\tan \\cot \\sec \\csc \\ln \\exp` is read by a small parser and evaluated
with mpmath's interval arithmetic at fixed points. An interval encloses the true value, so two
disjoint intervals prove the answers differ (a sign flip, a changed constant, `1/2^99` against
`1/2^98`); two intervals that overlap and are narrower than `_NARROW` relative agree to about
forty digits at every point, which is taken as equal. Anything else — a decimal (math-verify
rounds those as configured), `i`, a relation, a list, an unknown command, an undefined or complex
value, a wide interval after cancellation — is undecided here and left to math-verify.

Evaluation is bounded (tokens, nesting, exponents, magnitudes), so a hostile answer costs
microseconds in the caller's process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from mpmath.ctx_iv import MPIntervalContext, ivmpf  # iv.mpf below: the context's own subclass of ivmpf

# A context of our own: its precision is ours to set, whatever else in the process uses mpmath.
iv = MPIntervalContext()
iv.dps = 50  # working precision of the intervals, in decimal digits
_NARROW = iv.mpf("1e-40")  # relative width below which an interval pins its value down
_MAX_TOKENS = 200
_MAX_DEPTH = 30
_MAX_EXPONENT = 1000  # |b| in a^b; with _MAX_MAGNITUDE this keeps every power cheap
_MAX_MAGNITUDE = iv.mpf("1e300")  # past it, argument reduction of sin(x) and the like gets expensive
# Values of up to three variables, one row per point: rationals that no identity singles out, each
# variable positive at one point and negative at another, so `\\sqrt{x^2}` and `x` disagree.
_POINTS = (
    (Fraction(7, 3), Fraction(-5, 11), Fraction(13, 17)),
    (Fraction(-19, 7), Fraction(3, 29), Fraction(-11, 5)),
    (Fraction(23, 13), Fraction(31, 9), Fraction(-2, 37)),
)

_TOKEN = re.compile(r"\\[A-Za-z]+|\d|[A-Za-z]|[-+*/^(){}\[\]]|\s+|.")
_FUNCS: dict[str, Callable] = {
    r"\sin": iv.sin,
    r"\cos": iv.cos,
    r"\tan": iv.tan,
    r"\cot": iv.cot,
    r"\sec": iv.sec,
    r"\csc": iv.csc,
    r"\ln": iv.ln,
    r"\exp": iv.exp,
}
_TIMES = (r"\cdot", r"\times", "*")
_DIVIDE = ("/", r"\div")


class Undecided(Exception):
    """The text is not an expression this module reads, or its value is not pinned down."""


@dataclass(frozen=True)
class Expression:
    evaluate: Callable[[dict[str, ivmpf]], ivmpf]
    symbols: frozenset[str]


def compare_numeric(gold: str, pred: str) -> bool | None:
    """True when both normalised answers take the same value at every point, False when their
    values provably differ at one, None when this cannot tell."""
    try:
        g, p = parse(gold), parse(pred)
    except Undecided:
        return None
    if g.symbols != p.symbols:
        return None  # other variables: math-verify decides what that means
    names = sorted(g.symbols)
    if len(names) > len(_POINTS[0]):
        return None
    points = _POINTS if names else _POINTS[:1]
    for row in points:
        env = {name: iv.mpf(v.numerator) / v.denominator for name, v in zip(names, row)}
        try:
            gv, pv = _checked(g.evaluate(env)), _checked(p.evaluate(env))
        except (Undecided, ArithmeticError, ValueError, TypeError):
            return None  # undefined (a pole, the root of a negative number) or not real there
        if gv.b < pv.a or pv.b < gv.a:
            return False
        if not (_narrow(gv) and _narrow(pv)):
            return None
    return True


def _narrow(x: ivmpf) -> bool:
    return x.delta <= _NARROW * max(abs(x.a), abs(x.b), iv.mpf(1)).b


def _checked(x: object) -> ivmpf:
    if not isinstance(x, iv.mpf) or not (abs(x.a) < _MAX_MAGNITUDE and abs(x.b) < _MAX_MAGNITUDE):
        raise Undecided("not a finite real value")
    return x


def parse(text: str) -> Expression:
    """The expression `text` states, or Undecided."""
    tokens = [t for t in _TOKEN.findall(text) if not t.isspace()]
    if not tokens or len(tokens) > _MAX_TOKENS:
        raise Undecided(text)
    parser = _Parser(tokens)
    expr = parser.sum(0)
    if parser.peek() is not None:
        raise Undecided(f"unread {parser.peek()!r}")
    return expr


Node = Expression


def _const(value: Callable[[], ivmpf]) -> Node:
    return Node(lambda env: value(), frozenset())


def _binary(op: Callable[[ivmpf, ivmpf], ivmpf], a: Node, b: Node) -> Node:
    return Node(lambda env: _checked(op(a.evaluate(env), b.evaluate(env))), a.symbols | b.symbols)


def _power(base: ivmpf, exponent: ivmpf) -> ivmpf:
    if abs(exponent.a) > _MAX_EXPONENT or abs(exponent.b) > _MAX_EXPONENT:
        raise Undecided("exponent too large")
    if exponent.a == exponent.b and exponent.a == int(exponent.a.a):
        return base ** int(exponent.a.a)  # an integer power of a negative base is real
    if base.a <= 0:
        raise Undecided("non-integer power of a number that is not positive")
    return iv.exp(exponent * iv.ln(base))


class _Parser:
    """Recursive descent over LaTeX tokens. Precedence: sums, products (explicit and implicit),
    unary signs, powers, atoms. Readings LaTeX leaves open are refused, not guessed: an implicit
    product after a division (`1/2x`), a multi-digit unbraced argument (`x^23`, `\\frac123`), a
    number right after a factor (`x2`)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Undecided(f"expected {expected!r}, found {token!r}")
        self.i += 1
        return token

    def sum(self, depth: int) -> Node:
        if depth > _MAX_DEPTH:
            raise Undecided("nested too deep")
        node = self.product(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.product(depth)
            node = _binary((lambda a, b: a + b) if op == "+" else (lambda a, b: a - b), node, right)
        return node

    def product(self, depth: int) -> Node:
        node = self.signed(depth)
        while (token := self.peek()) is not None:
            if token in _TIMES:
                self.take()
                node = _binary(lambda a, b: a * b, node, self.signed(depth))
            elif token in _DIVIDE:
                self.take()
                node = _binary(lambda a, b: a / b, node, self.signed(depth))
                if self._starts_atom():
                    raise Undecided("implicit product after a division")
            elif self._starts_atom():
                if (self.peek() or "").isdigit():
                    raise Undecided("a number after a factor")
                node = _binary(lambda a, b: a * b, node, self.power(depth))
            else:
                break
        return node

    def signed(self, depth: int) -> Node:
        if self.peek() in ("+", "-"):
            negate = self.take() == "-"
            node = self.signed(depth)
            return Node(lambda env: -node.evaluate(env), node.symbols) if negate else node
        return self.power(depth)

    def power(self, depth: int) -> Node:
        node = self.atom(depth)
        if self.peek() == "^":
            self.take()
            exponent = self.argument(depth)
            node = _binary(_power, node, exponent)
            if self.peek() == "^":
                raise Undecided("a power of a power without braces")
        return node

    def _starts_atom(self) -> bool:
        token = self.peek()
        return token is not None and (
            token in ("(", "{") or token.isalnum() or token in _FUNCS or token in (r"\frac", r"\sqrt", r"\pi")
        )

    def argument(self, depth: int) -> Node:
        """A macro's or a power's argument: `{...}` or one character (`\\frac12`, `x^2`)."""
        token = self.peek()
        if token == "{":
            return self.group(depth)
        if token is not None and len(token) == 1 and token.isalnum():
            return self.atom(depth, single=True)
        raise Undecided(f"argument {token!r}")

    def group(self, depth: int) -> Node:
        close = {"(": ")", "{": "}"}[self.take()]
        node = self.sum(depth + 1)
        self.take(close)
        return node

    def atom(self, depth: int, single: bool = False) -> Node:
        token = self.peek()
        if token is None:
            raise Undecided("expression ends early")
        if token.isdigit():
            digits = self.take()
            while not single and (self.peek() or "").isdigit():
                digits += self.take()
            return _const(lambda: iv.mpf(int(digits)))
        if token in ("(", "{"):
            return self.group(depth)
        if len(token) == 1 and token.isalpha():
            self.take()
            if token == "e":
                return _const(lambda: iv.e)
            if token == "i":
                raise Undecided("the imaginary unit")  # intervals are real
            return Node(lambda env: env[token], frozenset(token))
        self.take()
        if token == r"\pi":
            return _const(lambda: iv.pi)
        if token == r"\frac":
            num, den = self.argument(depth + 1), self.argument(depth + 1)
            return _binary(lambda a, b: a / b, num, den)
        if token == r"\sqrt":
            if self.peek() == "[":
                self.take()
                index = self.sum(depth + 1)
                self.take("]")
                radicand = self.argument(depth + 1)
                return _binary(lambda r, n: _power(r, 1 / n), radicand, index)
            radicand = self.argument(depth + 1)
            return Node(lambda env: _checked(iv.sqrt(radicand.evaluate(env))), radicand.symbols)
        if token in _FUNCS and self.peek() in ("(", "{"):
            func, arg = _FUNCS[token], self.group(depth + 1)
            return Node(lambda env: _checked(func(arg.evaluate(env))), arg.symbols)
        raise Undecided(f"token {token!r}")
