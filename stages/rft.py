"""python -m stages.rft — START's RFT sampling: k tool-integrated samples per problem from START-0
(paper: k=16, T=0.6, top-p 0.95), graded.

Inputs: data/problems, models/start0, params `start.rft`, `run`, `format`, `llm`, `sandbox`, `grading`.
Outputs: data/rft/traces (sharded, resumable), metrics/rft.json.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tracemill import params as P
from tracemill import runner, stage, store
from tracemill.policy import check_model_folder
from tracemill.runtime import open_runtime
from tracemill.start import StartParams, pick_problems, rft_shard, trace_metrics

OUT = "data/rft"
MODEL = Path("models/start0")


def main() -> None:
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    run = P.section(runner.RunParams, params, "run")
    check_model_folder(MODEL)
    problems = pick_problems(store.read_rows("data/problems", "problems"), sp.rft)
    fingerprint = stage.fingerprint([sp, params.get("format"), params.get("seed"), run.shards], [MODEL, "data/problems"])
    out = store.StageOutput(OUT, ["traces"], fingerprint)
    with open_runtime(params, MODEL, "start0") as rt:
        work = partial(rft_shard, rt=rt, sp=sp, seed=int(params.get("seed", 0)))
        counts = runner.run_sharded(out, problems, "problem_id", work, run, "rft")
    if counts is None:
        return
    metrics = trace_metrics("data", "rft")
    store.write_json("metrics/rft.json", {**metrics, "problems": len(problems), "k": sp.rft.k})
    print(f"rft: {counts['traces']} samples, accuracy {metrics['accuracy']}")


if __name__ == "__main__":
    stage.run(main)
