"""python -m stages.rft problems=DIR policy=DIR out=DIR metrics=FILE — START's RFT sampling: k
tool-integrated samples per problem from START-0 (paper: k=16, T=0.6, top-p 0.95), graded.

Inputs: `problems`, `policy` (START-0), params `start.rft`, `run`, `format`, `llm`, `sandbox`, `grading`.
Outputs: `out`/traces (sharded, resumable), `metrics`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tracemill import params as P
from tracemill import runner, stage, store
from tracemill.generate import pick_problems, trace_metrics
from tracemill.policy import check_model_folder
from tracemill.runtime import open_runtime
from tracemill.start import rft_shard
from tracemill.start_params import StartParams


def main() -> None:
    a = stage.args(["problems", "policy", "out", "metrics"])
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    run = P.section(runner.RunParams, params, "run")
    model = check_model_folder(Path(a["policy"]), "START-0 (dvc repro sft_start0)")
    problems = pick_problems(store.read_rows(a["problems"], "problems"), sp.rft)
    fingerprint = stage.fingerprint([sp, params.get("format"), params.get("seed"), run.shards], [model, a["problems"]])
    out = store.StageOutput(a["out"], ["traces"], fingerprint)
    with open_runtime(params, model, model.name) as rt:
        work = partial(rft_shard, rt=rt, sp=sp, seed=int(params.get("seed", 0)))
        counts = runner.run_sharded(out, problems, "problem_id", work, run, "rft")
    if counts is None:
        return
    metrics = trace_metrics(a["out"], "rft")
    store.write_json(a["metrics"], {**metrics, "problems": len(problems), "k": sp.rft.k})
    print(f"rft: {counts['traces']} samples, accuracy {metrics['accuracy']}")


if __name__ == "__main__":
    stage.run(main)
