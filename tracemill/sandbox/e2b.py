"""The `e2b` sandbox: the same protocol on e2b-code-interpreter (one cloud kernel per session).

Needs the `e2b` extra and E2B_API_KEY. Cells map to the kernel's stateful cells; a timeout kills
the cell and reports `timeout`. Forking a session is not possible on a remote kernel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from tracemill.sandbox.base import RunResult, SandboxError, SandboxParams, run_sessions


class E2BSession:
    def __init__(self, params: SandboxParams) -> None:
        from e2b_code_interpreter import Sandbox

        self.params = params
        kwargs = {"template": params.e2b_template} if params.e2b_template else {}
        self.box = Sandbox.create(**kwargs) if hasattr(Sandbox, "create") else Sandbox(**kwargs)

    def run(self, code: str) -> RunResult:
        start = time.perf_counter()
        try:
            execution = self.box.run_code(code, timeout=self.params.timeout_s)
        except Exception as exc:  # the SDK raises its own timeout types per version
            status = "timeout" if "timeout" in type(exc).__name__.lower() else "killed"
            return RunResult(status, "", f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
        stdout = "".join(execution.logs.stdout)
        if execution.text is not None and not stdout:
            stdout = execution.text + "\n"
        limit = self.params.max_output_bytes
        status = "ok"
        if len(stdout) > limit:
            stdout, status = stdout[:limit] + self.params.truncation_marker, "output_truncated"
        stderr = "".join(execution.logs.stderr)
        if execution.error is not None:
            status = "error"
            stderr += f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
        return RunResult(status, stdout, stderr, time.perf_counter() - start)

    def fork(self) -> E2BSession:
        raise SandboxError("the e2b sandbox cannot fork a session's state; use sandbox.backend: local for MCTS")

    def close(self) -> None:
        self.box.kill()

    def __enter__(self) -> E2BSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class E2BSandbox:
    def __init__(self, params: SandboxParams) -> None:
        if not os.environ.get("E2B_API_KEY"):
            raise SandboxError(
                "sandbox.backend is 'e2b' but E2B_API_KEY is not set — export it or use sandbox.backend: local"
            )
        try:
            import e2b_code_interpreter  # noqa: F401
        except ImportError as exc:
            raise SandboxError("sandbox.backend 'e2b' needs the e2b extra: pip install 'tracemill[e2b]'") from exc
        self.params = params
        self.active_layers = ["e2b-microvm"]

    def session(self) -> E2BSession:
        return E2BSession(self.params)

    def run_many(self, jobs: Sequence[Sequence[str]]) -> list[list[RunResult]]:
        return run_sessions(self, jobs, self.params.pool_size)

    def close(self) -> None:
        return None
