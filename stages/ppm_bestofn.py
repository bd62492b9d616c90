"""python -m stages.ppm_bestofn --round 1 — rStar-Math best-of-N on held-out problems: policy r samples
`ppm_bestofn.n` step-style solutions per problem, PPM r picks the one whose final step it scores highest;
against pass@1, the majority answer (maj@n) and the oracle pass@n.

Inputs: data/problems (the `evaluate` section's held-out split, sources and domains; the first
`ppm_bestofn.max_problems` by id), policy r (`mcts.policy_dir`), PPM r (`mcts.ppm_dir`); params
`ppm_bestofn`, `mcts` (rounds, folders, PPM batch size), `evaluate` (temperature, top-p and token budgets of
the samples), `format`, `llm`, `sandbox`, `grading`, `seed`.
Outputs: metrics/ppm_bestofn_round<r>.json (pass@1, maj@n, ppm_best_of_n, pass@n at the full n),
plots/ppm_bestofn_round<r>.csv (accuracy per number of samples 1, 2, 4, ... n, a line per method).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tracemill import params as P
from tracemill import stage, store
from tracemill.bestofn import CSV_COLUMNS, BestOfNParams, curve, sample_groups, summary
from tracemill.errors import ParamsError
from tracemill.evaluate import EvalParams
from tracemill.policy import check_model_folder
from tracemill.runtime import open_runtime
from tracemill.search import MCTSParams
from tracemill.start import GenParams, pick_problems


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.ppm_bestofn", description="rStar-Math best-of-N by PPM, one round")
    parser.add_argument("--round", type=int, required=True, dest="round_")
    round_ = parser.parse_args().round_
    params = P.load(stage.params_path())
    mp = P.section(MCTSParams, params, "mcts")
    if not 1 <= round_ <= mp.rounds:
        raise ParamsError(f"--round {round_} is outside 1..mcts.rounds ({mp.rounds})")
    ep, bp = P.section(EvalParams, params, "evaluate"), P.section(BestOfNParams, params, "ppm_bestofn")
    if not ep.temperature:
        raise ParamsError("params 'evaluate.temperature' = 0: the ppm_bestofn.n samples would all be the greedy answer — set a temperature > 0")
    policy = check_model_folder(Path(mp.policy_dir.format(round=round_)), "mcts.policy_dir")
    ppm_path = check_model_folder(Path(mp.ppm_dir.format(round=round_)), "mcts.ppm_dir")
    problems = pick_problems(store.read_rows("data/problems", "problems"),
                             GenParams(split=ep.split, sources=ep.sources, domains=ep.domains, max_problems=bp.max_problems or ep.max_problems))
    if not problems:
        raise ParamsError(f"ppm_bestofn: no problems in split '{ep.split}' for sources {ep.sources or 'all'} and domains {ep.domains}")
    from tracemill.train.ppm import load_ppm_beside  # torch: only once the inputs are known to be there

    print(f"ppm_bestofn round {round_}: {policy} samples {bp.n} per problem on {len(problems)} {ep.split} problems, {ppm_path} picks ...", flush=True)
    with open_runtime(params, policy, f"rstar_r{round_}") as rt:
        ppm = load_ppm_beside(ppm_path, rt.backend, mp.ppm_batch_size)
        groups = sample_groups(rt, ppm, problems, ep, bp.n, int(params.get("seed", 0)))
    metrics = summary(groups)
    store.write_json(f"metrics/ppm_bestofn_round{round_}.json",
                     {"round": round_, "policy": str(policy), "ppm": str(ppm_path), "split": ep.split, **metrics})
    store.write_csv(f"plots/ppm_bestofn_round{round_}.csv", curve(groups, round_), CSV_COLUMNS)
    print(f"ppm_bestofn round {round_}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "@" in k or "_of_" in k))


if __name__ == "__main__":
    stage.run(main)
