"""Generation cost of tracemill's transformers backend, against its baselines, in one run.

    .venv/bin/python benchmarks/continuation.py [--model models/bootstrap] [--problems 64]

1. Continuations (a hint-infer-shaped workload): generate, stop at "Wait", append a hint,
   continue, append a tool output, continue (three generate calls over all problems). The backend
   that keeps each trace's KV cache is compared with one that re-encodes the whole prefix every
   time: prefix tokens recomputed (goal: at most 5 % of the naive count) and wall clock.
2. Batched throughput: all prompts through `backend.generate` at once against a one-request-at-a-
   time `model.generate` loop on the same prompts (goal: at least 5x on 2 cores).

Without a model folder at --model, a tiny random Qwen2 model is built with `tracemill.tiny` (the
output says so); its text is noise, so it rarely says "Wait" and rounds end at max_tokens.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tracemill import tiny
from tracemill.llm import LLMParams, Request
from tracemill.llm.hf import TransformersBackend

HINT = "Wait, let me check this with Python.\n```python\n"
TOOL_OUTPUT = "```\n```output\n42\n```\n"


def model_folder(path: Path, workdir: Path) -> tuple[Path, str]:
    if (path / "config.json").is_file():
        return path, f"model: {path}"
    corpus = [
        f"Question {i}: what is {i} plus {2 * i}? Wait, {i} + {2 * i} = {3 * i}. The answer is \\boxed{{{3 * i}}}."
        for i in range(300)
    ]
    tok = tiny.make_tokenizer(corpus, 512)
    built = tiny.save(tiny.make_model(tok, tiny.TinyConfig()), tok, workdir / "tiny")
    return built, f"model: '{path}' is absent — built a tiny random model with tracemill.tiny ({tiny.TinyConfig()})"


def prompts(tokenizer: Any, count: int) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Question {i}: what is {i} plus {7 * i}? Put the answer in \\boxed{{}}."}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(count)
    ]


def hint_infer(backend: TransformersBackend, texts: list[str], max_tokens: int) -> dict[str, float]:
    """Three generate calls; returns the prefix tokens recomputed in continuations and the wall time."""
    common = dict(stop=["Wait"], temperature=0.0, max_tokens=max_tokens)
    start = time.perf_counter()
    outs = [o[0] for o in backend.generate([Request(prompt=t, **common) for t in texts])]
    prefill = sum(c.prompt_tokens - c.cached_prompt_tokens for c in outs)
    recomputed = prefix = 0
    for append in (HINT, TOOL_OUTPUT):
        appended = len(backend.encode(append))
        outs = [o[0] for o in backend.generate([Request(continues=c, append=append, **common) for c in outs])]
        for c in outs:
            prefix += c.prompt_tokens - appended
            recomputed += max(0, c.prompt_tokens - c.cached_prompt_tokens - appended)
            prefill += c.prompt_tokens - c.cached_prompt_tokens
    wall = time.perf_counter() - start
    backend.release(outs)
    return {"wall": wall, "recomputed": recomputed, "prefix": prefix, "prefill": prefill}


def throughput(backend: TransformersBackend, texts: list[str], max_tokens: int) -> tuple[float, float]:
    """Generated tokens per second: batched backend vs a model.generate loop, greedy, same prompts."""
    start = time.perf_counter()
    outs = backend.generate([Request(prompt=t, temperature=0.0, max_tokens=max_tokens) for t in texts])
    batched = sum(o[0].generated_tokens for o in outs) / (time.perf_counter() - start)
    backend.release([o[0] for o in outs])
    model, tok = backend.model, backend.tokenizer
    generated = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt", add_special_tokens=False).input_ids
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            generated += out.shape[1] - ids.shape[1]
    loop = generated / (time.perf_counter() - start)
    return batched, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/bootstrap"))
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        path, note = model_folder(args.model, Path(workdir))
        print(note)
        params = LLMParams(device="cpu", max_batch=args.problems)
        cached = TransformersBackend(path, params)
        naive = TransformersBackend(path, params, reuse_cache=False)
        texts = prompts(cached.tokenizer, args.problems)
        hint_infer(cached, texts[:4], 8)  # warm-up: first-call allocations and kernel selection
        ours, base = hint_infer(cached, texts, args.max_tokens), hint_infer(naive, texts, args.max_tokens)
        print(
            f"\n1. continuations: {args.problems} problems, 3 generate calls, max_tokens={args.max_tokens}, "
            f"{args.threads} threads"
        )
        print(
            f"   prefix tokens recomputed   kv-cache {ours['recomputed']:>8.0f}   naive {base['recomputed']:>8.0f}   "
            f"ratio {ours['recomputed'] / base['recomputed']:.2%}   (goal <= 5 %)"
        )
        print(
            f"   prompt tokens prefilled    kv-cache {ours['prefill']:>8.0f}   naive {base['prefill']:>8.0f}   "
            f"ratio {ours['prefill'] / base['prefill']:.2%}   (incl. first prompts and appended text)"
        )
        print(
            f"   wall clock                 kv-cache {ours['wall']:>7.2f}s   naive {base['wall']:>7.2f}s   "
            f"naive/kv-cache {base['wall'] / ours['wall']:.2f}x"
        )
        batched, loop = throughput(cached, texts, args.max_tokens)
        print(f"\n2. batched throughput: {args.problems} prompts, greedy, max_tokens={args.max_tokens}")
        print(
            f"   backend.generate {batched:>8.1f} tok/s   model.generate loop {loop:>8.1f} tok/s   "
            f"ratio {batched / loop:.1f}x   (goal >= 5x)"
        )


if __name__ == "__main__":
    main()
