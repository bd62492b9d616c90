"""python -m stages.rstar_bestofn round=R problems=DIR policy=DIR ppm=DIR metrics=FILE curve=FILE — rStar-Math
best-of-N on held-out problems: policy R samples `rstar_bestofn.n` step-style solutions per problem, PPM R
picks the one whose final step it scores highest; against pass@1, the majority answer (maj@n) and the
oracle pass@n (dvc.yaml's rstar_bestofn@R passes every path).

Inputs: `problems` (the `evaluate` section's held-out split, sources and domains; the first
`rstar_bestofn.max_problems` by id), `policy` (policy R), `ppm` (PPM R); params `rstar_bestofn`, `rstar`
(rounds, PPM batch size), `evaluate` (temperature, top-p and token budgets of the samples), `format`,
`llm`, `sandbox`, `grading`, `seed`.
Outputs: `metrics` (pass@1, maj@n, ppm_best_of_n, pass@n at the full n), `curve` (accuracy per number of
samples 1, 2, 4, ... n, a line per method).
"""

from __future__ import annotations

from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.errors import ParamsError
from tracemill.evaluate import EvalParams
from tracemill.generate import GenParams, pick_problems
from tracemill.policy import check_model_folder
from tracemill.rstar import RStarParams
from tracemill.rstar.bestofn import CSV_COLUMNS, BestOfNParams, curve, sample_groups, summary
from tracemill.runtime import open_runtime


def main() -> None:
    a = stage.args(["round", "problems", "policy", "ppm", "metrics", "curve"])
    params = P.load(stage.params_path())
    mp = P.section(RStarParams, params, "rstar")
    round_ = mp.round_arg(a["round"])
    ep, bp = P.section(EvalParams, params, "evaluate"), P.section(BestOfNParams, params, "rstar_bestofn")
    if not ep.temperature:
        raise ParamsError(
            "params 'evaluate.temperature' = 0: the rstar_bestofn.n samples would all be the greedy answer "
            "— set a temperature > 0"
        )
    policy = check_model_folder(Path(a["policy"]), f"the policy of round {round_} (dvc repro rstar_policy@{round_})")
    ppm_path = check_model_folder(Path(a["ppm"]), f"the PPM of round {round_} (dvc repro rstar_ppm@{round_})")
    problems = pick_problems(
        store.read_rows(a["problems"], "problems"),
        GenParams(
            split=ep.split, sources=ep.sources, domains=ep.domains, max_problems=bp.max_problems or ep.max_problems
        ),
    )
    if not problems:
        raise ParamsError(
            f"rstar_bestofn: no problems in split '{ep.split}' for sources {ep.sources or 'all'} "
            f"and domains {ep.domains}"
        )
    from tracemill.train.ppm import load_ppm_beside  # torch: only once the inputs are known to be there

    print(
        f"rstar_bestofn round {round_}: {policy} samples {bp.n} per problem on {len(problems)} {ep.split} problems, "
        f"{ppm_path} picks ...",
        flush=True,
    )
    with open_runtime(params, policy, f"rstar_r{round_}") as rt:
        ppm = load_ppm_beside(ppm_path, rt.backend, mp.ppm_batch_size)
        groups = sample_groups(rt, ppm, problems, ep, bp.n, int(params.get("seed", 0)))
    metrics = summary(groups)
    store.write_json(
        a["metrics"], {"round": round_, "policy": str(policy), "ppm": str(ppm_path), "split": ep.split, **metrics}
    )
    store.write_csv(a["curve"], curve(groups, round_), CSV_COLUMNS)
    print(
        f"rstar_bestofn round {round_}: "
        + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "@" in k or "_of_" in k)
    )


if __name__ == "__main__":
    stage.run(main)
