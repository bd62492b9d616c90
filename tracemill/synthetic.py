"""Seeded synthetic problems with exact answers and worked solutions, at graded difficulty.

Math kinds: multi-step arithmetic, fractions, percentages, linear equations, remainders; level 1
uses small numbers and one step, higher levels larger numbers and more steps. Each problem carries
its solution as steps (a sentence, the python that computes it, that code's exact output) in its
metadata, so the bootstrap corpus can render it in every format the pipeline uses. A handful of
tiny code problems come with MBPP-style asserts. The eval split is drawn from its own random
stream and never shares a question with train.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tracemill import records
from tracemill.errors import ParamsError
from tracemill.params import at_least, bounded, choices

MATH_KINDS = ("arithmetic", "fractions", "percent", "linear", "remainder")
NAMES = ("Ava", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena", "Milo", "Nora", "Omar", "Pia")
ITEMS = ("apples", "marbles", "books", "stickers", "coins", "pencils", "cards", "shells")


@dataclass(frozen=True)
class SyntheticParams:
    seed: int = at_least(0, default=0)
    kinds: list[str] = choices(*MATH_KINDS, default_factory=lambda: list(MATH_KINDS))
    levels: list[int] = bounded(1, 4, default_factory=lambda: [1, 2, 3, 4])
    train_per_level: int = at_least(0, default=400)  # per kind and level: enough variety that a model learns to copy, not memorize
    eval_per_level: int = at_least(0, default=10)  # per kind and level, held out
    code_problems: int = at_least(0, default=6)  # tiny code problems with tests (train and eval alike)

    def check(self) -> None:
        if not self.levels:
            raise ParamsError("params 'synthetic.levels' must be a non-empty list of levels 1..4")


Step = dict[str, str]  # {"text", "code", "output"}


# Levels 1-2 are one step over small fact tables (a tiny model can learn them by heart, so it can
# answer without running code); levels 3-4 take more steps and larger numbers (code must run).
SIZES = (6, 30, 60, 400)  # largest operand per level


def _num(level: int, rng: random.Random, low: int = 2) -> int:
    return rng.randint(low, SIZES[level - 1])


def _fmt(value: Fraction | int) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def arithmetic(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = _num(level, rng), _num(level if level > 2 else 1, rng)
    add = {"text": f"Add the {b} new {item} to the {a} {item}.", "code": f"total = {a} + {b}\nprint(total)", "output": str(a + b)}
    if level <= 2:
        return f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?", str(a + b), [add]
    c = rng.randint(1, a + b - 1)
    q = f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. How many {item} does {name} have now?"
    steps = [add, {"text": f"Take away the {c} given away.", "code": f"left = total - {c}\nprint(left)", "output": str(a + b - c)}]
    answer = a + b - c
    if level == 4:
        k = rng.randint(2, 5)
        q = (f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. Then {name} buys {k} times as many "
             f"{item} as {name} has left. How many {item} does {name} buy?")
        steps.append({"text": f"Multiply by {k}.", "code": f"bought = left * {k}\nprint(bought)", "output": str(answer * k)})
        answer *= k
    return q, str(answer), steps


def fractions_kind(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    if level <= 2:  # one prime denominator: add the numerators, nothing to reduce
        b = d = rng.choice(((5, 7), (7, 11, 13))[level - 1])
        a, c = rng.randint(1, b - 1), rng.randint(1, b - 1)
    else:
        top = (12, 20)[level - 3]
        a, c = rng.randint(1, top), rng.randint(1, top)
        b, d = rng.randint(2, top + 1), rng.randint(2, top + 1)
    x, y = Fraction(a, b), Fraction(c, d)
    op = "*" if level == 4 and rng.random() < 0.5 else "+"
    value = x + y if op == "+" else x * y
    word = "the sum" if op == "+" else "the product"
    name = rng.choice(NAMES)
    q = f"{name} asks: what is {word} of {a}/{b} and {c}/{d}? Give the answer as a fraction in lowest terms."
    steps = [{"text": f"Compute {word} exactly with fractions.",
              "code": f"from fractions import Fraction\nvalue = Fraction({a}, {b}) {op} Fraction({c}, {d})\nprint(value)", "output": _fmt(value)}]
    return q, _fmt(value), steps


def percent(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    price = rng.randint(1, (20, 50, 60, 200)[level - 1]) * (2, 2, 20, 20)[level - 1]
    rate = rng.choice(((50,), (50,), (10, 20, 25, 50), (5, 15, 30, 35, 40, 45, 60, 75))[level - 1])
    name, item = rng.choice(NAMES), rng.choice(("jacket", "lamp", "bike", "game", "chair"))
    new = Fraction(price * (100 - rate), 100)
    q = f"{name}'s {item} costs {price} dollars. Its price is reduced by {rate}%. What is the new price in dollars?"
    steps = [{"text": f"The discount is {rate}% of {price}.", "code": f"discount = {price} * {rate} / 100\nprint(discount)", "output": str(price * rate / 100)},
             {"text": "Subtract the discount from the price.", "code": f"new_price = {price} - discount\nprint(new_price)", "output": str(price - price * rate / 100)}]
    return q, _fmt(new), steps


def linear(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    var = rng.choice("xynk")
    if level <= 2:  # one inverse operation over a small table: subtract (level 1) or divide (level 2)
        x, b = _num(1, rng, low=1), _num(1, rng, low=1)
        if level == 1:
            q, code = f"Solve for {var}: {var} + {b} = {x + b}.", f"{var} = {x + b} - {b}\nprint({var})"
            text = f"Subtract {b} from both sides."
        else:
            b = rng.randint(2, 5)
            q, code = f"Solve for {var}: {b}{var} = {b * x}.", f"{var} = {b * x} // {b}\nprint({var})"
            text = f"Divide both sides by {b}."
        return q, str(x), [{"text": text, "code": code, "output": str(x)}]
    x = rng.randint(-((12, 40)[level - 3]), (12, 40)[level - 3])
    a = rng.randint(2, (9, 15)[level - 3])
    b = rng.randint(-(20 * level), 20 * level)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    q = f"Solve for {var}: {a}{var} {sign} {abs(b)} = {c}."
    steps = [{"text": f"Move {b} to the right side and divide by {a}.", "code": f"{var} = ({c} - ({b})) / {a}\nprint(int({var}))", "output": str(x)}]
    return q, str(x), steps


def remainder(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    n = rng.randint(10, (20, 50, 500, 5000)[level - 1])
    d = rng.randint(2, (5, 9, 13, 30)[level - 1])
    name = rng.choice(NAMES)
    q = f"{name} packs {n} eggs into boxes of {d}. How many eggs are left over?"
    steps = [{"text": f"The leftover is the remainder of {n} divided by {d}.", "code": f"print({n} % {d})", "output": str(n % d)}]
    return q, str(n % d), steps


GENERATORS: dict[str, Callable[[int, random.Random], tuple[str, str, list[Step]]]] = {
    "arithmetic": arithmetic, "fractions": fractions_kind, "percent": percent, "linear": linear, "remainder": remainder,
}

CODE_PROBLEMS = [
    ("Write a function add_nums(a, b) that returns the sum of a and b.", "add_nums", "def add_nums(a, b):\n    return a + b",
     ["assert add_nums(2, 3) == 5", "assert add_nums(-1, 1) == 0", "assert add_nums(10, 5) == 15"]),
    ("Write a function is_even(n) that returns True when n is even.", "is_even", "def is_even(n):\n    return n % 2 == 0",
     ["assert is_even(4)", "assert not is_even(7)", "assert is_even(0)"]),
    ("Write a function max_of(xs) that returns the largest number in the list xs.", "max_of", "def max_of(xs):\n    return max(xs)",
     ["assert max_of([1, 5, 3]) == 5", "assert max_of([-2, -9]) == -2", "assert max_of([7]) == 7"]),
    ("Write a function reverse_str(s) that returns s reversed.", "reverse_str", "def reverse_str(s):\n    return s[::-1]",
     ["assert reverse_str('abc') == 'cba'", "assert reverse_str('') == ''", "assert reverse_str('aa') == 'aa'"]),
    ("Write a function count_vowels(s) that counts the vowels a, e, i, o, u in s.", "count_vowels",
     "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
     ["assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0", "assert count_vowels('aeiou') == 5"]),
    ("Write a function square_all(xs) that returns the list of squares of xs.", "square_all", "def square_all(xs):\n    return [x * x for x in xs]",
     ["assert square_all([1, 2, 3]) == [1, 4, 9]", "assert square_all([]) == []", "assert square_all([-2]) == [4]"]),
]


def _row(split: str, kind: str, level: int, question: str, answer: str, steps: list[Step]) -> dict[str, Any]:
    return {
        "problem_id": records.content_id("problem", "synthetic", "math", question),
        "source": "synthetic", "source_id": None, "split": split, "domain": "math", "difficulty": level,
        "question": question, "answer": answer, "tests": None, "test_format": None, "entry_point": None, "test_setup": None,
        "license": "Apache-2.0", "metadata": records.to_json({"kind": kind, "steps": steps}),
    }


def synthetic_problems(cfg: SyntheticParams) -> list[dict[str, Any]]:
    """Train and eval rows for the `problems` table; eval questions never appear in train."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split, count, stream in (("eval", cfg.eval_per_level, 1), ("train", cfg.train_per_level, 0)):
        rng = random.Random(f"{cfg.seed}:{stream}")
        for kind in cfg.kinds:
            for level in cfg.levels:
                made, tries = 0, 0
                while made < count and tries < count * 20:
                    tries += 1
                    question, answer, steps = GENERATORS[kind](level, rng)
                    if question in seen:
                        continue
                    seen.add(question)
                    rows.append(_row(split, kind, level, question, answer, steps))
                    made += 1
    for i, (text, entry, solution, tests) in enumerate(CODE_PROBLEMS[: cfg.code_problems]):
        rows.append({
            "problem_id": records.content_id("problem", "synthetic", "code", text),
            "source": "synthetic", "source_id": f"code-{i}", "split": "eval" if i % 3 == 2 else "train", "domain": "code",
            "difficulty": 1, "question": f"{text}\nYour code should pass these tests:\n" + "\n".join(tests), "answer": solution,
            "tests": tests, "test_format": "mbpp", "entry_point": entry, "test_setup": None, "license": "Apache-2.0",
            "metadata": records.to_json({"kind": "code"}),
        })
    return rows
