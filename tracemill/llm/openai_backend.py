"""The openai backend: any OpenAI-compatible completions server (vllm serve, SGLang, llama.cpp
server, `python -m tracemill.llm.server`).

Text-level: the server tokenizes, so a continuation sends its whole text (the predecessor's text
plus `append`) and the server's own prefix cache decides what is reused; `cached_prompt_tokens`
is read from `usage.prompt_tokens_details.cached_tokens` (vllm serve reports it with
`--enable-prompt-tokens-details`), 0 where a server does not say. Each sample is one HTTP request
(n=1), so every completion carries its own usage; sample j of a request is sent with seed
`seed * 1_000_003 + j`. Requests run `concurrency` at a time and are retried with backoff on
connection errors, 429 and 5xx. The tokenizer is read from the local model folder so prompts are
rendered with the model's own chat template.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tracemill.errors import TracemillError
from tracemill.llm.base import Completion, LLMParams, Request

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    def __init__(self, model_path: str, params: LLMParams) -> None:
        from transformers import AutoTokenizer

        if not (Path(model_path) / "tokenizer_config.json").is_file():
            raise TracemillError(
                f"model path '{model_path}' has no tokenizer_config.json — the openai backend renders prompts "
                "with the model's own tokenizer: run 'dvc repro bootstrap' or set policy.model in params.yaml "
                "to the local folder"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.params = params
        self.model = params.served_model or model_path
        key = os.environ.get(params.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=params.concurrency, max_keepalive_connections=params.concurrency)
        self.client = httpx.Client(
            base_url=params.base_url.rstrip("/"), headers=headers, timeout=params.timeout_s, limits=limits
        )

    def generate(self, requests: Sequence[Request]) -> list[list[Completion]]:
        jobs = [(request, j) for request in requests for j in range(request.n)]
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            done = list(pool.map(lambda job: self._complete(*job), jobs))
        out: list[list[Completion]] = []
        for request in requests:
            out.append(done[: request.n])
            done = done[request.n :]
        return out

    def release(self, completions: Sequence[Any]) -> None:
        """Nothing to free here: the server's prefix cache evicts on its own."""

    def close(self) -> None:
        self.client.close()

    def _prompt(self, request: Request) -> str:
        if isinstance(request.prompt, tuple):
            raise TracemillError(
                "the openai backend takes text prompts; token ids need the transformers or vllm backend"
            )
        if request.prompt is not None:
            return request.prompt
        handle = request.continues.handle if isinstance(request.continues, Completion) else request.continues
        return handle + request.append

    def _complete(self, request: Request, sample: int) -> Completion:
        prompt = self._prompt(request)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "n": 1,
            "seed": int(request.seed) * 1_000_003 + sample,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.logprobs:
            body["logprobs"] = 0
        reply = self._post(body)
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        logprobs = choice.get("logprobs") or {}
        finish, stop = _finish(choice)
        return Completion(
            text=choice["text"],
            finish_reason=finish,
            stop_reason=stop,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            generated_tokens=int(usage.get("completion_tokens", 0)),
            handle=prompt + choice["text"],
            logprobs=list(logprobs["token_logprobs"]) if request.logprobs and logprobs.get("token_logprobs") else None,
        )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.params.base_url.rstrip('/')}/completions"
        attempt = 0
        while True:
            last = attempt >= self.params.retries
            try:
                reply = self.client.post("/completions", json=body)
            except httpx.TransportError as exc:
                if last:
                    raise TracemillError(
                        f"openai backend: cannot reach {url} ({exc}) — start the server or fix llm.base_url"
                    ) from exc
            else:
                if reply.status_code == 200:
                    return reply.json()
                if reply.status_code not in _RETRY_STATUS or last:
                    raise TracemillError(f"openai backend: {url} answered {reply.status_code}: {reply.text[:500]}")
            time.sleep(min(30.0, 0.5 * 2**attempt))
            attempt += 1


def _finish(choice: dict[str, Any]) -> tuple[str, str | None]:
    """Map OpenAI's finish_reason (+ vLLM's stop_reason) onto stop | eos | length."""
    if choice.get("finish_reason") == "length":
        return "length", None
    reason = choice.get("stop_reason")
    if isinstance(reason, str):
        return "stop", reason
    # vLLM/tracemill report null (or the end token's id) at the end of the turn; other servers
    # do not say which stop matched
    return ("eos", None) if "stop_reason" in choice else ("stop", None)
