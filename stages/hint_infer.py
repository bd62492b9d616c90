"""python -m stages.hint_infer problems=DIR out=DIR metrics=FILE hint_plot=FILE — START hint-infer: a greedy
trace per problem, then hinted traces (each a seeded draw of hint kind, wording and marker; `traces.hint_at`
says where each hint landed).

Inputs: `problems`, the policy (the bootstrap or policy.model), params `start`, `run`,
`format`, `llm`, `sandbox`, `grading`, `seed`.
Outputs: `out`/traces (sharded, resumable), `metrics` (with `hint_at`: hints after a marker / at the
stop), `hint_plot` (success rate and greedy fixes per hint kind).
"""

from __future__ import annotations

from functools import partial

from tracemill import params as P
from tracemill import runner, stage, store
from tracemill.generate import pick_problems
from tracemill.policy import resolve_policy
from tracemill.runtime import open_runtime
from tracemill.start import hint_infer_metrics, hint_infer_shard
from tracemill.start_params import StartParams


def main() -> None:
    a = stage.args(["problems", "out", "metrics", "hint_plot"])
    params = P.load(stage.params_path())
    sp = P.section(StartParams, params, "start")
    run = P.section(runner.RunParams, params, "run")
    model_path, model_name = resolve_policy(params)
    problems = pick_problems(store.read_rows(a["problems"], "problems"), sp.hint_infer)
    fingerprint = stage.fingerprint(
        [sp, params.get("format"), params.get("seed"), run.shards], [model_path, a["problems"]]
    )
    out = store.StageOutput(a["out"], ["traces"], fingerprint)
    with open_runtime(params, model_path, model_name) as rt:
        work = partial(hint_infer_shard, rt=rt, sp=sp, seed=int(params.get("seed", 0)))
        counts = runner.run_sharded(out, problems, "problem_id", work, run, "hint_infer")
    if counts is None:
        print(f"hint_infer: worker {run.worker_index} of {run.workers} done; merge the workers' outputs to finish")
        return
    metrics = hint_infer_metrics(a["out"])
    store.write_json(a["metrics"], {**metrics, "problems": len(problems)})
    store.write_csv(a["hint_plot"], [{"hint_kind": k, **v} for k, v in metrics["hint_success"].items()])
    print(
        f"hint_infer: {counts['traces']} traces for {len(problems)} problems; "
        f"greedy accuracy {metrics['greedy_accuracy']}"
    )


if __name__ == "__main__":
    stage.run(main)
