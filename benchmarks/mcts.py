"""Search overhead of the batched MCTS against plain batched sampling on the same backend, in one run.

    .venv/bin/python benchmarks/mcts.py [--model models/bootstrap] [--problems 16] [--rollouts 8]

1. A round of search over `--problems` train problems (params.yaml's `rstar`, `llm`, `sandbox`,
   `grading`, `format` sections; the flags override the search size): wall time and generated tokens.
2. Plain batched sampling on the same backend: every problem's steps prompt, `children` samples
   each, whole solutions in one call per round, repeated until it has generated at least as many
   tokens as the search. Its throughput gives the time the search's tokens cost without search.

Overhead = search wall time / (search tokens / sampling throughput) - 1 (goal: at most 20 %). The
search's time is also split into generation, sandbox, grading and bookkeeping, so the cause of an
overhead is visible: smaller batches as trees finish, per-step prefill, or work outside generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import store
from tracemill.formats import render_prompt
from tracemill.llm import Request
from tracemill.rstar import RStarParams, Search
from tracemill.runtime import open_runtime
from tracemill.synthetic import SyntheticParams, synthetic_problems


def train_problems(count: int) -> list[dict[str, Any]]:
    """Train-split math problems: data/problems when the problems stage ran, else the synthetic generator."""
    rows = (
        store.read_rows("data/problems", "problems")
        if Path("data/problems/problems").is_dir()
        else synthetic_problems(SyntheticParams())
    )
    picked = sorted(
        (p for p in rows if p["split"] == "train" and p["domain"] == "math" and p.get("answer")),
        key=lambda p: p["problem_id"],
    )
    return picked[:count]


def plain_sampling(backend: Any, prompts: list[str], mp: RStarParams, tokens_goal: int, seed: int) -> tuple[int, float]:
    """(tokens, seconds) of whole-solution sampling, batched like the search's calls, until tokens_goal."""
    tokens, seconds, call = 0, 0.0, 0
    while tokens < tokens_goal:
        requests = [
            Request(
                prompt=p,
                n=mp.children,
                temperature=mp.temperature,
                top_p=mp.top_p,
                max_tokens=mp.max_step_tokens * mp.max_depth,
                seed=seed + call,
            )
            for p in prompts
        ]
        start = time.perf_counter()
        outs = backend.generate(requests)
        seconds += time.perf_counter() - start
        tokens += sum(c.generated_tokens for row in outs for c in row)
        backend.release([c for row in outs for c in row])
        call += 1
    return tokens, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/bootstrap")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--rollouts", type=int, default=None)
    ap.add_argument("--children", type=int, default=None)
    ap.add_argument("--max-depth", type=int, default=None)
    args = ap.parse_args()
    params = P.load(args.params)
    mp = P.section(RStarParams, params, "rstar")
    overrides = {
        k: v
        for k, v in {"rollouts": args.rollouts, "children": args.children, "max_depth": args.max_depth}.items()
        if v
    }
    mp = dataclasses.replace(mp, **overrides)
    seed = int(params.get("seed", 0))
    problems = train_problems(args.problems)
    print(
        f"model: {args.model}; {len(problems)} problems; rollouts {mp.rollouts}, children {mp.children}, "
        f"max depth {mp.max_depth}"
    )
    with open_runtime(params, args.model, Path(args.model).name) as rt:
        search = Search(rt.backend, rt.sandbox, rt.grader, rt.fmt, mp, seed)
        trees = search.run(problems, 1)
        s = search.stats
        prompts = [render_prompt(p["question"], rt.tokenizer, rt.fmt, "steps") for p in problems]
        plain_tokens, plain_s = plain_sampling(rt.backend, prompts, mp, s.generated_tokens, seed)
    throughput = plain_tokens / plain_s
    equivalent = s.generated_tokens / throughput
    other = s.wall_s - s.generate_s - s.exec_s - s.grade_s - s.ppm_s
    nodes = sum(len(t.nodes) - 1 for t in trees)
    print(
        f"search: {s.wall_s:.1f} s, {s.generated_tokens} tokens ({s.generated_tokens / s.wall_s:.0f} tok/s), "
        f"{s.generate_calls} generate calls, {s.expansions / s.generate_calls:.1f} expansions per call, {nodes} nodes"
    )
    print(
        f"  generation {s.generate_s:.1f} s, sandbox {s.exec_s:.1f} s, grading {s.grade_s:.1f} s, "
        f"bookkeeping {other:.1f} s; "
        f"prompt tokens {s.prompt_tokens}, of them cached {s.cached_prompt_tokens}"
    )
    print(f"plain batched sampling: {plain_tokens} tokens in {plain_s:.1f} s ({throughput:.0f} tok/s)")
    print(
        f"search overhead: {s.wall_s / equivalent - 1:+.1%} "
        f"(generation alone: {s.generate_s / equivalent - 1:+.1%}; goal <= +20%)"
    )


if __name__ == "__main__":
    main()
