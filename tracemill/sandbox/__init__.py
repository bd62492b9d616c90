"""Run untrusted model code: stateful sessions, bounded time, memory, processes and output, no network."""

from tracemill.sandbox.base import STATUSES, RunResult, SandboxError, SandboxParams, open_sandbox

__all__ = ["STATUSES", "RunResult", "SandboxError", "SandboxParams", "open_sandbox"]
