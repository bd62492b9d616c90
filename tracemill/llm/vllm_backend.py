"""The vllm backend: vLLM's offline `LLM` engine, the one file that imports vLLM (the `gpu` extra).

Prefix caching is on (`llm.enable_prefix_caching`), so a continuation, sent as exact token ids
(`TokensPrompt`: its predecessor's prompt and generated ids, then the tokens of `append`), finds
its prefix's KV blocks already computed; the engine's continuous batching schedules all requests
of a call together. `cached_prompt_tokens` is vLLM's `RequestOutput.num_cached_tokens`. Each
sample is its own prompt (n=1) seeded `seed * 1_000_003 + j`, as in the transformers backend.

Data parallel: vLLM's `LLM` does not run data parallel inside one process; with
`data_parallel_size > 1` each rank is its own process started by torchrun
(`torchrun --nproc-per-node=TP*DP ...`), the engine uses the `external_launcher` executor, and
the stage generates its own shard of problems on each rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracemill.errors import TracemillError
from tracemill.llm.base import Completion, LLMParams, Request


@dataclass(frozen=True)
class _Seq:
    ids: list[int]  # prompt and kept generated tokens
    tail: str  # returned text after ids (the part of a token before a stop string)


class VLLMBackend:
    def __init__(self, model_path: str | Path, params: LLMParams) -> None:
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            dtype=params.dtype,
            tensor_parallel_size=params.tensor_parallel_size,
            enable_prefix_caching=params.enable_prefix_caching,
            gpu_memory_utilization=params.gpu_memory_utilization,
            max_model_len=params.max_model_len,
        )
        if params.data_parallel_size > 1:
            kwargs.update(
                data_parallel_size=params.data_parallel_size, distributed_executor_backend="external_launcher"
            )
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._live: dict[int, _Seq] = {}
        self._ids = itertools.count()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        prompts, sampling, owners = [], [], []
        for index, request in enumerate(requests):
            ids = self._input_ids(request)
            for sample in range(request.n):
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                sampling.append(
                    SamplingParams(
                        n=1,
                        temperature=request.temperature,
                        top_p=request.top_p,
                        max_tokens=request.max_tokens,
                        seed=int(request.seed) * 1_000_003 + sample,
                        stop=list(request.stop),
                        include_stop_str_in_output=False,
                        logprobs=0 if request.logprobs else None,
                        # meta-action tokens (<|reflect|> ...) are special tokens and belong in the text
                        skip_special_tokens=False,
                        spaces_between_special_tokens=False,
                    )
                )
                owners.append(index)
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        out: list[list[Completion]] = [[] for _ in requests]
        for owner, result in zip(owners, outputs):
            out[owner].append(self._completion(requests[owner], result))
        return out

    def release(self, completions: Sequence[Any]) -> None:
        for c in completions:
            self._live.pop(c.handle if isinstance(c, Completion) else c, None)

    def _input_ids(self, request: Request) -> list[int]:
        if request.prompt is not None:
            return list(request.prompt) if isinstance(request.prompt, tuple) else self.encode(request.prompt)
        handle = request.continues.handle if isinstance(request.continues, Completion) else request.continues
        seq = self._live.get(handle)
        if seq is None:
            raise TracemillError(
                f"generation handle {handle!r} is unknown or was released — a continuation needs a live predecessor"
            )
        return seq.ids + self.encode(seq.tail + request.append)

    def _completion(self, request: Request, result: Any) -> Completion:
        output = result.outputs[0]
        gen = list(output.token_ids)
        eos = output.finish_reason == "stop" and not isinstance(output.stop_reason, str)
        if eos and gen:
            gen = gen[:-1]  # the end token itself is not part of the text
        kept = len(gen)
        while kept and not output.text.startswith(self._text(gen[:kept])):
            kept -= 1
        covered = self._text(gen[:kept])
        handle = next(self._ids)
        self._live[handle] = _Seq(ids=list(result.prompt_token_ids) + gen[:kept], tail=output.text[len(covered) :])
        if output.finish_reason == "length":
            finish, stop = "length", None
        else:
            finish, stop = ("eos", None) if eos else ("stop", output.stop_reason)
        logprobs = None
        if request.logprobs and output.logprobs is not None:
            logprobs = [step[token].logprob for step, token in zip(output.logprobs, output.token_ids)]
        return Completion(
            text=output.text,
            finish_reason=finish,
            stop_reason=stop,
            prompt_tokens=len(result.prompt_token_ids),
            cached_prompt_tokens=int(result.num_cached_tokens or 0),
            generated_tokens=len(output.token_ids),
            handle=handle,
            logprobs=logprobs,
        )

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
