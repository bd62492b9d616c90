"""The embedded policy: a tiny Qwen2 model trained from scratch on a synthetic corpus, so the whole
graph runs with real signal on a laptop with no GPU and no download.

The corpus renders each synthetic train problem in the formats the pipeline uses: START-style
tool-integrated reasoning (text, a python block, its output block, a boxed answer; in some kinds
of problem the demos self-check mid-solution after a "Wait," or "Alternatively,", the markers
hint-infer puts hints after), words-only answers, rStar-style steps (one sentence and its code per
step, ended by the step delimiter), and code problems answered with a function, often tested on the
problem's example with START's code hint and template. Loss is on the response only. The model is
meant to be imperfect: without running its code it must write the output block itself, which it
often gets wrong on harder levels, so tools help.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracemill import tiny
from tracemill.errors import ParamsError
from tracemill.formats import (
    IM_END,
    FormatParams,
    Step,
    boxed,
    code_block,
    code_blocks,
    output_block,
    render_prompt,
    render_steps,
)
from tracemill.hints import Hint, example_tests, fill_template
from tracemill.llm import LLMParams, load_backend
from tracemill.params import above, at_least, bounded, fraction
from tracemill.sandbox.base import Sandbox
from tracemill.tir import LoopLimits, Sampling, TraceJob, run_traces
from tracemill.train.launch import retain_freed_memory

if TYPE_CHECKING:  # grading loads mpmath: the stage that evaluates the policy builds the grader
    from tracemill.grading import Grader


@dataclass(frozen=True)
class BootstrapParams:
    vocab_size: int = at_least(1, default=1024)
    hidden_size: int = at_least(1, default=128)
    intermediate_size: int = at_least(1, default=384)
    num_hidden_layers: int = at_least(
        1, default=2
    )  # two layers learn to copy numbers far sooner than four in the CPU budget
    num_attention_heads: int = at_least(1, default=4)
    num_key_value_heads: int = at_least(1, default=2)
    max_position_embeddings: int = at_least(1, default=1024)
    seq_len: int = at_least(
        1, default=448
    )  # longer demos are dropped from the corpus (a code demo fixing its draft: ~430)
    batch_size: int = at_least(1, default=16)  # many small updates: copying emerges after ~700 of them
    max_steps: int = at_least(1, default=3000)
    learning_rate: float = above(0, default=3e-3)
    warmup_steps: int = at_least(1, default=40)  # the schedule divides by it
    weight_decay: float = at_least(0, default=0.01)
    # Share of the math kinds whose TIR demos self-check mid-solution after a marker, so the policy
    # writes markers that hint-infer can put hints after; of those kinds, the share whose check
    # opens with "Alternatively," (the rest: a guess, then "Wait," and python).
    marker_share: float = fraction(
        default=0.2
    )  # each marked kind costs that kind tools accuracy in the tiny policy (measured)
    alternatively_share: float = fraction(default=0.3)
    code_share: float = bounded(
        0, 1, hi_open=True, default=0.1
    )  # share of the corpus that is code demos (synthetic code problems)
    code_check_fraction: float = fraction(
        default=0.6
    )  # code demos that run the example test after the function (START's code hint)
    code_draft_fraction: float = fraction(
        default=0.5
    )  # of those, a first draft that fails the example and is then fixed
    steps_fraction: float = fraction(default=0.5)  # problems also rendered as rStar steps
    cot_fraction: float = fraction(
        default=0.4
    )  # problems answered in words only (the model does the arithmetic itself)
    hinted_fraction: float = fraction(
        default=0.5
    )  # of those, the share where a hint follows the answer and python re-checks it
    max_grad_norm: float = above(0, default=1.0)  # 0 would clip every gradient to nothing
    bucket_batches: int = at_least(1, default=16)  # batches drawn together and sorted by length, so padding stays small
    eval_max_problems: int = at_least(0, default=200)  # per domain
    eval_max_tokens: int = at_least(1, default=200)  # per generation turn
    eval_max_total_tokens: int = at_least(1, default=400)  # all turns of one trace together
    eval_max_tool_calls: int = at_least(0, default=6)
    threads: int = at_least(1, default=2)
    seed: int = at_least(0, default=0)
    log_every: int = at_least(1, default=20)

    def check(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ParamsError(
                f"params 'bootstrap.num_attention_heads' = {self.num_attention_heads} must be a multiple of "
                f"'bootstrap.num_key_value_heads' = {self.num_key_value_heads} (grouped-query attention)"
            )

    def tiny_config(self) -> tiny.TinyConfig:
        return tiny.TinyConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            seed=self.seed,
        )


# ---- corpus --------------------------------------------------------------------------------------


def _steps(problem: dict[str, Any]) -> list[dict[str, str]]:
    return json.loads(problem["metadata"])["steps"]


def _wrong(output: str, rng: random.Random) -> str:
    try:
        value = float(output)
    except ValueError:
        return output + "1"
    delta = rng.choice((-2, -1, 1, 2, 10))
    return str(int(value) + delta) if value.is_integer() else str(round(value + delta, 2))


def marker_kinds(problems: Sequence[dict[str, Any]], bp: BootstrapParams) -> dict[str, str]:
    """kind -> the marker its TIR demos self-check with, for a seeded `marker_share` of the math kinds.
    A habit tied to the kind of problem, which the question's wording shows, is one the model learns
    and repeats under greedy decoding; a coin per demo would teach a probability below one half,
    which greedy never takes."""
    kinds = sorted({json.loads(p["metadata"])["kind"] for p in problems if p["domain"] == "math"})
    random.Random(f"{bp.seed}:markers").shuffle(kinds)
    chosen = kinds[: round(bp.marker_share * len(kinds))]
    alternatively = round(bp.alternatively_share * len(chosen))
    return {kind: "Alternatively" if i < alternatively else "Wait" for i, kind in enumerate(chosen)}


def tir_response(problem: dict[str, Any], fmt: FormatParams, rng: random.Random, marker: str | None) -> str:
    """Text, code and output per step, then the boxed answer. With `marker` "Wait" the first step is
    first guessed (right or a near miss, evenly), then checked with python; with "Alternatively" the
    first step's result is re-checked once more right after it."""
    steps = _steps(problem)
    parts = []
    for i, step in enumerate(steps):
        parts.append(step["text"] + "\n")
        if i == 0 and marker == "Wait":
            guess = _wrong(step["output"], rng) if rng.random() < 0.5 else step["output"]
            parts.append(f"That gives {guess}. Wait, let me check it with Python.\n")
        parts.append(code_block(step["code"], fmt))
        parts.append(output_block(step["output"], fmt))
        if i == 0 and marker == "Alternatively":
            parts.append("Alternatively, let me verify this step once more.\n")
            parts.append(code_block(step["code"], fmt))
            parts.append(output_block(step["output"], fmt))
    parts.append(f"The answer is {boxed(problem['answer'], fmt)}.")
    return "".join(parts)


def cot_response(
    problem: dict[str, Any], fmt: FormatParams, rng: random.Random, bp: BootstrapParams, hints: Sequence[str]
) -> str:
    """A words-only answer; in `hinted_fraction` of them the answer (right or a near miss) is followed
    by a hint from the START library, exactly where hint-infer inserts one before the stop token, and
    python then computes the answer — what the START pipeline later teaches the policy to do unprompted."""
    steps = _steps(problem)
    hinted = bool(hints) and rng.random() < bp.hinted_fraction
    guess = _wrong(problem["answer"], rng) if hinted and rng.random() < 0.5 else problem["answer"]
    parts = [
        f"{step['text']} That gives {step['output'] if i < len(steps) - 1 else guess}.\n"
        for i, step in enumerate(steps)
    ]
    parts.append(f"The answer is {boxed(guess, fmt)}.")
    if hinted:
        parts.append(f" {rng.choice(list(hints))}\n")
        for step in steps:
            parts.append(code_block(step["code"], fmt))
            parts.append(output_block(step["output"], fmt))
        parts.append(f"The answer is {boxed(problem['answer'], fmt)}.")
    return "".join(parts)


def steps_response(problem: dict[str, Any], fmt: FormatParams) -> str:
    steps = [Step(s["text"], s["code"], s["output"]) for s in _steps(problem)]
    steps.append(Step(f"The answer is {boxed(problem['answer'], fmt)}."))
    return render_steps(steps, fmt)


# What the local sandbox shows for a cell: START's code template prints this once its examples pass,
# and a failed assert ends in this traceback (tests check both against the real sandbox).
EXAMPLES_PASS = "examples pass"


def _assert_failed(check: str, fmt: FormatParams) -> str:
    code = code_blocks(check, fmt)[0]
    line = next(i for i, text in enumerate(code.splitlines(), 1) if text.startswith("assert "))
    return f'Traceback (most recent call last):\n  File "<cell>", line {line}, in <module>\nAssertionError'


def code_response(
    problem: dict[str, Any], fmt: FormatParams, rng: random.Random, bp: BootstrapParams, code_hints: Sequence[Hint]
) -> str:
    """A function for a code problem (its definition runs, printing nothing). In `code_check_fraction`
    of them a START code hint follows and runs its template on the example test, as hint-infer does,
    so the policy learns to test its code unprompted; in `code_draft_fraction` of those the first
    function is a near-miss draft whose example fails, and the fixed function runs the example again."""
    solution, done = problem["answer"], f"That defines {problem['entry_point']}."
    if not code_hints or rng.random() >= bp.code_check_fraction:
        return code_block(solution, fmt) + output_block("", fmt) + done
    hint, examples = rng.choice(list(code_hints)), example_tests(problem)
    draft = json.loads(problem["metadata"])["draft"] if rng.random() < bp.code_draft_fraction else None
    first = draft or solution
    check = fill_template(hint, first, examples)
    parts = [code_block(first, fmt), output_block("", fmt), hint.text, check]
    if draft:
        parts += [
            output_block(_assert_failed(check, fmt), fmt),
            "The example fails, so the function has a bug. Let me fix it and run the example again.\n",
            fill_template(hint, solution, examples),
        ]
    parts += [output_block(EXAMPLES_PASS, fmt), f"The example passes. {done}"]
    return "".join(parts)


def corpus(
    problems: Sequence[dict[str, Any]], fmt: FormatParams, bp: BootstrapParams, hints: Sequence[Hint] = ()
) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the train split: each math problem as a TIR or words-only demo
    (and some as rStar steps), then code demos, `code_share` of all pairs, cycling through the code
    problems. `hints` is the START hint library (params `start.hints.library`): its math hints that
    may go at the stop follow words-only answers; its code hints with a template test functions."""
    rng = random.Random(bp.seed)
    train = [p for p in problems if p["split"] == "train"]
    math_hints = [h.text for h in hints if h.domain == "math" and h.position != "marker"]
    code_hints = [h for h in hints if h.domain == "code" and h.template]
    markers = marker_kinds(train, bp)
    out = []
    for p in (p for p in train if p["domain"] == "math"):
        if rng.random() < bp.cot_fraction:
            response = cot_response(p, fmt, rng, bp, math_hints)
        else:
            response = tir_response(p, fmt, rng, markers.get(json.loads(p["metadata"])["kind"]))
        out.append((render_prompt(p["question"], None, fmt, "tir"), response + IM_END))
        if rng.random() < bp.steps_fraction:
            out.append((render_prompt(p["question"], None, fmt, "steps"), steps_response(p, fmt) + IM_END))
    code = [p for p in train if p["domain"] == "code"]
    for i in range(round(len(out) * bp.code_share / (1 - bp.code_share)) if code else 0):
        p = code[i % len(code)]
        out.append(
            (render_prompt(p["question"], None, fmt, "tir"), code_response(p, fmt, rng, bp, code_hints) + IM_END)
        )
    return out


# ---- training ------------------------------------------------------------------------------------


def _encode(pairs: Sequence[tuple[str, str]], tokenizer: Any, seq_len: int) -> list[tuple[list[int], int]]:
    out = []
    for prompt, response in pairs:
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        r = tokenizer(response, add_special_tokens=False).input_ids
        if len(p) + len(r) <= seq_len:
            out.append((p + r, len(p)))
    return out


def _batches(examples: list[tuple[list[int], int]], bp: BootstrapParams, rng: random.Random):
    """Endless length-bucketed batches: shuffle, sort chunks by length, cut batches, shuffle those."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunk = bp.batch_size * bp.bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: len(examples[i][0]))
            batches += [part[i : i + bp.batch_size] for i in range(0, len(part), bp.batch_size)]
        rng.shuffle(batches)
        yield from batches


def train(
    pairs: Sequence[tuple[str, str]], out_dir: str | Path, bp: BootstrapParams, progress: Any = None
) -> dict[str, Any]:
    """Tokenizer + model from scratch; returns the loss curve. Deterministic given bp.seed."""
    import torch

    torch.manual_seed(bp.seed)
    torch.set_num_threads(bp.threads)
    retain_freed_memory()
    tokenizer = tiny.make_tokenizer([p + r for p, r in pairs], bp.vocab_size)
    model = tiny.make_model(tokenizer, bp.tiny_config())
    examples = _encode(pairs, tokenizer, bp.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=bp.learning_rate, weight_decay=bp.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / bp.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / bp.max_steps)))
    )
    pad = tokenizer.pad_token_id
    rng = random.Random(bp.seed)
    curve, tokens, start = [], 0, time.perf_counter()
    model.train()
    batches = _batches(examples, bp, rng)
    for step in range(1, bp.max_steps + 1):
        batch = [examples[i] for i in next(batches)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        for row, (seq, plen) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, plen : len(seq)] = torch.tensor(seq[plen:])
            tokens += len(seq)
        # Right padding under causal attention: no real token attends to a pad, and pads carry no
        # label, so no attention mask is needed (SDPA then takes its faster causal path).
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), bp.max_grad_norm)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        if step % bp.log_every == 0 or step == 1:
            curve.append({"step": step, "loss": round(value, 4)})
        if progress is not None:
            progress(step, value)
    model.eval()
    tiny.save(model, tokenizer, out_dir)
    seconds = time.perf_counter() - start
    return {
        "curve": curve,
        "examples": len(examples),
        "train_seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


# ---- evaluation ----------------------------------------------------------------------------------


def evaluate_policy(
    model_dir: str | Path,
    problems: Sequence[dict[str, Any]],
    fmt: FormatParams,
    bp: BootstrapParams,
    sandbox: Sandbox,
    grader: Grader,
    llm_params: LLMParams,
) -> dict[str, Any]:
    """Greedy pass@1 on the held-out split: math without tools (the model writes its own output
    blocks) and with tools (the sandbox runs each code block), overall and per difficulty level;
    code problems with tools, graded by their hidden tests. `with_marker`: the share of those
    traces that say "Wait"/"Alternatively" (`format.hint_markers`) unprompted."""
    backend = load_backend(llm_params, model_dir)
    sampling = Sampling(temperature=0.0, max_tokens=bp.eval_max_tokens, seed=bp.seed)

    def held_out(domain: str) -> list[dict[str, Any]]:
        chosen = sorted(
            (p for p in problems if p["split"] == "eval" and p["domain"] == domain), key=lambda p: p["problem_id"]
        )
        return chosen[: bp.eval_max_problems]

    def run(chosen: list[dict[str, Any]], tools: int) -> tuple[list[bool], float]:
        """Each problem's verdict, and the share of traces with a hint marker (where hint-infer can put a hint)."""
        jobs = [
            TraceJob(
                key=p["problem_id"],
                prompt=render_prompt(p["question"], backend.tokenizer, fmt, "tir"),
                sampling=sampling,
                max_turn_tokens_total=bp.eval_max_total_tokens,
            )
            for p in chosen
        ]
        traces = run_traces(
            backend, sandbox, jobs, fmt, LoopLimits(max_tool_calls=tools, max_marker_hints=0, max_stop_hints=0)
        )
        marked = sum(any(m in t.response for m in fmt.hint_markers) for t in traces)
        return [v.correct for v in grader.grade_many([(p, t.response) for p, t in zip(chosen, traces)])], round(
            marked / max(1, len(traces)), 4
        )

    math, code = held_out("math"), held_out("code")
    results: dict[str, Any] = {}
    for name, tools in (("no_tools", 0), ("tools", bp.eval_max_tool_calls)):
        verdicts, marked = run(math, tools)
        by_level: dict[int, list[bool]] = defaultdict(list)
        for p, ok in zip(math, verdicts):
            by_level[p["difficulty"]].append(ok)
        results[name] = {
            "pass@1": round(sum(verdicts) / max(1, len(verdicts)), 4),
            "per_level": {str(k): round(sum(v) / len(v), 4) for k, v in sorted(by_level.items())},
            "with_marker": marked,
        }
    results["eval_problems"] = len(math)
    verdicts, marked = run(code, bp.eval_max_tool_calls) if code else ([], 0.0)
    results["code"] = {
        "pass@1": round(sum(verdicts) / max(1, len(verdicts)), 4),
        "with_marker": marked,
        "eval_problems": len(code),
    }
    return results
