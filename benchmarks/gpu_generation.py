"""Greedy generation throughput of tracemill's transformers backend against one batched
`model.generate` call on the same prompts, per batch size.

    .venv/bin/python benchmarks/gpu_generation.py --tiny [--batch-sizes 8 32] [--new-tokens 32]
    .venv/bin/python benchmarks/gpu_generation.py --model PATH [--device cuda]

`generation_section` is the piece a GPU benchmark calls with a loaded model; run alone with
--tiny it builds a tiny random Qwen2 (`tracemill.tiny`) and times it on the CPU. Both sides
generate up to `new_tokens` per prompt and count only the tokens a request really produced (a
row that ends on an end-of-turn token early is padded by `model.generate` and not counted), so
tokens/s is useful tokens per wall-clock second, prefill included. Goal on a GPU: ours >= 1.5x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from continuation import model_folder, prompts

from tracemill.llm import LLMParams, Request
from tracemill.llm.hf import TransformersBackend

WARMUP_PROMPTS = 4  # first-call allocations and kernel selection stay out of the timings
WARMUP_TOKENS = 4


def generation_section(
    model_path_or_model: Any, tokenizer: Any, device: str, batch_sizes: Sequence[int] = (64, 256), new_tokens: int = 256
) -> dict:
    """{batch: {"ours_tok_s", "generate_tok_s", "ratio"}} for greedy decoding of `batch` prompts.
    A path is loaded in bfloat16 on CUDA and float32 elsewhere; `tokenizer` None loads it from the path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model_path_or_model, (str, Path)):
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path_or_model, dtype=dtype).to(device).eval()
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path_or_model)
    else:
        model = model_path_or_model.to(device).eval()
    result: dict[int, dict[str, float]] = {}
    for batch in batch_sizes:
        texts = prompts(tokenizer, batch)
        backend = TransformersBackend.from_model(model, tokenizer, LLMParams(max_batch=batch))
        _ours(backend, texts[:WARMUP_PROMPTS], WARMUP_TOKENS)
        _generate(model, tokenizer, texts[:WARMUP_PROMPTS], WARMUP_TOKENS)
        ours, base = _ours(backend, texts, new_tokens), _generate(model, tokenizer, texts, new_tokens)
        result[batch] = {"ours_tok_s": ours, "generate_tok_s": base, "ratio": ours / base}
    return result


def _ours(backend: TransformersBackend, texts: list[str], new_tokens: int) -> float:
    start = time.perf_counter()
    outs = [o[0] for o in backend.generate([Request(prompt=t, temperature=0.0, max_tokens=new_tokens) for t in texts])]
    seconds = time.perf_counter() - start  # completions are host objects: the device is done
    backend.release(outs)
    return sum(c.generated_tokens for c in outs) / seconds


def _generate(model: Any, tokenizer: Any, texts: list[str], new_tokens: int) -> float:
    tokenizer.padding_side = "left"  # batched decoder-only generation pads on the left
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    eos = model.generation_config.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = out[:, batch.input_ids.shape[1] :]
    # a row's useful tokens run up to and including its first end-of-turn token; the rest is padding
    ended = torch.isin(new, eos_ids).int().cumsum(dim=1)
    useful = int(((ended == 0) | ((ended == 1) & torch.isin(new, eos_ids))).sum())  # .sum() syncs the device
    return useful / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random Qwen2 built with tracemill.tiny")
    parser.add_argument("--model", type=Path, default=Path("models/bootstrap"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 64 256 on CUDA, 8 32 on CPU")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 256 on CUDA, 32 on CPU")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sizes = args.batch_sizes or ([64, 256] if cuda else [8, 32])
    new_tokens = args.new_tokens or (256 if cuda else 32)
    with tempfile.TemporaryDirectory() as workdir:
        path, note = model_folder(Path(workdir) / "absent" if args.tiny else args.model, Path(workdir))
        print(note)
        result = generation_section(path, None, args.device, sizes, new_tokens)
    print(f"greedy, {new_tokens} new tokens, device {args.device}")
    for batch, row in result.items():
        print(
            f"   batch {batch:>4}   ours {row['ours_tok_s']:>9.1f} tok/s   "
            f"model.generate {row['generate_tok_s']:>9.1f} tok/s   "
            f"ratio {row['ratio']:.2f}x   (goal on a GPU >= 1.5x)"
        )


if __name__ == "__main__":
    main()
