"""python -m stages.hint_infer — START hint-infer: a greedy trace per problem, then hinted traces
(each a seeded draw of hint kind, wording and marker; `traces.hint_at` says where each hint landed).

Inputs: data/problems, the policy (models/bootstrap or policy.model), params `start`, `run`,
`format`, `llm`, `sandbox`, `grading`, `seed`.
Outputs: data/hint_infer/traces (sharded, resumable), metrics/hint_infer.json (with `hint_at`: hints
after a marker / at the stop),
plots/hint_success.csv (success rate and greedy fixes per hint kind).
"""

from __future__ import annotations

from functools import partial

from tracemill import params as P
from tracemill import runner, stage, store
from tracemill.policy import resolve_policy
from tracemill.runtime import open_runtime
from tracemill.start import StartParams, hint_infer_shard, pick_problems, trace_metrics

OUT = "data/hint_infer"


def main() -> None:
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    run = P.section(runner.RunParams, params, "run")
    model_path, model_name = resolve_policy(params)
    problems = pick_problems(store.read_rows("data/problems", "problems"), sp.hint_infer)
    fingerprint = stage.fingerprint([sp, params.get("format"), params.get("seed"), run.shards], [model_path, "data/problems"])
    out = store.StageOutput(OUT, ["traces"], fingerprint)
    with open_runtime(params, model_path, model_name) as rt:
        work = partial(hint_infer_shard, rt=rt, sp=sp, seed=int(params.get("seed", 0)))
        counts = runner.run_sharded(out, problems, "problem_id", work, run, "hint_infer")
    if counts is None:
        print(f"hint_infer: worker {run.worker_index} of {run.workers} done; merge the workers' outputs to finish")
        return
    metrics = trace_metrics("data", "hint_infer")
    store.write_json("metrics/hint_infer.json", {**metrics, "problems": len(problems)})
    store.write_csv("plots/hint_success.csv", [{"hint_kind": k, **v} for k, v in metrics["hint_success"].items()])
    print(f"hint_infer: {counts['traces']} traces for {len(problems)} problems; greedy accuracy {metrics['greedy_accuracy']}")


if __name__ == "__main__":
    stage.run(main)
