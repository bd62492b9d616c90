"""The generation protocol every backend implements, and the registry that picks one by name.

A request either starts from a `prompt` or `continues` an earlier completion with `append` text
(a hint, a tool output, a search step). Text is tokenised segment by segment: the tokens of a
continuation are the tokens its predecessor was generated from, plus its generated tokens, plus
the tokens of `append`. A backend that keeps state (a KV cache, a server-side prefix cache)
reuses the predecessor's computation and reports how many prompt tokens it did not recompute as
`cached_prompt_tokens`.

Returned text never includes the stop string that ended it; `stop_reason` says which one (the
string may straddle tokens: the cut is exact on the text). `finish_reason` is stop | eos (end of
turn; the end token is not in the text) | length. `generated_tokens` counts every sampled token,
the ones a stop cut away included. On the transformers backend n samples share one prefill (the
first pays for the prompt, the others report it cached); vllm and servers report what their
prefix cache reused. Sample j of a request with seed s draws from seed `s * 1_000_003 + j`, so a
seeded request gives the same samples run to run, however it was batched (transformers: counter-
based draws on the logits' device, see llm/hf.py).

The `openai` backend is text-level: a continuation sends its whole text (predecessor's text plus
`append`), the server tokenizes it and its own prefix cache decides what is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tracemill.errors import TracemillError
from tracemill.params import above, at_least, bounded, choices

BACKENDS = ("transformers", "vllm", "openai")


@dataclass(frozen=True)
class LLMParams:
    backend: str = choices(*BACKENDS, default="transformers")
    dtype: str = choices("auto", "float32", "bfloat16", "float16", default="auto")
    device: str = "auto"  # transformers: cpu | cuda | auto
    max_batch: int = at_least(1, default=64)  # sequences decoded together (transformers)
    kv_cache_tokens: int = at_least(
        0, default=1 << 20
    )  # transformers: KV of finished traces kept for continuations (LRU)
    threads: int = at_least(0, default=0)  # torch CPU threads; 0 keeps torch's choice
    # vllm
    tensor_parallel_size: int = at_least(1, default=1)
    data_parallel_size: int = at_least(1, default=1)
    gpu_memory_utilization: float = bounded(0, 1, lo_open=True, default=0.9)
    enable_prefix_caching: bool = True
    max_model_len: int | None = at_least(1, default=None)
    # openai-compatible server
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    served_model: str | None = None  # model name the server knows; default: the model path
    concurrency: int = at_least(1, default=16)
    retries: int = at_least(0, default=3)
    timeout_s: float = above(0, default=120.0)


@dataclass
class Request:
    prompt: str | tuple[int, ...] | None = None  # text, or token ids (the server's token-id prompts)
    continues: Any = None  # a Completion (or its handle) to continue
    append: str = ""
    stop: list[str] = field(default_factory=list)
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    logprobs: bool = False

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.continues is None):
            raise TracemillError("a generation request needs exactly one of prompt or continues")


@dataclass
class Completion:
    text: str
    finish_reason: str  # stop | length | eos
    stop_reason: str | None
    prompt_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int
    handle: Any = None  # what a continuation needs; backend-specific
    logprobs: list[float] | None = None


class Backend(Protocol):
    tokenizer: Any

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]: ...

    def release(self, completions: Sequence[Any]) -> None: ...


def check_model_dir(model_path: str | Path) -> Path:
    path = Path(model_path)
    if not (path / "config.json").exists():
        raise TracemillError(
            f"model path '{path}' has no config.json — run 'dvc repro bootstrap' or set policy.model in params.yaml"
        )
    return path


def load_backend(params: LLMParams, model_path: str | Path) -> Backend:
    # Each backend module imports this one (Request, Completion): imported here, on use, the two stay acyclic.
    if params.backend == "transformers":
        from tracemill.llm.hf import TransformersBackend

        return TransformersBackend(check_model_dir(model_path), params)
    if params.backend == "vllm":
        from tracemill.llm.vllm_backend import VLLMBackend

        return VLLMBackend(check_model_dir(model_path), params)
    from tracemill.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(str(model_path), params)
