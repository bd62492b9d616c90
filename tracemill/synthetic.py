"""Seeded synthetic problems with exact answers and worked solutions, at graded difficulty.

Math kinds: multi-step arithmetic, fractions, percentages, linear equations, remainders; level 1
uses small numbers and one step, higher levels larger numbers and more steps. Each problem carries
its solution as steps (a sentence, the python that computes it, that code's exact output) in its
metadata, so the bootstrap corpus can render it in every format the pipeline uses.

Code problems are small functions in MBPP's easiest style (arithmetic on lists, string ops), each a
task specialised by a constant and a function name. The question shows one example assert; the
hidden tests (`tests`, MBPP format, the example first) are what the code-tests grader runs. Each
carries a near-miss draft in its metadata (the constant miscopied), so the corpus can show a first
attempt that fails the example and is fixed. The eval splits are drawn from their own random
streams and never share a question (for code: a function) with train.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tracemill import records
from tracemill.errors import ParamsError
from tracemill.params import at_least, bounded, choices

MATH_KINDS = ("arithmetic", "fractions", "percent", "linear", "remainder")
NAMES = (
    "Ava",
    "Ben",
    "Cara",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kai",
    "Lena",
    "Milo",
    "Nora",
    "Omar",
    "Pia",
)
ITEMS = ("apples", "marbles", "books", "stickers", "coins", "pencils", "cards", "shells")


@dataclass(frozen=True)
class CodeTask:
    """A small function in MBPP's easiest style, specialised by a constant `c` (a number or a letter)."""

    names: tuple[str, ...]  # the function's name is one of these
    arg: str  # "xs" (a list of ints) or "s" (a string)
    spec: str  # what it returns, with {c}
    body: str  # the reference body, with {c}
    ref: Callable[[Any, Any], Any]  # the same function in Python, to compute the tests' expected values
    constants: tuple[Any, ...] = tuple(range(2, 10))


CODE_TASKS: dict[str, CodeTask] = {
    "sum_above": CodeTask(
        ("sum_above", "total_over", "add_big"),
        "xs",
        "the sum of the numbers in xs that are greater than {c}",
        "return sum(x for x in xs if x > {c})",
        lambda xs, c: sum(x for x in xs if x > c),
    ),
    "count_value": CodeTask(
        ("count_value", "how_many", "tally"),
        "xs",
        "how many times {c} appears in xs",
        "return xs.count({c})",
        lambda xs, c: xs.count(c),
    ),
    "scale": CodeTask(
        ("scale", "times_all", "multiply_each"),
        "xs",
        "a new list with every number in xs multiplied by {c}",
        "return [x * {c} for x in xs]",
        lambda xs, c: [x * c for x in xs],
    ),
    "shift": CodeTask(
        ("shift", "add_to_all", "raise_each"),
        "xs",
        "a new list with {c} added to every number in xs",
        "return [x + {c} for x in xs]",
        lambda xs, c: [x + c for x in xs],
    ),
    "below": CodeTask(
        ("below", "keep_small", "under"),
        "xs",
        "the numbers in xs that are less than {c}, in order",
        "return [x for x in xs if x < {c}]",
        lambda xs, c: [x for x in xs if x < c],
    ),
    "divisible": CodeTask(
        ("divisible", "count_multiples", "multiples_of"),
        "xs",
        "how many numbers in xs are divisible by {c}",
        "return sum(1 for x in xs if x % {c} == 0)",
        lambda xs, c: sum(1 for x in xs if x % c == 0),
    ),
    "head": CodeTask(
        ("head", "first_few", "take_front"),
        "xs",
        "the first {c} numbers of xs",
        "return xs[:{c}]",
        lambda xs, c: xs[:c],
        tuple(range(1, 6)),
    ),
    "repeat": CodeTask(
        ("repeat", "copy_text", "echo"),
        "s",
        "the string s repeated {c} times",
        "return s * {c}",
        lambda s, c: s * c,
        tuple(range(2, 6)),
    ),
    "count_letter": CodeTask(
        ("count_letter", "letter_count", "tally_char"),
        "s",
        "how many times the letter '{c}' appears in s",
        "return s.count('{c}')",
        lambda s, c: s.count(c),
        tuple("aeiost"),
    ),
    "drop_letter": CodeTask(
        ("drop_letter", "strip_char", "without"),
        "s",
        "s with every letter '{c}' removed",
        "return s.replace('{c}', '')",
        lambda s, c: s.replace(c, ""),
        tuple("aeiost"),
    ),
}
WORDS = (
    "banana",
    "tomato",
    "seesaw",
    "potato",
    "kitten",
    "sunset",
    "cassis",
    "teatime",
    "avocado",
    "toast",
    "ocean",
    "street",
)
CODE_TESTS = 3  # per problem; the first is shown in the question as the example; all are run by the code-tests grader


@dataclass(frozen=True)
class SyntheticParams:
    seed: int = at_least(0, default=0)
    kinds: list[str] = choices(*MATH_KINDS, default_factory=lambda: list(MATH_KINDS))
    levels: list[int] = bounded(1, 4, default_factory=lambda: [1, 2, 3, 4])
    train_per_level: int = at_least(
        0, default=400
    )  # per kind and level: enough variety that a model learns to copy, not memorize
    eval_per_level: int = at_least(0, default=10)  # per kind and level, held out
    code_tasks: list[str] = choices(*CODE_TASKS, default_factory=lambda: list(CODE_TASKS))
    code_train_per_task: int = at_least(
        0, default=8
    )  # code problems per task, each a function (name, constant) of its own
    code_eval_per_task: int = at_least(0, default=1)  # per task, held out: a function no train problem asks for

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
    add = {
        "text": f"Add the {b} new {item} to the {a} {item}.",
        "code": f"total = {a} + {b}\nprint(total)",
        "output": str(a + b),
    }
    if level <= 2:
        return f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?", str(a + b), [add]
    c = rng.randint(1, a + b - 1)
    q = f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. How many {item} does {name} have now?"
    steps = [
        add,
        {
            "text": f"Take away the {c} given away.",
            "code": f"left = total - {c}\nprint(left)",
            "output": str(a + b - c),
        },
    ]
    answer = a + b - c
    if level == 4:
        k = rng.randint(2, 5)
        q = (
            f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. Then {name} buys {k} times as many "
            f"{item} as {name} has left. How many {item} does {name} buy?"
        )
        steps.append(
            {"text": f"Multiply by {k}.", "code": f"bought = left * {k}\nprint(bought)", "output": str(answer * k)}
        )
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
    steps = [
        {
            "text": f"Compute {word} exactly with fractions.",
            "code": f"from fractions import Fraction\nvalue = Fraction({a}, {b}) {op} Fraction({c}, {d})\nprint(value)",
            "output": _fmt(value),
        }
    ]
    return q, _fmt(value), steps


def percent(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    price = rng.randint(1, (20, 50, 60, 200)[level - 1]) * (2, 2, 20, 20)[level - 1]
    rate = rng.choice(((50,), (50,), (10, 20, 25, 50), (5, 15, 30, 35, 40, 45, 60, 75))[level - 1])
    name, item = rng.choice(NAMES), rng.choice(("jacket", "lamp", "bike", "game", "chair"))
    new = Fraction(price * (100 - rate), 100)
    q = f"{name}'s {item} costs {price} dollars. Its price is reduced by {rate}%. What is the new price in dollars?"
    steps = [
        {
            "text": f"The discount is {rate}% of {price}.",
            "code": f"discount = {price} * {rate} / 100\nprint(discount)",
            "output": str(price * rate / 100),
        },
        {
            "text": "Subtract the discount from the price.",
            "code": f"new_price = {price} - discount\nprint(new_price)",
            "output": str(price - price * rate / 100),
        },
    ]
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
    steps = [
        {
            "text": f"Move {b} to the right side and divide by {a}.",
            "code": f"{var} = ({c} - ({b})) / {a}\nprint(int({var}))",
            "output": str(x),
        }
    ]
    return q, str(x), steps


def remainder(level: int, rng: random.Random) -> tuple[str, str, list[Step]]:
    n = rng.randint(10, (20, 50, 500, 5000)[level - 1])
    d = rng.randint(2, (5, 9, 13, 30)[level - 1])
    name = rng.choice(NAMES)
    q = f"{name} packs {n} eggs into boxes of {d}. How many eggs are left over?"
    steps = [
        {
            "text": f"The leftover is the remainder of {n} divided by {d}.",
            "code": f"print({n} % {d})",
            "output": str(n % d),
        }
    ]
    return q, str(n % d), steps


GENERATORS: dict[str, Callable[[int, random.Random], tuple[str, str, list[Step]]]] = {
    "arithmetic": arithmetic,
    "fractions": fractions_kind,
    "percent": percent,
    "linear": linear,
    "remainder": remainder,
}


def _code_input(task: CodeTask, rng: random.Random) -> Any:
    if task.arg == "s":
        return rng.choice(WORDS)[: rng.randint(3, 7)] if rng.random() < 0.3 else rng.choice(WORDS)
    return [rng.randint(0, 12) for _ in range(rng.randint(3, 6))]


def code_problem(name: str, rng: random.Random) -> tuple[str, str, str, list[str], str]:
    """(question, entry point, solution, tests, draft): the draft swaps the constant for a near one
    and fails the example test — a first attempt that running the example catches."""
    task = CODE_TASKS[name]
    entry, c = rng.choice(task.names), rng.choice(task.constants)
    others = [d for d in task.constants if d != c]
    while True:  # until the tests tell c from every other constant, so only the asked-for function passes
        inputs = [_code_input(task, rng) for _ in range(CODE_TESTS)]
        if len({repr(x) for x in inputs}) == CODE_TESTS and all(
            any(task.ref(x, d) != task.ref(x, c) for x in inputs) for d in others
        ):
            near = [d for d in others if task.ref(inputs[0], d) != task.ref(inputs[0], c)]
            if near:
                break
    tests = [f"assert {entry}({x!r}) == {task.ref(x, c)!r}" for x in inputs]

    def define(const: Any) -> str:
        return f"def {entry}({task.arg}):\n    {task.body.format(c=const)}"

    question = (
        f"Write a function {entry}({task.arg}) that returns {task.spec.format(c=c)}.\n"
        f"Your code should pass this example test:\n{tests[0]}"
    )
    return question, entry, define(c), tests, define(rng.choice(near))


def _row(split: str, kind: str, level: int, question: str, answer: str, steps: list[Step]) -> dict[str, Any]:
    return {
        "problem_id": records.content_id("problem", "synthetic", "math", question),
        "source": "synthetic",
        "source_id": None,
        "split": split,
        "domain": "math",
        "difficulty": level,
        "question": question,
        "answer": answer,
        "tests": None,
        "test_format": None,
        "entry_point": None,
        "test_setup": None,
        "license": "Apache-2.0",
        "metadata": records.to_json({"kind": kind, "steps": steps}),
    }


def _unique(count: int, draw: Callable[[], Any], key: Callable[[Any], str], seen: set[str]) -> list[Any]:
    """Up to `count` draws whose key no earlier draw had (a bounded number of tries)."""
    out: list[Any] = []
    tries = 0
    while len(out) < count and tries < count * 20:
        tries += 1
        item = draw()
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


def synthetic_problems(cfg: SyntheticParams) -> list[dict[str, Any]]:
    """Train and eval rows for the `problems` table; eval questions never appear in train."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split, count, stream in (("eval", cfg.eval_per_level, 1), ("train", cfg.train_per_level, 0)):
        rng = random.Random(f"{cfg.seed}:{stream}")
        for kind in cfg.kinds:
            for level in cfg.levels:
                for question, answer, steps in _unique(
                    count, functools.partial(GENERATORS[kind], level, rng), lambda made: made[0], seen
                ):
                    rows.append(_row(split, kind, level, question, answer, steps))
    for split, count, stream in (("eval", cfg.code_eval_per_task, 3), ("train", cfg.code_train_per_task, 2)):
        rng = random.Random(f"{cfg.seed}:{stream}")
        for name in cfg.code_tasks:
            # keyed on the spec line: held-out code problems ask for a function train never specifies
            for question, entry, solution, tests, draft in _unique(
                count, functools.partial(code_problem, name, rng), lambda made: made[0].split("\n", 1)[0], seen
            ):
                rows.append(
                    {
                        "problem_id": records.content_id("problem", "synthetic", "code", question),
                        "source": "synthetic",
                        "source_id": None,
                        "split": split,
                        "domain": "code",
                        "difficulty": 1,
                        "question": question,
                        "answer": solution,
                        "tests": tests,
                        "test_format": "mbpp",
                        "entry_point": entry,
                        "test_setup": None,
                        "license": "Apache-2.0",
                        "metadata": records.to_json({"kind": name, "draft": draft}),
                    }
                )
    return rows
