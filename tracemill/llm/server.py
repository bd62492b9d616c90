"""A small OpenAI-compatible completions server over any tracemill backend.

`POST /v1/completions` and `GET /v1/models`, enough for the `openai` backend (and curl) to drive a
local model: `python -m tracemill.llm.server --model models/bootstrap --port 8000`. Requests that
arrive together are handed to the backend as one batch, so concurrent clients share decode steps.
Like `vllm serve`, a choice reports `stop_reason` (the matched stop string, null at the end token)
and usage reports `prompt_tokens_details.cached_tokens`.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from tracemill.llm.base import Backend, Completion, LLMParams, Request, load_backend

# How long the batcher waits for more requests after the first one arrives.
_GATHER_S = 0.005


class _Batcher:
    """Collects requests from handler threads and runs them through the backend in batches."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.jobs: queue.Queue[tuple[Request, Future[list[Completion]]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="tracemill-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: Request) -> list[Completion]:
        done: Future[list[Completion]] = Future()
        self.jobs.put((request, done))
        return done.result()

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            time.sleep(_GATHER_S)
            while not self.jobs.empty():
                job = self.jobs.get()
                if job is None:
                    self.jobs.put(None)
                    break
                batch.append(job)
            try:
                results = self.backend.generate([request for request, _ in batch])
            except Exception as exc:  # each waiting client gets the error, the server goes on
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results):
                done.set_result(result)


def request_from_body(body: dict[str, Any]) -> Request:
    """The tracemill Request of an OpenAI completions body (one prompt: text or token ids)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
        raise ValueError("'prompt' must be one string or one list of token ids")
    stop = body.get("stop") or []
    return Request(
        prompt=prompt if isinstance(prompt, str) else tuple(prompt),
        stop=[stop] if isinstance(stop, str) else list(stop),
        n=int(body.get("n", 1)),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        max_tokens=int(body.get("max_tokens", 16)),
        seed=int(body.get("seed") or 0),  # absent or null: Request's default
        logprobs=body.get("logprobs") is not None,
    )


def response_body(model: str, completions: list[Completion]) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "text": c.text,
            "finish_reason": "length" if c.finish_reason == "length" else "stop",
            "stop_reason": c.stop_reason,
            "logprobs": None if c.logprobs is None else {"token_logprobs": list(c.logprobs)},
        }
        for i, c in enumerate(completions)
    ]
    generated = sum(c.generated_tokens for c in completions)
    prompt = completions[0].prompt_tokens
    cached = completions[0].cached_prompt_tokens  # sample 0 paid for the prompt, the others reused it
    return {
        "id": f"cmpl-{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": generated,
            "total_tokens": prompt + generated,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


class CompletionServer:
    """A running server on `host:port` (port 0 picks a free one); `url` is its OpenAI base URL."""

    def __init__(self, backend: Backend, model: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model
        self.batcher = _Batcher(backend)
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="tracemill-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = cast(tuple[str, int], self.httpd.server_address[:2])  # a TCP server: (host, port)
        return f"http://{host}:{port}/v1"

    def start(self) -> CompletionServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.stop()

    def __enter__(self) -> CompletionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(server: CompletionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection pool is reused

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                request = request_from_body(json.loads(self.rfile.read(length)))
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
                return
            try:
                completions = server.batcher.submit(request)
            except Exception as exc:
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            self._send(200, response_body(server.model, completions))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request would drown a generation run's progress."""

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    args = parser.parse_args(argv)
    backend = load_backend(LLMParams(backend=args.backend), args.model)
    server = CompletionServer(backend, args.model, args.host, args.port)
    print(f"serving {args.model} at {server.url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
