"""SFT throughput: real (non-pad) tokens per second of train_sft on the bootstrap-sized policy.

    .venv/bin/python benchmarks/sft.py [--model models/bootstrap] [--threads 2]

Trains one epoch on synthetic tool-integrated traces of mixed length with the embedded `train.sft_start`
params (checkpoints off) and prints tokens/s against the goal, and the padding that bucketing leaves.
Without a model at --model it builds an untrained tracemill.tiny model of the bootstrap's size and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import tempfile
from pathlib import Path
from typing import Any

from tracemill import params, tiny
from tracemill.bootstrap import BootstrapParams
from tracemill.records import content_id, segment

GOAL_TOKENS_PER_S = 20_000


def synthetic_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Traces of 1-12 steps, each step with a hint, code and its output, so lengths spread like real data."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        segments = []
        for _ in range(rng.randint(1, 12)):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            segments += [
                segment("model", f" We add {a} and {b} to get {a + b}."),
                segment("hint", " Wait, let me check with code."),
                segment("code", f"\n```python\nprint({a} + {b})\n```"),
                segment("output", f"\n```output\n{a + b}\n```\n"),
            ]
        segments.append(segment("model", f"So the answer is \\boxed{{{rng.randint(0, 999)}}}."))
        rows.append(
            {
                "example_id": content_id("bench", i),
                "source": "benchmark",
                "problem_id": None,
                "prompt": f"Problem {i}: add the numbers step by step.",
                "segments": segments,
            }
        )
    return rows


def bootstrap_sized_policy(rows: list[dict[str, Any]], where: Path) -> Path:
    texts = [r["prompt"] + "".join(s["text"] for s in r["segments"]) for r in rows]
    cfg = BootstrapParams().tiny_config()
    tokenizer = tiny.make_tokenizer(texts, cfg.vocab_size)
    return tiny.save(tiny.make_model(tokenizer, cfg), tokenizer, where)


def padded_tokens(lengths: list[int], micro_batch_size: int, window: int, seed: int) -> int:
    """Tokens the micro-batches of one epoch hold once padded to their longest row."""
    from tracemill.train.hf import BucketSampler

    order = list(BucketSampler(lengths, micro_batch_size, window, seed))
    batches = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/bootstrap"))
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from tracemill.train import TrainParams, train_sft
    from tracemill.train.labels import build_labels

    torch.set_num_threads(args.threads)
    rows = synthetic_rows(args.examples, seed=0)
    base = params.section(TrainParams, params.load(args.params), "train").sft_start
    sft = dataclasses.replace(base, epochs=1.0, heldout_fraction=0.0, save_steps=10**9, logging_steps=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not (model / "config.json").is_file():
            model = bootstrap_sized_policy(rows, Path(tmp) / "policy")
            print(
                f"no model at '{args.model}': built an untrained tracemill.tiny policy of the bootstrap's size "
                f"{BootstrapParams().tiny_config()}"
            )
        tokenizer = AutoTokenizer.from_pretrained(model)
        lengths = [len(build_labels(tokenizer, r["prompt"], r["segments"])[0]) for r in rows]
        lengths = [n for n in lengths if n <= sft.max_length]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        metrics = train_sft(model, rows, Path(tmp) / "out", sft)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    real = metrics["tokens_per_epoch"]
    per_s = real / metrics["train_runtime_s"]
    padding = padded_tokens(lengths, sft.micro_batch_size, sft.bucket_window, sft.seed) / real - 1
    print(
        f"model {model.name}: {metrics['examples']} examples, {real} real tokens, micro-batch {sft.micro_batch_size}, "
        f"{args.threads} threads, {metrics['dropped_too_long']} dropped as too long"
    )
    print(f"padding added by bucketed micro-batches: {padding:.1%}")
    print(f"page faults while training: {faults:,} ({faults / metrics['global_step']:,.0f} per optimizer step)")
    print(
        f"SFT throughput: {per_s:,.0f} real tokens/s in {metrics['train_runtime_s']:.1f} s "
        f"(goal {GOAL_TOKENS_PER_S:,}: {per_s / GOAL_TOKENS_PER_S:.2f}x)"
    )


if __name__ == "__main__":
    main()
