"""The one-GPU device check: SFT tokens/s and MFU, PPM steps/s, generation, DeepSpeed ZeRO-3, GRPO steps.

    python benchmarks/gpu.py [--peak-tflops 989] [--seq-len 4096]     # a few minutes on one GPU
    python benchmarks/gpu.py --tiny --device cpu                        # every section, tiny model, < 3 min

Builds a randomly initialised Qwen2 of Qwen2.5-0.5B's shape (`--tiny`: a few hundred KB) in bf16 with a
tokenizer trained here (tracemill.tiny: nothing is downloaded), and drives the project's own code with it:
(a) `train_sft` at `--seq-len`-token rows, growing the micro-batch until it runs out of memory and keeping
the fastest, with tokens/s and MFU = 6 * params * tokens/s / peak (`--peak-tflops`: 989 is an H200's dense
bf16); (b) `train_ppm` optimizer steps/s; (c) `generation_section` of benchmarks/gpu_generation.py; (d)
`train_sft` under configs/deepspeed/zero3.json with `processes: 1`; (e) GRPO steps of `tracemill.rl.train_rl`.
Each section reports pass or fail with its error and the run goes on; the last line is one JSON summary.
Rows are digit strings (one token per digit), so every sequence has exactly the length asked for; a random
model's throughput does not depend on which ids it reads.

Packages: a stock CUDA PyTorch image (torch >= 2.6) plus this project's pure-Python dependencies, without
touching its torch:
    pip install -e . --no-deps
    pip install "transformers>=4.51" "tokenizers>=0.21" "accelerate>=1.3" "datasets>=3.0" "trl>=1.0" \
        "pyarrow>=17" "pyyaml>=6" "deepspeed>=0.16"
deepspeed is only for (d), which reports 'skipped' without it; `liger-kernel`, when installed, is the fused
LM-head loss that `loss_chunk_tokens` selects on CUDA (the summary says which one ran).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import random
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tracemill import tiny
from tracemill.records import content_id, segment

ROOT = Path(__file__).resolve().parents[1]
ZERO3 = ROOT / "configs" / "deepspeed" / "zero3.json"


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int


QWEN25_05B = Shape(896, 24, 14, 2, 4864, 151_936, 32_768)
TINY = Shape(64, 2, 4, 2, 128, 1024, 1024)


@dataclass(frozen=True)
class Setup:
    """What every section shares: the model folder and how the run was asked for."""

    model: Path
    params: int  # weights counted once (the tied LM head is the embedding): the 6·N of MFU
    device: str  # "cuda" or "cpu"
    seq_len: int
    steps: int  # optimizer steps timed per training run, after `warmup` untimed ones
    warmup: int
    peak_tflops: float
    gradient_checkpointing: bool
    loss_chunk_tokens: int
    max_micro_batch: int
    ppm_micro_batch: int
    grpo_steps: int
    grpo_completion_tokens: int
    generation_batches: tuple[int, ...]
    generation_tokens: int
    workdir: Path

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def build_model(shape: Shape, cuda: bool, where: Path) -> tuple[Path, int]:
    """A random Qwen2 of `shape` saved as a Hugging Face folder (bf16 on CUDA), and its parameter count.
    The embedding keeps the real vocabulary size even though the local tokenizer is smaller, as Qwen2.5's
    own embedding (151,936 rows) is larger than its tokenizer: the LM head's cost is the real one."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny.make_tokenizer([" ".join(str(i) for i in range(2000)), "So the answer is \\boxed{42}."], 512)
    config = Qwen2Config(
        vocab_size=max(shape.vocab_size, len(tokenizer)),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(tiny.IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):  # initialising 0.5B weights on the GPU takes a moment, not seconds
        model = Qwen2ForCausalLM(config)
    if cuda:
        model = model.to(torch.bfloat16)
    count = sum(p.numel() for p in model.parameters())
    path = tiny.save(model, tokenizer, where)
    del model
    release()
    return path, count


def release() -> None:
    """Free what the last run left on the device, so the next one starts from an empty GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


class StepTimer(TrainerCallback):
    """Wall time at the end of each optimizer step; on CUDA after the device has finished it."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.ends = cuda, []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def steps_per_s(self, warmup: int) -> float:
        """Steps after the `warmup` first ones (first-call allocation, kernel selection), per second."""
        first = max(warmup, 1)  # timing starts at the end of a step: the first step has no start mark
        if len(self.ends) <= first:
            raise RuntimeError(f"only {len(self.ends)} optimizer steps ran; {first + 1} or more are needed to time one")
        return (len(self.ends) - first) / (self.ends[-1] - self.ends[first - 1])


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def sft_rows(s: Setup, n: int) -> list[dict[str, Any]]:
    """`n` sft rows of exactly s.seq_len tokens each: the chat-template prompt, then digits, one token each."""
    from transformers import AutoTokenizer

    from tracemill.train.labels import build_labels

    tokenizer = AutoTokenizer.from_pretrained(s.model)
    overhead = len(build_labels(tokenizer, "Add the digits.", [segment("model", "")])[0])
    rng = random.Random(0)
    rows = [
        {
            "example_id": content_id("gpu-bench", i),
            "source": "benchmark",
            "problem_id": None,
            "prompt": "Add the digits.",
            "segments": [segment("model", digits(rng, s.seq_len - overhead))],
        }
        for i in range(n)
    ]
    length = len(build_labels(tokenizer, rows[0]["prompt"], rows[0]["segments"])[0])
    if length != s.seq_len:
        raise RuntimeError(f"a benchmark row is {length} tokens, not --seq-len {s.seq_len}")
    return rows


def timed_knobs(s: Setup, micro: int) -> dict[str, Any]:
    """The training knobs every timed run shares: `micro` rows per optimizer step, no accumulation, no
    held-out split, checkpoint or logging inside the timed steps, bf16 on a GPU."""
    return dict(
        learning_rate=1e-5,
        batch_size=micro,
        micro_batch_size=micro,
        epochs=1.0,
        max_length=s.seq_len,
        warmup_ratio=0.0,
        heldout_fraction=0.0,
        save_steps=10**9,
        logging_steps=10**9,
        bucket_window=1,
        device="auto" if s.cuda else "cpu",
        bf16=s.cuda,
        gradient_checkpointing=s.gradient_checkpointing,
    )


def sft_run(s: Setup, micro: int, deepspeed: str | None = None) -> dict[str, Any]:
    """One train_sft of warmup + steps optimizer steps of `micro` rows (no accumulation); tokens/s and MFU."""
    from tracemill.train import SFTParams, train_sft

    params = SFTParams(**timed_knobs(s, micro), deepspeed=deepspeed, processes=1, loss_chunk_tokens=s.loss_chunk_tokens)
    timer = StepTimer(s.cuda)
    release()
    with tempfile.TemporaryDirectory(dir=s.workdir) as out:
        train_sft(s.model, sft_rows(s, micro * (s.warmup + s.steps)), out, params, resume=False, callbacks=[timer])
    tokens_per_s = timer.steps_per_s(s.warmup) * micro * s.seq_len
    return {
        "micro_batch": micro,
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": float(f"{6 * s.params * tokens_per_s / (s.peak_tflops * 1e12):.3g}"),
        "peak_gib": peak_gib(),
    }


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def sft_section(s: Setup) -> dict[str, Any]:
    """Micro-batches 1, 2, 4, ... up to --max-micro-batch or the first that runs out of memory; the fastest."""
    tried, micro = [], 1
    while micro <= s.max_micro_batch:
        try:
            tried.append(sft_run(s, micro))
        except Exception as exc:  # noqa: BLE001 — only running out of memory ends the search quietly
            if not is_oom(exc) or not tried:
                raise
            tried.append({"micro_batch": micro, "oom": True})
            break
        print(f"   sft micro-batch {micro}: {tried[-1]}", flush=True)
        micro *= 2
    best = max((t for t in tried if "tokens_per_s" in t), key=lambda t: t["tokens_per_s"])
    return {**best, "seq_len": s.seq_len, "loss": loss_kind(s), "tried": tried}


def loss_kind(s: Setup) -> str:
    if not s.loss_chunk_tokens:
        return "plain head (fp32 logits)"
    if s.cuda and importlib.util.find_spec("liger_kernel") is not None:
        return "liger fused linear cross-entropy"
    return f"torch chunks of {s.loss_chunk_tokens} tokens"


def ppm_section(s: Setup) -> dict[str, Any]:
    """train_ppm on pairs whose sides are s.seq_len tokens, ppm_micro_batch pairs per optimizer step."""
    from tracemill.train import PPMParams, train_ppm

    micro, rng = s.ppm_micro_batch, random.Random(1)
    pairs = [
        {
            "pair_id": content_id("gpu-bench-pair", i),
            "problem_id": content_id("p", i),
            "tree_id": content_id("t", i),
            "round": 1,
            "prefix": digits(rng, s.seq_len - 1),
            "chosen": "1",
            "rejected": "2",
            "chosen_q": 1.0,
            "rejected_q": -1.0,
            "final_step": False,
            "metadata": None,
        }
        for i in range(micro * (s.warmup + s.steps))
    ]
    params = PPMParams(**timed_knobs(s, micro), processes=1)
    timer = StepTimer(s.cuda)
    release()
    with tempfile.TemporaryDirectory(dir=s.workdir) as out:
        train_ppm(s.model, pairs, out, params, resume=False, callbacks=[timer])
    steps = timer.steps_per_s(s.warmup)
    return {
        "steps_per_s": round(steps, 3),
        "pairs_per_s": round(steps * micro, 2),
        "micro_batch_pairs": micro,
        "seq_len": s.seq_len,
        "peak_gib": peak_gib(),
    }


def generation_section_of(s: Setup) -> dict[str, Any]:
    """benchmarks/gpu_generation.py's section on this model; 'missing' when that module is absent or broken.
    `python benchmarks/gpu.py` puts this folder first on sys.path, so the module is found beside this file."""
    release()
    try:
        from gpu_generation import generation_section
    except Exception as exc:  # noqa: BLE001 — written separately: any import failure means it is not usable here
        return {"status": "missing", "error": f"{type(exc).__name__}: {exc}"}
    result = generation_section(s.model, None, s.device, s.generation_batches, s.generation_tokens)
    return {"new_tokens": s.generation_tokens, "batches": result, "peak_gib": peak_gib()}


def deepspeed_section(s: Setup, micro: int) -> dict[str, Any]:
    """train_sft under ZeRO-3 in the benchmark's own process (a group of one): the SFT section's best
    micro-batch, halved while it runs out of memory."""
    if importlib.util.find_spec("deepspeed") is None:
        return {"status": "skipped: deepspeed not installed"}
    while True:
        try:
            return {"config": str(ZERO3.relative_to(ROOT)), **sft_run(s, micro, str(ZERO3))}
        except Exception as exc:  # noqa: BLE001 — a smaller micro-batch is the answer to running out of memory
            if not is_oom(exc) or micro == 1:
                raise
            micro //= 2


def grpo_section(s: Setup) -> dict[str, Any]:
    """A few GRPO steps as the rl stage runs them (train_rl: TRL's GRPOTrainer, Satori's rule reward, no
    sandbox or ORM), from restart states of one problem. The time includes loading and saving the policy."""
    from tracemill.formats import FormatParams, last_boxed
    from tracemill.rl import RewardParams, RLParams, train_rl

    fmt = FormatParams()
    problem = {"problem_id": "p1", "question": "What is 6 times 7?", "answer": "42", "domain": "math"}
    states = [
        {
            "state_id": content_id("gpu-bench-state", i),
            "problem_id": "p1",
            "node_id": "n",
            "q": 0.0,
            "prefix_steps": ["We multiply.\n"] + (["<|reflect|>"] if i % 2 else []),
            "outcome": "failed" if i % 2 else "correct",
            "ends_with_reflect": bool(i % 2),
            "metadata": None,
        }
        for i in range(8)
    ]
    params = RLParams(
        max_steps=s.grpo_steps,
        per_device_train_batch_size=8,
        num_generations=8,
        learning_rate=1e-6,
        max_completion_length=s.grpo_completion_tokens,
        temperature=1.0,
        tools=False,
        reward=RewardParams(preference_bonus=False),
        save_steps=10**6,
    )
    release()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=s.workdir) as out:
        result = train_rl(
            s.model, states, {"p1": problem}, lambda p, r: last_boxed(r, fmt) == p["answer"], out, params, fmt
        )
    seconds = time.perf_counter() - start
    return {
        "steps": s.grpo_steps,
        "rollouts": len(result["rollouts"]),
        "completion_tokens": s.grpo_completion_tokens,
        "s_per_step_with_setup": round(seconds / s.grpo_steps, 2),
        "peak_gib": peak_gib(),
    }


def run_section(name: str, fn: Callable[[], dict[str, Any]], summary: dict[str, Any]) -> None:
    """fn's result under `name`, with pass/fail (or fn's own status) and seconds; an error is a 'fail' entry."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    try:
        result = {"status": "pass", **fn()}
    except Exception as exc:  # noqa: BLE001 — one section's failure is its report, not the end of the check
        traceback.print_exc()
        result = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    summary[name] = result
    print(f"{name}: {result['status']}  {json.dumps(result)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random Qwen2 and short sequences, for a CPU run")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the device (H200: 989)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per row; default 4096 (--tiny: 256)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps per run; default 4 (--tiny: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first optimizer steps per run")
    parser.add_argument("--max-micro-batch", type=int, default=None, help="SFT search ceiling; default 64 (--tiny: 2)")
    parser.add_argument("--ppm-micro-batch", type=int, default=None, help="pairs per PPM step; default 4 (--tiny: 2)")
    parser.add_argument(
        "--no-gradient-checkpointing", action="store_true", help="params.gpu.yaml checkpoints; this does not"
    )
    parser.add_argument(
        "--loss-chunk-tokens", type=int, default=None, help="SFT loss_chunk_tokens; default 4096 (--tiny: 64)"
    )
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; use --device cpu (with --tiny)")
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny_run, cuda = args.tiny, args.device == "cuda"

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if tiny_run else full)

    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "tiny": tiny_run,
    }
    with tempfile.TemporaryDirectory(prefix="tracemill-gpu-bench-") as workdir:
        model, count = build_model(TINY if tiny_run else QWEN25_05B, cuda, Path(workdir) / "model")
        summary["model"] = {"shape": dataclasses.asdict(TINY if tiny_run else QWEN25_05B), "params": count}
        s = Setup(
            model=model,
            params=count,
            device=args.device,
            seq_len=pick(args.seq_len, 4096, 256),
            steps=pick(args.steps, 4, 2),
            warmup=args.warmup,
            peak_tflops=args.peak_tflops,
            gradient_checkpointing=not args.no_gradient_checkpointing,
            loss_chunk_tokens=pick(args.loss_chunk_tokens, 4096, 64),
            max_micro_batch=pick(args.max_micro_batch, 64, 2),
            ppm_micro_batch=pick(args.ppm_micro_batch, 4, 2),
            grpo_steps=args.grpo_steps,
            grpo_completion_tokens=16 if tiny_run else 256,
            generation_batches=(8,) if tiny_run else (64, 256),
            generation_tokens=16 if tiny_run else 256,
            workdir=Path(workdir),
        )
        run_section("sft", lambda: sft_section(s), summary)
        run_section("ppm", lambda: ppm_section(s), summary)
        run_section("generation", lambda: generation_section_of(s), summary)
        best = summary["sft"].get("micro_batch", 1)
        run_section("deepspeed_zero3", lambda: deepspeed_section(s, best), summary)
        run_section("grpo", lambda: grpo_section(s), summary)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
