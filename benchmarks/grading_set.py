"""Builds the labelled grading set, tests/data/grading/pairs.jsonl, from public sources.

    python benchmarks/grading_set.py --math-verify REPO --hendrycks REPO [--out tests/data/grading/pairs.jsonl]

REPO is a git checkout (read with `git show`, at the commits named in tests/data/grading/README.md).
Each row: gold (as a problems row holds it), response (a model-style text), correct, kind, source.
Labels come from the source or from a mathematically certain transformation, never from our
grader:
- math-verify's own test suite (`expected` of its parametrized cases at its default settings);
- hendrycks/math's `math_equivalence_test.py` (assertTrue / assertFalse);
- MATH-500 and GSM8K golds: the gold itself restated (sympy's str printer run on the gold, the
  gold inside an answer sentence, its elements as several boxes, an interval as the inequality
  sympy's `as_relational` gives, an integer as words, with thousands groups or units) is right;
  the same statement of a value sympy proves different (a perturbed number, one term's sign
  flipped, one element changed, an endpoint's closedness flipped) is wrong.
Run once to refresh the stored file; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import sympy
from math_verify import parse

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/data")
OUT = ROOT / "tests" / "data" / "grading" / "pairs.jsonl"
KINDS = ("answer_sentence", "several_boxes", "program_notation", "sets_intervals", "numbers_in_text", "unsafe", "plain")
Row = dict


def row(gold: str, response: str, correct: bool, kind: str, source: str) -> Row:
    assert kind in KINDS, kind
    return {"gold": gold, "response": response, "correct": bool(correct), "kind": kind, "source": source}


# --- kinds of third-party cases, read off their text ---------------------------------------------

_INEQ = re.compile(r"\\le|\\ge|<|>|\\leq|\\geq|\\in\b|\\cup|\\infty")


def kind_of(gold: str, response: str) -> str:
    both = gold + " " + response
    if re.search(r"\\ldots|\\dots|\\cdots|\\forall|\\exists", both) or re.search(r"\d\s*:\s*\d", both):
        return "unsafe"
    if response.count(r"\boxed") > 1 or gold.count(r"\boxed") > 1:
        return "several_boxes"
    if re.search(r"\*\*|\bsqrt\(|\bpi\b|\bexp\(|\d\*[a-zA-Z(]|\bI\b", both):
        return "program_notation"
    if _INEQ.search(both):
        return "sets_intervals"
    if re.search(r"\d[,.]\d{3}|\d \d{3}|\\!|\bdollars?\b|\\text\{\s*[a-z]+\}|\d[eE][+-]?\d|\\times\s*10", both):
        return "numbers_in_text"
    bare = response.strip().strip("$").strip()
    if r"\boxed" not in response and re.search(r"[A-Za-z]{3,}", re.sub(r"\\[a-zA-Z]+", "", bare)):
        return "answer_sentence"
    return "plain"


def as_response(pred: str) -> str:
    """A third-party prediction as a model states it: kept if it names its answer, else announced."""
    prose = re.sub(r"\$[^$]*\$|\\[a-zA-Z]+", "", pred)
    if (
        r"\boxed" in pred
        or re.search(r"answer", pred, re.IGNORECASE)
        or re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", prose)
    ):
        return pred  # it states its answer in its own words
    stripped = pred.strip()
    if stripped.startswith(("$", r"\(", r"\[")):
        return f"The final answer is {stripped}"
    return f"The final answer is ${stripped}$."


# --- math-verify's test suite ------------------------------------------------------------------

_SKIP_KWARGS = {"strict", "allow_set_relation_comp"}


def math_verify_cases(repo: Path) -> Iterator[Row]:
    files = _git(repo, "ls-tree", "-r", "HEAD", "--name-only", "tests").split()
    for name in files:
        if not name.endswith(".py"):
            continue
        tree = ast.parse(_git(repo, "show", f"HEAD:{name}"))
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            yield from _parametrized(fn, name)


def _parametrized(fn: ast.FunctionDef, file: str) -> Iterator[Row]:
    call = next(
        (n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "compare_strings"), None
    )
    if call is None:
        return
    kwargs = {k.arg: k.value for k in call.keywords}
    if _SKIP_KWARGS & kwargs.keys():
        return  # a non-default comparison: the label holds only under that setting
    if "precision" in kwargs and not (
        isinstance(kwargs["precision"], ast.Name) or ast.literal_eval(kwargs["precision"]) == 6
    ):
        return
    types = ast.literal_eval(kwargs["match_types"]) if "match_types" in kwargs else ["latex", "expr"]
    if "latex" not in types:
        return  # plain-text number extraction (decimal commas and the like), not a math answer
    for deco in fn.decorator_list:
        if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
            continue
        names = [s.strip() for s in ast.literal_eval(deco.args[0]).split(",")]
        if names[:3] != ["gold", "pred", "expected"]:
            continue
        for case in ast.literal_eval(deco.args[1]):
            values = dict(zip(names, case))
            if values.get("precision", 6) != 6:
                continue
            gold, pred = values["gold"], values["pred"]
            source = f"math-verify tests/{Path(file).name}::{fn.name}"
            yield row(gold, as_response(pred), values["expected"] == 1, kind_of(gold, pred), source)


# --- hendrycks/math's equivalence tests --------------------------------------------------------

_HENDRYCKS = re.compile(r'test_in = "(.*)"\s*\n\s*test_out = "(.*)"\s*\n\s*self\.assert(True|False)')
# Its grader compares strings, so a list in another order counts as wrong there; the problems
# these answer list solutions in any order, so those two cases carry no label for a math grader.
_ORDER_TESTS = {("10, 4, -2", "4, 10, -2"), ("0.1, 4, 2", "4, .1, 2")}


def hendrycks_cases(repo: Path) -> Iterator[Row]:
    text = _git(repo, "show", "HEAD:modeling/math_equivalence_test.py")
    for m in _HENDRYCKS.finditer(text):
        gold, pred = (s.encode().decode("unicode_escape") for s in m.group(1, 2))
        if (gold, pred) in _ORDER_TESTS:
            continue
        pred = pred.replace("\\\\", "\\").strip()
        yield row(
            gold,
            f"The final answer is ${pred}$.",
            m.group(3) == "True",
            kind_of(gold, pred),
            "hendrycks/math modeling/math_equivalence_test.py",
        )


# --- MATH-500 and GSM8K golds ------------------------------------------------------------------

SENTENCES = (
    "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "Putting it together, the answer is ${a}$.",
    "Therefore, the value we want is ${a}$.",
    "**Final Answer**\n\n${a}$",
    "Hence the result is \\[{a}.\\]",
    "So we get $\\mathbf{{{a}}}$ as the final answer.",
    "**Answer:** ${a}$",
    "The answer is: ${a}$",
)


def sympy_of(gold: str) -> sympy.Basic | None:
    """The gold as sympy reads it (through math-verify's LaTeX parser), evaluated; None if unread."""
    try:
        parsed = parse(f"${gold}$")
    except Exception:
        return None
    if not parsed or not isinstance(parsed[0], sympy.Expr):
        return None
    expr = parsed[0].subs(sympy.Symbol("i"), sympy.I)
    try:
        return sympy.sympify(str(expr))  # str -> sympify evaluates what the parser left unevaluated
    except (sympy.SympifyError, TypeError, SyntaxError):
        return None


def differs(a: sympy.Expr, b: sympy.Expr) -> bool:
    try:
        return sympy.simplify(a - b) != 0
    except Exception:
        return False


def perturb(expr: sympy.Expr, rng: random.Random) -> sympy.Expr | None:
    """A value sympy proves different: one term's sign flipped, or the value moved by a unit."""
    candidates = []
    if isinstance(expr, sympy.Add):
        terms = list(expr.args)
        k = rng.randrange(len(terms))
        candidates.append(sympy.Add(*[(-t if i == k else t) for i, t in enumerate(terms)]))
    candidates += [expr + 1, 2 * expr, -expr]
    for cand in candidates:
        if differs(cand, expr):
            return cand
    return None


def math500_golds() -> list[str]:
    return [json.loads(line)["answer"] for line in (SHARED / "math500_test.jsonl").open()]


def gsm8k_golds() -> list[int]:
    return [
        int(json.loads(line)["answer"].split("####")[-1].strip().replace(",", ""))
        for line in (SHARED / "gsm8k_test.jsonl").open()
    ]


def program_notation(golds: list[str], rng: random.Random) -> Iterator[Row]:
    """A tool-integrated trace copies sympy's output: `pi/3`, `sqrt(2)/2`, `exp(2) + 1`, `**`."""
    for gold in golds:
        expr = sympy_of(gold)
        if expr is None or str(expr) == gold or len(str(expr)) > 60:
            continue
        if any(str(sym) not in gold for sym in expr.free_symbols):
            continue  # the parser renamed a variable (`R` -> `r`): not the gold restated
        wrong = perturb(expr, rng)
        for value, correct in ((expr, True), (wrong, False)):
            if value is None:
                continue
            printed = str(value)
            template = rng.choice(
                ("```output\n{p}\n```\nThe answer is $\\boxed{{{p}}}$.", "\\boxed{{{p}}}", "The final answer is {p}.")
            )
            yield row(gold, template.format(p=printed), correct, "program_notation", "MATH-500 gold, sympy str printer")
        if expr.is_number and expr.is_real is False and expr.as_real_imag()[0].is_Rational:
            yield row(gold, f"\\boxed{{{sympy.N(expr)}}}", True, "program_notation", "MATH-500 gold, sympy N printer")


def answer_sentences(golds: list[str], rng: random.Random, source: str) -> Iterator[Row]:
    for gold in golds:
        expr = sympy_of(gold)
        wrong = perturb(expr, rng) if expr is not None else None
        template = rng.choice(SENTENCES)
        yield row(gold, template.replace("{a}", gold), True, "answer_sentence", source)
        if wrong is not None:
            yield row(
                gold,
                template.replace("{a}", sympy.latex(wrong)),
                False,
                "answer_sentence",
                f"{source}, sympy-perturbed",
            )


def _top_level_split(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in s:
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    return [*parts, cur.strip()]


def several_boxes(golds: list[str], rng: random.Random) -> Iterator[Row]:
    """A list gold (`-2, 1`) answered one box per element, in any order; one element changed is wrong."""
    for gold in golds:
        if gold.startswith(("(", "[", r"\{", r"\left")) or gold.count(",") == 0 or re.search(r",\\!|\d,\d{3}\b", gold):
            continue  # not a list: a tuple, an interval, or one number with thousands groups
        parts = _top_level_split(gold)
        if len(parts) < 2 or any(not p for p in parts) or any(sympy_of(p) is None for p in parts):
            continue
        shuffled = parts[:]
        rng.shuffle(shuffled)
        join = rng.choice((", ", " \\text{ and } ", " and "))
        yield row(
            gold,
            "The solutions are " + join.join(f"$\\boxed{{{p}}}$" for p in shuffled) + ".",
            True,
            "several_boxes",
            "MATH-500 gold, one box per element",
        )
        yield row(
            "\\boxed{" + "}, \\boxed{".join(parts) + "}",
            f"\\boxed{{{', '.join(shuffled)}}}",
            True,
            "several_boxes",
            "MATH-500 gold written as several boxes",
        )
        k = rng.randrange(len(parts))
        wrong = perturb(sympy_of(parts[k]), rng)
        if wrong is not None and all(differs(wrong, sympy_of(p)) for p in parts):
            changed = [sympy.latex(wrong) if i == k else p for i, p in enumerate(parts)]
            yield row(
                gold,
                " ".join(f"\\boxed{{{p}}}" for p in changed),
                False,
                "several_boxes",
                "MATH-500 gold, one element perturbed",
            )
            yield row(
                gold,
                " and ".join(f"\\boxed{{{p}}}" for p in parts[:-1]) + ".",
                False,
                "several_boxes",
                "MATH-500 gold, one element left out",
            )


def intervals(golds: list[str], rng: random.Random) -> Iterator[Row]:
    """An interval gold as the inequality sympy's `as_relational` prints, and as `x \\in gold`."""
    x = sympy.Symbol("x")
    for gold in golds:
        try:
            parsed = parse(f"${gold}$")
        except Exception:
            continue
        if not parsed or not isinstance(parsed[0], (sympy.Interval, sympy.Union)):
            continue
        interval = parsed[0]
        if any(isinstance(a, sympy.FiniteSet) for a in getattr(interval, "args", ())):
            continue
        relation = (
            sympy.latex(interval.as_relational(x)).replace("\\wedge", "\\text{ and }").replace("\\vee", "\\text{ or }")
        )
        yield row(
            gold, f"So the solution set is $x \\in {gold}$.", True, "sets_intervals", "MATH-500 gold, set membership"
        )
        yield row(
            gold,
            f"The answer is $\\boxed{{{relation}}}$.",
            True,
            "sets_intervals",
            "MATH-500 gold, sympy as_relational",
        )
        flipped = _flip_closedness(interval)
        if flipped is not None:
            wrong = (
                sympy.latex(flipped.as_relational(x))
                .replace("\\wedge", "\\text{ and }")
                .replace("\\vee", "\\text{ or }")
            )
            yield row(
                gold,
                f"The answer is $\\boxed{{{wrong}}}$.",
                False,
                "sets_intervals",
                "MATH-500 gold, an endpoint's closedness flipped",
            )
            yield row(
                gold,
                f"\\boxed{{{sympy.latex(flipped)}}}",
                False,
                "sets_intervals",
                "MATH-500 gold, an endpoint's closedness flipped",
            )


def _flip_closedness(s: sympy.Set) -> sympy.Set | None:
    intervals_ = s.args if isinstance(s, sympy.Union) else (s,)
    first = intervals_[0]
    if not isinstance(first, sympy.Interval):
        return None
    if first.left.is_finite:
        new = sympy.Interval(first.left, first.right, not first.left_open, first.right_open)
    elif first.right.is_finite:
        new = sympy.Interval(first.left, first.right, first.left_open, not first.right_open)
    else:
        return None
    return sympy.Union(new, *intervals_[1:]) if len(intervals_) > 1 else new


_ONES = (
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n: int) -> str:
    """English words of 0 <= n < 1,000,000, hyphenated as style guides write them ("twenty-four")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10 - 2] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + words(n % 100) if n % 100 else "")
    return words(n // 1000) + " thousand" + (" " + words(n % 1000) if n % 1000 else "")


def numbers_in_text(golds: list[int], rng: random.Random) -> Iterator[Row]:
    for n in golds:
        forms = []
        if n >= 1000:
            groups = f"{n:,}"
            forms += [
                groups.replace(",", ",\\! "),
                groups.replace(",", " "),
                groups.replace(",", "\\,"),
                groups.replace(",", "{,}"),
            ]
        if 0 <= n < 100:
            forms.append(words(n))
        if n >= 1000 and n % 100 == 0:
            mantissa = str(n / 10 ** (len(str(n)) - 1)).rstrip("0").rstrip(".")
            forms += [f"{mantissa} \\times 10^{{{len(str(n)) - 1}}}", f"{mantissa}e{len(str(n)) - 1}"]
        forms += [f"{n:,} dollars", f"\\${n:,}", f"{n} \\text{{ meters}}"]
        form = rng.choice(forms)
        wrong_n = n + rng.choice((1, -1, 10))
        wrong = form.replace(f"{n:,}".split(",")[0], f"{wrong_n:,}".split(",")[0], 1) if form[:1].isdigit() else None
        if not form[:1].isdigit() or wrong == form:
            wrong = words(wrong_n) if 0 <= wrong_n < 100 and form.isalpha() else f"{wrong_n:,} dollars"
        template = rng.choice(
            ("The answer is {f}.", "#### {f}", "\\boxed{{{f}}}", "So she pays {f} in total.\n\n**Answer:** {f}")
        )
        yield row(str(n), template.format(f=form), True, "numbers_in_text", "GSM8K gold, restated")
        yield row(str(n), template.format(f=wrong), False, "numbers_in_text", "GSM8K gold, perturbed")


def unsafe(math500: list[str], gsm8k: list[int], rng: random.Random) -> Iterator[Row]:
    """Where a symbolic engine says yes too easily: a sign flipped inside an expression with a
    transcendental constant, sequences with an ellipsis, ratios, quantified statements."""
    for gold in math500:
        expr = sympy_of(gold)
        if (
            expr is None
            or not isinstance(expr, sympy.Add)
            or not (expr.atoms(sympy.NumberSymbol) or expr.has(sympy.exp) or expr.has(sympy.sqrt))
        ):
            continue
        terms = list(expr.args)
        for k in range(len(terms)):
            flipped = sympy.Add(*[(-t if i == k else t) for i, t in enumerate(terms)], evaluate=False)
            if differs(flipped, expr):
                yield row(
                    gold,
                    f"\\boxed{{{sympy.latex(flipped)}}}",
                    False,
                    "unsafe",
                    "MATH-500 gold, one term's sign flipped",
                )
        yield row(gold, f"\\boxed{{{sympy.latex(expr)}}}", True, "unsafe", "MATH-500 gold, sympy latex printer")
    for i in range(0, 240, 3):
        a, b, c = gsm8k[i : i + 3]
        for gold, same, flipped in (
            (f"{a} - \\frac{{1}}{{e}}", f"-\\frac{{1}}{{e}} + {a}", f"{a} + \\frac{{1}}{{e}}"),
            (f"e^{{{b % 7 + 2}}} - {c}", f"-{c} + e^{{{b % 7 + 2}}}", f"e^{{{b % 7 + 2}}} + {c}"),
            (f"{a}\\pi - {b}", f"-{b} + {a}\\pi", f"{b} - {a}\\pi"),
            (f"\\sqrt{{{c % 50 + 2}}} - {a}", f"-{a} + \\sqrt{{{c % 50 + 2}}}", f"-\\sqrt{{{c % 50 + 2}}} - {a}"),
        ):
            if differs(sympy_of(gold), sympy_of(flipped)):
                yield row(
                    gold, f"\\boxed{{{flipped}}}", False, "unsafe", "GSM8K gold with a constant, one sign flipped"
                )
                yield row(gold, f"\\boxed{{{same}}}", True, "unsafe", "GSM8K gold with a constant, terms reordered")
        ellipsis = rng.choice(("\\ldots", "\\dots", "\\cdots", "..."))
        yield row(
            f"{a}, {b}, {c}, \\ldots", f"\\boxed{{{a},{b},{c},{ellipsis}}}", True, "unsafe", "GSM8K golds as a sequence"
        )
        yield row(
            f"{a}, {b}, {c}, \\ldots",
            f"\\boxed{{{a}, {b}, {c + 1}, {ellipsis}}}",
            False,
            "unsafe",
            "GSM8K golds as a sequence, one term changed",
        )
        yield row(
            f"{a}:{b}:{c}", f"The ratio is $\\boxed{{{a} : {b} : {c}}}$.", True, "unsafe", "GSM8K golds as a ratio"
        )
        if sympy.Matrix([[a, b, c], [a, b, c + 1]]).rank() == 2:  # not proportional: a different ratio
            yield row(
                f"{a}:{b}:{c}",
                f"The ratio is $\\boxed{{{a}:{b}:{c + 1}}}$.",
                False,
                "unsafe",
                "GSM8K golds as a ratio, one term changed",
            )
        yield row(f"\\forall x<0, g(x)={a}", f"\\boxed{{g(x)={a}}}", False, "unsafe", "GSM8K gold, quantifier dropped")
        yield row(
            f"\\forall x<0, g(x)={a}",
            f"\\boxed{{\\forall x < 0,\\ g(x) = {a}}}",
            True,
            "unsafe",
            "GSM8K gold, quantified statement restated",
        )


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def build(math_verify: Path, hendrycks: Path) -> list[Row]:
    rng = random.Random(0)
    math500, gsm8k = math500_golds(), gsm8k_golds()
    rows = [
        *math_verify_cases(math_verify),
        *hendrycks_cases(hendrycks),
        *program_notation(math500, rng),
        *answer_sentences(math500[:250], rng, "MATH-500 gold in an answer sentence"),
        *answer_sentences([str(n) for n in gsm8k[:150]], rng, "GSM8K gold in an answer sentence"),
        *several_boxes(math500, rng),
        *intervals(math500, rng),
        *numbers_in_text(gsm8k[300:600], rng),
        *unsafe(math500, gsm8k, rng),
    ]
    unique = {(r["gold"], r["response"]): r for r in rows}
    return list(unique.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--math-verify", type=Path, required=True, help="git checkout of huggingface/Math-Verify")
    ap.add_argument("--hendrycks", type=Path, required=True, help="git checkout of hendrycks/math")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = build(args.math_verify, args.hendrycks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    print(f"{len(rows)} pairs -> {args.out}: {counts}")


if __name__ == "__main__":
    main()
