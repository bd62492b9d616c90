"""python -m stages.bootstrap model=DIR metrics=FILE loss_plot=FILE — train the embedded tiny policy from a
synthetic corpus.

Inputs: params `synthetic`, `bootstrap`, `format`, `start` (its hint library); `llm`, `sandbox`, `grading` for
the evaluation. The corpus is drawn from the synthetic train split (the one the problems stage writes); the eval
split is never trained on.
Outputs: `model` (a Hugging Face model folder), `metrics` (greedy pass@1 on math without and with tools,
per level, and on code), `loss_plot`.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.bootstrap import BootstrapParams, corpus, evaluate_policy, train
from tracemill.formats import FormatParams
from tracemill.grading import GradingParams, get_grader
from tracemill.llm import LLMParams
from tracemill.sandbox import SandboxParams, open_sandbox
from tracemill.start_params import StartParams
from tracemill.synthetic import SyntheticParams, synthetic_problems


def _progress_lines(bp: BootstrapParams) -> Callable[[int, float], None]:
    """Plain log lines, not a live bar: `dvc repro` pipes the output, where a bar never redraws."""
    start = time.perf_counter()

    def report(step: int, loss: float) -> None:
        if step % bp.log_every and step != bp.max_steps:
            return
        elapsed = time.perf_counter() - start
        left = elapsed / step * (bp.max_steps - step)
        print(
            f"bootstrap train: step {step}/{bp.max_steps} loss {loss:.3f} {elapsed:.0f}s elapsed, ~{left:.0f}s left",
            flush=True,
        )

    return report


def main() -> None:
    a = stage.args(["model", "metrics", "loss_plot"])
    model, plot = Path(a["model"]), Path(a["loss_plot"])
    params = P.load(stage.params_path())
    syn = P.section(SyntheticParams, params, "synthetic")
    bp = P.section(BootstrapParams, params, "bootstrap")
    fmt = P.section(FormatParams, params, "format")
    llm = P.section(LLMParams, params, "llm")
    problems = synthetic_problems(syn)
    pairs = corpus(problems, fmt, bp, P.section(StartParams, params, "start").hints.library)
    partial = model.with_name(model.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = train(pairs, partial, bp, progress=_progress_lines(bp))
    shutil.rmtree(model, ignore_errors=True)
    os.replace(partial, model)  # a killed run never leaves a half-written model
    with (
        open_sandbox(P.section(SandboxParams, params, "sandbox")) as sandbox,
        get_grader(P.section(GradingParams, params, "grading"), sandbox) as grader,
    ):
        evaluation = evaluate_policy(model, problems, fmt, bp, sandbox, grader, llm)
    size = sum(f.stat().st_size for f in model.iterdir())
    store.write_json(
        a["metrics"],
        {
            **evaluation,
            "parameters": result["parameters"],
            "corpus_examples": result["examples"],
            "train_seconds": result["train_seconds"],
            "train_tokens_per_s": result["tokens_per_s"],
            "final_loss": result["curve"][-1]["loss"],
            "model_bytes": size,
        },
    )
    plot.parent.mkdir(parents=True, exist_ok=True)
    with open(plot, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "loss"])
        writer.writeheader()
        writer.writerows(result["curve"])
    print(
        f"bootstrap: pass@1 no tools {evaluation['no_tools']['pass@1']:.3f}, "
        f"with tools {evaluation['tools']['pass@1']:.3f}, "
        f"code {evaluation['code']['pass@1']:.3f}, {size / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    stage.run(main)
