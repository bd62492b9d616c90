"""What a generating stage opens once: the policy, the generation backend, the sandbox, the grader.

Every generating stage (hint_infer, rft, rstar_search, evaluate) reads the same params sections through
`open_runtime`, so a switch of backend or sandbox in params.yaml reaches all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracemill import params as P
from tracemill.formats import FormatParams
from tracemill.llm import Backend, LLMParams, load_backend
from tracemill.sandbox import SandboxParams, open_sandbox
from tracemill.sandbox.base import Sandbox

if TYPE_CHECKING:  # grading loads mpmath: only open_runtime, which builds a grader, pays for it
    from tracemill.grading import Grader


@dataclass
class Runtime:
    model_path: Path
    model_name: str
    backend: Backend
    sandbox: Sandbox
    grader: Grader
    fmt: FormatParams

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer


@contextmanager
def open_runtime(params: dict[str, Any], model_path: str | Path, model_name: str) -> Iterator[Runtime]:
    """Open backend, sandbox and grader for `model_path`; everything is closed on exit."""
    from tracemill.grading import GradingParams, get_grader

    fmt = P.section(FormatParams, params, "format")
    llm_params = P.section(LLMParams, params, "llm")
    sandbox_params = P.section(SandboxParams, params, "sandbox")
    grading_params = P.section(GradingParams, params, "grading")
    with ExitStack() as stack:
        sandbox = stack.enter_context(open_sandbox(sandbox_params))
        grader = stack.enter_context(get_grader(grading_params, sandbox=sandbox))
        backend = load_backend(llm_params, str(model_path))
        stack.callback(getattr(backend, "close", lambda: None))
        yield Runtime(Path(model_path), model_name, backend, sandbox, grader, fmt)
