"""python -m stages.evaluate problems=DIR out=DIR metrics=FILE pass_at_1=FILE pass_at_k=FILE hint_rounds=FILE —
held-out accuracy of every model the graph trained.

Inputs: `problems` (split `evaluate.split`: never in any training table), the model folders in
`evaluate.models` (a null path is the base policy), params `evaluate`, `format`, `llm`, `sandbox`,
`grading`, `policy`, `seed`.
Outputs: `out`/traces (every graded answer, one shard per model, resumable), `metrics` (per model:
greedy pass@1 overall and per level, tool calls per problem without hints, accuracy and tokens per hint
round, pass@k, maj@k), `pass_at_1` (one bar per model), `pass_at_k` (pass@k curves), `hint_rounds`
(accuracy per hint round, a line per model).
"""

from __future__ import annotations

from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.evaluate import EvalParams, evaluate_traces, score
from tracemill.generate import GenParams, pick_problems
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.runtime import open_runtime


def main() -> None:
    a = stage.args(["problems", "out", "metrics", "pass_at_1", "pass_at_k", "hint_rounds"])
    params = P.load(stage.params_path())
    ep = P.section(EvalParams, params, "evaluate")
    base_path, base_name = resolve_policy(params)
    models = []
    for m in ep.models:  # every folder is checked before any work starts
        path = check_model_folder(Path(m.path), f"evaluate.models[{m.name}].path") if m.path else base_path
        models.append((m, path))
    problems = pick_problems(
        store.read_rows(a["problems"], "problems"),
        GenParams(split=ep.split, sources=ep.sources, domains=ep.domains, max_problems=ep.max_problems),
    )
    if not problems:
        raise P.ParamsError(
            f"evaluate: no problems in split '{ep.split}' for sources {ep.sources or 'all'} and domains {ep.domains}"
        )
    seed = int(params.get("seed", 0))
    inputs = [a["problems"], *(str(path) for _, path in models)]
    out = store.StageOutput(
        a["out"], ["traces"], stage.fingerprint([ep, params.get("format"), seed, base_name], inputs)
    )
    for index, (m, path) in enumerate(models):
        if out.is_done(index):
            print(f"evaluate: {m.name} already scored in an earlier run, kept")
            continue
        print(f"evaluate: {m.name} ({path}) on {len(problems)} {ep.split} problems ...", flush=True)
        with open_runtime(params, path, m.name) as rt:
            out.write_shard(index, {"traces": evaluate_traces(rt, problems, ep, m.style, seed)})
    out.finalize(range(len(models)))
    rows = store.read_rows(a["out"], "traces")
    scores = {m.name: score([r for r in rows if r["model"] == m.name], problems) for m, _ in models}
    store.write_json(a["metrics"], {"split": ep.split, "problems": len(problems), "k": ep.k, "models": scores})
    store.write_csv(a["pass_at_1"], [{"model": name, "pass@1": s["pass@1"]} for name, s in scores.items()])
    store.write_csv(
        a["pass_at_k"],
        [
            {"model": name, "k": int(k), "pass@k": v}
            for name, s in scores.items()
            for k, v in s.get("pass@k", {}).items()
        ],
    )
    store.write_csv(
        a["hint_rounds"],
        [
            {"model": name, "hint_rounds": int(n), "accuracy": r["accuracy"], "tokens": r["tokens"]}
            for name, s in scores.items()
            for n, r in s["hint_rounds"].items()
        ],
    )
    for name, s in scores.items():
        extra = "".join(f"  pass@{k} {v:.3f}" for k, v in s.get("pass@k", {}).items() if k != "1")
        rounds = " ".join(f"{r['accuracy']:.3f}" for r in s["hint_rounds"].values())
        print(
            f"evaluate: {name:>12}  greedy pass@1 {s['pass@1']:.3f}{extra}  "
            f"tool calls/problem {s['tool_calls_per_problem']:.2f}"
            f"  accuracy by hint round {rounds}"
        )


if __name__ == "__main__":
    stage.run(main)
