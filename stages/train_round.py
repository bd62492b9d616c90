"""python -m stages.train_round policy --round 1 | python -m stages.train_round ppm --round 1 — rStar-Math
self-evolution: the policy and the process preference model (PPM) of round r, from round r's search.

policy: the selected trajectories of data/mcts/round=<r> (the top-k correct per problem by average Q)
  become `sft` rows, each step as the search wrote it with the sandbox's output blocks masked from the
  loss, in data/train_policy/round=<r>/{sft,rejected}; `mcts.sft_base` (default: the base policy,
  `policy.model` or models/bootstrap) is fine-tuned on them with `train.train_policy` into `mcts.policy_dir` (policy r).
  rStar-Math trains every round's policy from the base model, never from the previous round's.
ppm: the pairs of data/mcts/round=<r> train a PPM initialised from policy r with `train.ppm` into
  `mcts.ppm_dir` (PPM r).
Inputs: data/mcts/round=<r>, data/problems (policy), the models above; params `mcts`, `train`, `format`,
`policy`. Outputs also metrics/train_{policy,ppm}_round<r>.json and plots/train_{policy,ppm}_loss_round<r>.csv.
A model folder is written as <folder>.partial and renamed when complete; a killed run resumes from the
trainer's last checkpoint in it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import stage, store
from tracemill.errors import ParamsError, TracemillError
from tracemill.formats import FormatParams
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.search import MCTSParams
from tracemill.search.extract import sft_rows
from tracemill.train import TrainParams

NODE_COLUMNS = ["node_id", "step_text", "code", "exec_output"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.train_round", description="rStar-Math policy or PPM of one round")
    parser.add_argument("job", choices=["policy", "ppm"])
    parser.add_argument("--round", type=int, required=True, dest="round_")
    args = parser.parse_args()
    params = P.load(stage.params_path())
    mp = P.section(MCTSParams, params, "mcts")
    if not 1 <= args.round_ <= mp.rounds:
        raise ParamsError(f"--round {args.round_} is outside 1..mcts.rounds ({mp.rounds})")
    search_dir = Path(f"data/mcts/round={args.round_}")
    if not search_dir.is_dir():
        raise TracemillError(f"round {args.round_}'s search output '{search_dir}' is missing — run "
                             f"'python -m stages.mcts --round {args.round_}' (dvc repro mcts@{args.round_}) first")
    train = P.section(TrainParams, params, "train")
    job = train_policy if args.job == "policy" else train_ppm
    job(params, mp, train, args.round_, search_dir)


def train_policy(params: dict[str, Any], mp: MCTSParams, train: TrainParams, round_: int, search_dir: Path) -> None:
    sp, fmt = train.train_policy, P.section(FormatParams, params, "format")
    base, base_name = (check_model_folder(Path(mp.sft_base), "mcts.sft_base"), Path(mp.sft_base).name) if mp.sft_base \
        else resolve_policy(params)
    from tracemill.train import LossCurve, train_sft  # torch: only once the inputs are known to be there

    trajectories = store.read_rows(search_dir, "trajectories")
    nodes = {n["node_id"]: n for n in store.read(search_dir, "nodes", NODE_COLUMNS).to_pylist()}
    problems = store.read("data/problems", "problems", ["problem_id", "question"]).to_pylist()
    questions = {p["problem_id"]: p["question"] for p in problems}
    rows, rejected = sft_rows(trajectories, nodes, questions, fmt)
    data_dir = f"data/train_policy/round={round_}"
    inputs = [search_dir / "trajectories", search_dir / "nodes", "data/problems"]
    out = store.StageOutput(data_dir, ["sft", "rejected"], stage.fingerprint([sp, fmt, round_], inputs))
    out.write_shard(0, {"sft": rows, "rejected": rejected})
    out.finalize([0])
    curve = LossCurve()

    def build(partial: Path) -> dict[str, Any]:
        if rows:
            return train_sft(base, rows, partial, sp, resume=True, callbacks=[curve], fmt=fmt)
        # A round that solved nothing (likely with a weak policy on a small run): the next round still
        # needs a policy, so this one is the base policy unchanged, and the metrics say so.
        print(f"train_policy round {round_}: no selected trajectories in {search_dir} — "
              f"{mp.policy_dir.format(round=round_)} is the base policy '{base}', untrained", file=sys.stderr)
        shutil.copytree(base, partial)
        return {}

    out_dir = Path(mp.policy_dir.format(round=round_))
    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_json(f"metrics/train_policy_round{round_}.json", {
        **metrics, "round": round_, "base": base_name, "trajectories": len(trajectories), "examples": len(rows),
        "rejected": len(rejected), "trained": bool(rows),
    })
    store.write_csv(f"plots/train_policy_loss_round{round_}.csv", curve.rows, LossCurve.COLUMNS)
    print(f"train_policy round {round_}: {len(rows)} examples -> {out_dir}")


def train_ppm(params: dict[str, Any], mp: MCTSParams, train: TrainParams, round_: int, search_dir: Path) -> None:
    policy = Path(mp.policy_dir.format(round=round_))
    if not policy.is_dir():
        raise TracemillError(f"policy of round {round_} '{policy}' is missing — the PPM starts from it; run "
                             f"'python -m stages.train_round policy --round {round_}' (dvc repro train_policy@{round_}) first")
    check_model_folder(policy, "mcts.policy_dir")
    from tracemill.train import LossCurve, init_ppm, train_ppm

    pairs = store.read_rows(search_dir, "pairs")
    curve = LossCurve()

    def build(partial: Path) -> dict[str, Any]:
        if pairs:
            return train_ppm(policy, pairs, partial, train.ppm, resume=True, callbacks=[curve])
        # No step had both a winning and a losing sibling (and no problem both a right and a wrong answer):
        # the PPM is untrained and neutral, so a later round that loads it searches as without one.
        print(f"train_ppm round {round_}: no pairs were extracted in {search_dir} — "
              f"{mp.ppm_dir.format(round=round_)} is an untrained PPM that scores every step 0", file=sys.stderr)
        init_ppm(policy, partial, train.ppm)
        return {}

    out_dir = Path(mp.ppm_dir.format(round=round_))
    metrics = stage.build_folder(out_dir, build, fresh=not pairs)
    store.write_json(f"metrics/train_ppm_round{round_}.json", {
        **metrics, "round": round_, "policy": str(policy), "pairs": len(pairs), "trained": bool(pairs),
    })
    store.write_csv(f"plots/train_ppm_loss_round{round_}.csv", curve.rows, LossCurve.COLUMNS)
    print(f"train_ppm round {round_}: {len(pairs)} pairs -> {out_dir}")


if __name__ == "__main__":
    stage.run(main)
