"""python -m stages.evaluate — held-out accuracy of every model the graph trained.

Inputs: data/problems (split `evaluate.split`: never in any training table), the model folders in
`evaluate.models` (a null path is the base policy), params `evaluate`, `format`, `llm`, `sandbox`,
`grading`, `policy`, `seed`.
Outputs: data/evaluate/traces (every graded answer, one shard per model, resumable),
metrics/evaluate.json (per model: greedy pass@1 overall and per level, tool calls per problem without
hints, accuracy and tokens per hint round, pass@k, maj@k), plots/eval_pass_at_1.csv (one bar per model),
plots/eval_pass_at_k.csv (pass@k curves), plots/eval_hint_rounds.csv (accuracy per hint round, a line per model).
"""

from __future__ import annotations

from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.evaluate import EvalParams, evaluate_traces, score
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.runtime import open_runtime
from tracemill.start import GenParams, pick_problems

OUT = "data/evaluate"
METRICS = "metrics/evaluate.json"


def main() -> None:
    params = P.load(stage.params_path())
    ep = P.section(EvalParams, params, "evaluate")
    base_path, base_name = resolve_policy(params)
    models = []
    for m in ep.models:  # every folder is checked before any work starts
        path = check_model_folder(Path(m.path), f"evaluate.models[{m.name}].path") if m.path else base_path
        models.append((m, path))
    problems = pick_problems(store.read_rows("data/problems", "problems"),
                             GenParams(split=ep.split, sources=ep.sources, domains=ep.domains, max_problems=ep.max_problems))
    if not problems:
        raise P.ParamsError(f"evaluate: no problems in split '{ep.split}' for sources {ep.sources or 'all'} and domains {ep.domains}")
    seed = int(params.get("seed", 0))
    inputs = ["data/problems", *(str(path) for _, path in models)]
    out = store.StageOutput(OUT, ["traces"], stage.fingerprint([ep, params.get("format"), seed, base_name], inputs))
    for index, (m, path) in enumerate(models):
        if out.is_done(index):
            print(f"evaluate: {m.name} already scored in an earlier run, kept")
            continue
        print(f"evaluate: {m.name} ({path}) on {len(problems)} {ep.split} problems ...", flush=True)
        with open_runtime(params, path, m.name) as rt:
            out.write_shard(index, {"traces": evaluate_traces(rt, problems, ep, m.style, seed)})
    out.finalize(range(len(models)))
    rows = store.read_rows(OUT, "traces")
    scores = {m.name: score([r for r in rows if r["model"] == m.name], problems) for m, _ in models}
    store.write_json(METRICS, {"split": ep.split, "problems": len(problems), "k": ep.k, "models": scores})
    store.write_csv("plots/eval_pass_at_1.csv", [{"model": name, "pass@1": s["pass@1"]} for name, s in scores.items()])
    store.write_csv("plots/eval_pass_at_k.csv", [{"model": name, "k": int(k), "pass@k": v}
                                                 for name, s in scores.items() for k, v in s.get("pass@k", {}).items()])
    store.write_csv("plots/eval_hint_rounds.csv", [{"model": name, "hint_rounds": int(n), "accuracy": r["accuracy"], "tokens": r["tokens"]}
                                                   for name, s in scores.items() for n, r in s["hint_rounds"].items()])
    for name, s in scores.items():
        extra = "".join(f"  pass@{k} {v:.3f}" for k, v in s.get("pass@k", {}).items() if k != "1")
        rounds = " ".join(f"{r['accuracy']:.3f}" for r in s["hint_rounds"].values())
        print(f"evaluate: {name:>12}  greedy pass@1 {s['pass@1']:.3f}{extra}  tool calls/problem {s['tool_calls_per_problem']:.2f}"
              f"  accuracy by hint round {rounds}")


if __name__ == "__main__":
    stage.run(main)
