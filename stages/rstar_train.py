"""python -m stages.rstar_train policy|ppm round=R search=DIR ... — rStar-Math self-evolution: the policy
and the process preference model (PPM) of round R, from round R's search (dvc.yaml's rstar_policy@R and
rstar_ppm@R pass every path).

policy (search, problems, out, model, metrics, loss_plot): the selected trajectories of `search` (the
  top-k correct per problem by average Q) become `sft` rows, each step as the search wrote it with the
  sandbox's output blocks masked from the loss, in `out`/{sft,rejected}; `rstar.sft_base` (default: the
  base policy, `policy.model` or the bootstrap) is fine-tuned on them with `train.rstar_policy` into
  `model` (policy r). rStar-Math trains every round's policy from the base model, never from the
  previous round's.
ppm (search, policy, model, metrics, loss_plot): the pairs of `search` train a PPM initialised from
  `policy` (policy r) with `train.rstar_ppm` into `model` (PPM r).
Params: `rstar`, `train`, `format`, `policy`. Both write `metrics` and the loss curve `loss_plot`.
A model folder is written as <folder>.partial and renamed when complete; a killed run resumes from the
trainer's last checkpoint in it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import stage, store
from tracemill.errors import TracemillError
from tracemill.formats import FormatParams
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.rstar import RStarParams
from tracemill.rstar.extract import sft_rows
from tracemill.train import TrainParams

NODE_COLUMNS = ["node_id", "step_text", "code", "exec_output"]
COMMON = ["round", "search", "model", "metrics", "loss_plot"]  # what both jobs are given
JOB_ARGS = {"policy": ["problems", "out"], "ppm": ["policy"]}


def main() -> None:
    job = stage.job(JOB_ARGS)
    a = stage.args([*COMMON, *JOB_ARGS[job]], argv=sys.argv[2:])
    params = P.load(stage.params_path())
    mp = P.section(RStarParams, params, "rstar")
    round_ = mp.round_arg(a["round"])
    search_dir = Path(a["search"])
    if not search_dir.is_dir():
        raise TracemillError(
            f"round {round_}'s search output '{search_dir}' is missing — run 'dvc repro rstar_search@{round_}' first"
        )
    train = P.section(TrainParams, params, "train")
    (train_policy if job == "policy" else train_ppm)(params, mp, train, round_, a)


def train_policy(params: dict[str, Any], mp: RStarParams, train: TrainParams, round_: int, a: dict[str, str]) -> None:
    sp, fmt, search_dir = train.rstar_policy, P.section(FormatParams, params, "format"), Path(a["search"])
    base, base_name = (
        (check_model_folder(Path(mp.sft_base), "rstar.sft_base"), Path(mp.sft_base).name)
        if mp.sft_base
        else resolve_policy(params)
    )
    from tracemill.train import LossCurve, train_sft  # torch: only once the inputs are known to be there

    trajectories = store.read_rows(search_dir, "trajectories")
    nodes = {n["node_id"]: n for n in store.read(search_dir, "nodes", NODE_COLUMNS).to_pylist()}
    problems = store.read(a["problems"], "problems", ["problem_id", "question"]).to_pylist()
    questions = {p["problem_id"]: p["question"] for p in problems}
    rows, rejected = sft_rows(trajectories, nodes, questions, fmt)
    inputs: list[str | Path] = [search_dir / "trajectories", search_dir / "nodes", a["problems"]]
    out = store.StageOutput(a["out"], ["sft", "rejected"], stage.fingerprint([sp, fmt, round_], inputs))
    out.write_shard(0, {"sft": rows, "rejected": rejected})
    out.finalize([0])
    curve = LossCurve()

    def build(partial: Path) -> dict[str, Any]:
        if rows:
            return train_sft(base, rows, partial, sp, resume=True, callbacks=[curve], fmt=fmt)
        # A round that solved nothing (likely with a weak policy on a small run): the next round still
        # needs a policy, so this one is the base policy unchanged, and the metrics say so.
        print(
            f"rstar_policy round {round_}: no selected trajectories in {search_dir} — "
            f"{a['model']} is the base policy '{base}', untrained",
            file=sys.stderr,
        )
        shutil.copytree(base, partial)
        return {}

    out_dir = Path(a["model"])
    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_json(
        a["metrics"],
        {
            **metrics,
            "round": round_,
            "base": base_name,
            "trajectories": len(trajectories),
            "examples": len(rows),
            "rejected": len(rejected),
            "trained": bool(rows),
        },
    )
    store.write_csv(a["loss_plot"], curve.rows, LossCurve.COLUMNS)
    print(f"rstar_policy round {round_}: {len(rows)} examples -> {out_dir}")


def train_ppm(params: dict[str, Any], mp: RStarParams, train: TrainParams, round_: int, a: dict[str, str]) -> None:
    policy, search_dir = Path(a["policy"]), Path(a["search"])
    if not policy.is_dir():
        raise TracemillError(
            f"policy of round {round_} '{policy}' is missing — the PPM starts from it; run "
            f"'dvc repro rstar_policy@{round_}' first"
        )
    check_model_folder(policy, f"the policy of round {round_} (dvc repro rstar_policy@{round_})")
    from tracemill.train import LossCurve, init_ppm, train_ppm

    pairs = store.read_rows(search_dir, "pairs")
    curve = LossCurve()

    def build(partial: Path) -> dict[str, Any]:
        if pairs:
            return train_ppm(policy, pairs, partial, train.rstar_ppm, resume=True, callbacks=[curve])
        # No step had both a winning and a losing sibling (and no problem both a right and a wrong answer):
        # the PPM is untrained and neutral, so a later round that loads it searches as without one.
        print(
            f"rstar_ppm round {round_}: no pairs were extracted in {search_dir} — "
            f"{a['model']} is an untrained PPM that scores every step 0",
            file=sys.stderr,
        )
        init_ppm(policy, partial, train.rstar_ppm)
        return {}

    out_dir = Path(a["model"])
    metrics = stage.build_folder(out_dir, build, fresh=not pairs)
    store.write_json(
        a["metrics"],
        {
            **metrics,
            "round": round_,
            "policy": str(policy),
            "pairs": len(pairs),
            "trained": bool(pairs),
        },
    )
    store.write_csv(a["loss_plot"], curve.rows, LossCurve.COLUMNS)
    print(f"rstar_ppm round {round_}: {len(pairs)} pairs -> {out_dir}")


if __name__ == "__main__":
    stage.run(main)
