"""The sandbox protocol: sessions that run model-written cells with state, limits and containment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from tracemill.errors import ParamsError, TracemillError
from tracemill.params import above, at_least, choices

STATUSES = ("ok", "error", "timeout", "memory", "output_truncated", "killed")
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no change" to setuid


class SandboxError(TracemillError):
    """The sandbox cannot start or cannot give the isolation params ask for."""


@dataclass(frozen=True)
class SandboxParams:
    backend: str = choices("local", "e2b", default="local")
    timeout_s: float = above(0, default=5.0)  # wall time per cell
    memory_mb: int = at_least(1, default=512)  # address space a session may add on top of the preloaded libraries
    max_processes: int = at_least(1, default=16)  # processes (and threads) one session may run at once
    max_output_bytes: int = at_least(1, default=8_192)  # stdout kept per cell; the rest is cut with a marker
    truncation_marker: str = "\n[... output truncated by the sandbox ...]"
    max_open_files: int = at_least(1, default=64)
    max_file_bytes: int = at_least(1, default=16 * 1024 * 1024)
    pool_size: int = at_least(
        1, default=4
    )  # sessions run at once by run_many (they wait on I/O, so more than the cores)
    spares: int = at_least(0, default=4)  # isolated session processes kept ready, so opening a session is one message
    huge_pages: bool = (
        True  # back the zygote's heap with huge pages: a session's fork and exit copy and free fewer page-table entries
    )
    strict: bool = False  # refuse to run when an isolation layer is unavailable
    preload: list[str] = field(
        default_factory=lambda: [
            "math",
            "fractions",
            "itertools",
            "collections",
            "functools",
            "decimal",
            "statistics",
            "re",
            "random",
            "numpy",
            "sympy",
        ]
    )
    # run once in the zygote before any fork: sympy and numpy build caches and import submodules on
    # first use, and children inherit the warm state instead of paying for it in every session
    warmup: str = (
        "import sympy as _s\n_x = _s.symbols('x')\n_s.expand((_x + 1) ** 2); _s.simplify((_x**2 - 1) / (_x - 1))\n"
        "_s.solve(_x**2 - 4, _x); _s.Rational(1, 3) + _s.sqrt(2); _s.factorint(360); _s.nsimplify(0.5)\n"
        "import numpy as _n\n_n.linalg.solve(_n.eye(2), _n.ones(2)); _n.arange(6).reshape(2, 3).sum()\n"
        "del _s, _x, _n"
    )
    echo_last_expression: bool = True  # a cell ending in an expression prints its value, as a notebook does
    # per-session uids when running as root with a world-readable Python: above the system accounts (and never root)
    uid_base: int = at_least(1000, default=200_000)
    uid_range: int = at_least(1, default=50_000)
    e2b_template: str | None = None

    def check(self) -> None:
        highest = self.uid_base + self.uid_range - 1  # sessions take uids uid_base .. uid_base + uid_range - 1
        if highest > MAX_UID:
            raise ParamsError(
                f"params 'sandbox.uid_base' + 'sandbox.uid_range' - 1 = {highest} (the highest session uid) "
                f"must be <= {MAX_UID}, the highest uid Linux gives out"
            )


@dataclass(frozen=True)
class RunResult:
    status: str
    stdout: str
    stderr: str
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "output_truncated")


class Session(Protocol):
    def run(self, code: str) -> RunResult: ...

    def fork(self) -> Session: ...

    def close(self) -> None: ...

    def __enter__(self) -> Session: ...

    def __exit__(self, *exc: object) -> None: ...


class Sandbox(Protocol):
    active_layers: list[str]

    def session(self) -> Session: ...

    def run_many(self, jobs: Sequence[Sequence[str]]) -> list[list[RunResult]]: ...

    def close(self) -> None: ...


def run_sessions(sandbox: Sandbox, jobs: Sequence[Sequence[str]], pool_size: int) -> list[list[RunResult]]:
    """Each job's cells in a fresh session of its own; up to `pool_size` sessions at once."""
    from concurrent.futures import ThreadPoolExecutor

    def one(cells: Sequence[str]) -> list[RunResult]:
        with sandbox.session() as s:
            return [s.run(c) for c in cells]

    with ThreadPoolExecutor(pool_size) as pool:
        return list(pool.map(one, jobs))


@contextmanager
def open_sandbox(params: SandboxParams) -> Iterator[Sandbox]:
    if params.backend == "e2b":
        from tracemill.sandbox.e2b import E2BSandbox

        sandbox: Sandbox = E2BSandbox(params)
    else:
        from tracemill.sandbox.local import LocalSandbox

        sandbox = LocalSandbox(params)
    try:
        yield sandbox
    finally:
        sandbox.close()
