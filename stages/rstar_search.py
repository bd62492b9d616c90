"""python -m stages.rstar_search round=R problems=DIR policy=DIR ppm=DIR out=DIR metrics=FILE q_plot=FILE —
rStar-Math code-augmented MCTS, round R of self-evolution (dvc.yaml's rstar_search@R passes every path).

Round r searches with policy r-1 (round 1: `rstar.first_round_model` behind `rstar.first_round_backend`
when set, else the base policy, `policy.model` or the bootstrap; later rounds: `policy`, the rstar_policy
output of round r-1) and, from `rstar.ppm_from_round` on, PPM r-1 (`ppm`), served on the policy's device
(the GPU, bfloat16, when there is one). A PPM round with `rstar.compare_terminal` also searches that many
of its problems without the PPM, so the metrics compare PPM-guided and terminal-guided search on them.
Inputs: `problems` (split `rstar.split`, domains `rstar.domains`), the models above, params `rstar`,
`run`, `format`, `llm`, `sandbox`, `grading`, `seed`.
Outputs: `out`/{nodes,trajectories,pairs,rejected} (sharded, resumable), `metrics` (incl. trajectories
per tree and the share of re-walked rollouts), `q_plot` (Q histogram of visited steps).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import runner, stage, store
from tracemill.errors import ParamsError, TracemillError
from tracemill.generate import pick_problems
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.rstar import RStarParams, q_histogram, round_metrics
from tracemill.rstar.mcts import shard_tables
from tracemill.runtime import open_runtime

TABLES = ["nodes", "trajectories", "pairs", "rejected"]
ARGS = ["round", "problems", "policy", "ppm", "out", "metrics", "q_plot"]


def main() -> None:
    a = stage.args(ARGS)
    params = P.load(stage.params_path())
    mp = P.section(RStarParams, params, "rstar")
    round_ = mp.round_arg(a["round"])
    run = P.section(runner.RunParams, params, "run")
    run = dataclasses.replace(run, shards=mp.shards) if mp.shards else run
    model_path, model_name = _policy(params, mp, round_, Path(a["policy"]))
    if round_ == 1 and mp.first_round_backend:
        params = {**params, "llm": {**(params.get("llm") or {}), "backend": mp.first_round_backend}}
    ppm_path = Path(a["ppm"]) if mp.uses_ppm(round_) else None
    which = mp.problems(round_)
    problems = pick_problems(store.read_rows(a["problems"], "problems"), which)
    if not problems:
        raise ParamsError(
            f"rstar round {round_}: no problems left in split '{mp.split}' for sources {mp.sources or 'all'} "
            f"(rstar.new_problems_each_round skips {which.offset})"
        )
    seed = int(params.get("seed", 0))
    inputs: list[str | Path] = [model_path, a["problems"], *([ppm_path] if ppm_path else [])]
    out_dir = a["out"]
    out = store.StageOutput(
        out_dir, TABLES, stage.fingerprint([mp, round_, params.get("format"), seed, run.shards], inputs)
    )
    from tracemill.train.ppm import load_ppm_beside  # torch: only once the inputs are known to be there

    with open_runtime(params, model_path, model_name) as rt:
        ppm = load_ppm_beside(ppm_path, rt.backend, mp.ppm_batch_size) if ppm_path else None
        work = partial(_shard, rt=rt, mp=mp, round_=round_, seed=seed, ppm=ppm)
        counts = runner.run_sharded(out, problems, "problem_id", work, run, f"rstar_search round {round_}")
        # the same problems without the PPM (the PPM-guided side is the round's own trees, read below)
        same = problems[: mp.compare_terminal] if ppm and counts else []
        terminal = shard_tables(same, rt, mp, round_, seed, None, show_progress=False) if same else None
    if counts is None:
        print(f"rstar_search: worker {run.worker_index} of {run.workers} done; merge the workers' outputs to finish")
        return
    nodes, trajectories, pairs = (store.read_rows(out_dir, t) for t in ("nodes", "trajectories", "pairs"))
    compare = _compare({p["problem_id"] for p in same}, (nodes, trajectories, pairs), terminal) if terminal else None
    metrics = {
        **round_metrics(nodes, trajectories, pairs),
        "round": round_,
        "problems": len(problems),
        "rejected": counts["rejected"],
        "policy": model_name,
        "ppm": str(ppm_path) if ppm_path else None,
        "temperature": mp.temperature_of(round_),
        "rollouts_per_problem": mp.rollouts_of(round_),
        **({"guidance_on_same_problems": compare} if compare else {}),
    }
    store.write_json(a["metrics"], metrics)
    visited = [n["q"] for n in nodes if n["parent_id"] is not None and n["visits"] > 0]
    store.write_csv(a["q_plot"], q_histogram(visited, mp.q_hist_bins))
    print(
        f"rstar_search round {round_}: {metrics['trees']} trees, solve rate {metrics['solve_rate']}, "
        f"{metrics['nodes']} nodes, {metrics['selected']} selected trajectories, {metrics['pairs']} pairs"
    )


def _shard(
    shard: int, problems: list[dict[str, Any]], rt: Any, mp: RStarParams, round_: int, seed: int, ppm: Any
) -> dict[str, Any]:
    """The runner's work function: one shard's problems, searched together."""
    return shard_tables(problems, rt, mp, round_, seed, ppm)


def _compare(
    ids: set[str], guided: tuple[list[dict[str, Any]], ...], terminal: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Solve rate and trajectories per tree of the same problems searched with the PPM (the round's trees)
    and without it."""
    keys = (
        "trees",
        "solve_rate",
        "trajectories_per_tree",
        "correct_trajectories_per_solved_tree",
        "rewalked_rollout_share",
    )
    mine = [[r for r in rows if r["problem_id"] in ids] for rows in guided]
    sides = {
        "ppm_guided": round_metrics(*mine),
        "terminal_guided": round_metrics(terminal["nodes"], terminal["trajectories"], terminal["pairs"]),
    }
    return {name: {k: m[k] for k in keys} for name, m in sides.items()}


def _policy(params: dict[str, Any], mp: RStarParams, round_: int, previous: Path) -> tuple[Path, str]:
    """Round 1 searches with rstar.first_round_model or the base policy; round r with `previous`, the
    policy trained on round r-1."""
    if round_ == 1 and mp.first_round_model:
        path = Path(mp.first_round_model)
        if mp.first_round_backend != "openai":  # a served model is a name, not a folder here
            check_model_folder(path, "rstar.first_round_model")
        return path, path.name
    if round_ == 1:
        return resolve_policy(params)
    if not previous.is_dir():
        raise TracemillError(
            f"policy of round {round_ - 1} '{previous}' is missing — run 'dvc repro rstar_policy@{round_ - 1}' first"
        )
    check_model_folder(previous, f'rstar.round_inputs "{round_}"')
    return previous, previous.name


if __name__ == "__main__":
    stage.run(main)
