"""python -m stages.satori JOB — Satori's data and models (COAT from rStar-Math's search trees).

coat         data/mcts/round=<r> of every round -> data/coat/coat: COAT traces (plain, reflect, explore)
             with meta-action tokens, each row naming its source nodes; metrics/coat.json, plots/coat_kinds.csv.
format_tune  data/coat -> data/format_tune/sft and models/format_tune: the base policy fine-tuned on the
             COAT traces (`train.format_tune`); a real model without the meta-action tokens gets them
             added and its embeddings resized first.
rae_states   models/format_tune -> data/rae_states: the format-tuned policy's own samples on training problems
             (`traces`, stage 'rae_states', sharded and resumable) and the restart states of Algorithm 1 built
             from them (`rae_states`: per problem one right and one wrong sample backed up at most
             satori.rae_states.max_backup_steps steps, both ending with <|reflect|>, plus the bare problem);
             metrics/rae_states.json (with the policy's sampled accuracy).
orm          data/rae_states traces -> models/orm: the outcome reward model, Bradley-Terry on the policy's right
             over wrong samples with train/ppm.py's trainer (`satori.orm`); metrics/orm.json, plots/orm_loss.csv.
rl           models/format_tune + data/rae_states + models/orm -> models/rl: GRPO with Satori's reward (rule +
             sigmoid(ORM) + reflection bonus on reflect states, `satori.rl`); rollouts run their code in the
             sandbox with the output masked from the loss; metrics/rl.json (self-correction and break rates),
             plots/rl_reward.csv (the curve and its parts per step), plots/rl_rollouts.csv (every rollout).
distill      models/rl samples on training problems (data/distill/traces, sharded and resumable); its
             correct traces (data/distill/sft) teach a smaller student -> models/distill.
Params: `satori`, `train.format_tune`, `train.distill`, `mcts.rounds`, `format`, `policy`, and for the
generating jobs `run`, `llm`, `sandbox`, `grading`, `seed`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import runner, satori, stage, store
from tracemill.errors import TracemillError
from tracemill.formats import FormatParams
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.search import MCTSParams

FORMAT_TUNED, ORM, RL_MODEL, STUDENT = Path("models/format_tune"), Path("models/orm"), Path("models/rl"), Path("models/distill")


def _search_inputs(params: dict[str, Any]) -> list[str]:
    """The search output folder of every rStar-Math round, in round order."""
    return [f"data/mcts/round={r}" for r in range(1, P.section(MCTSParams, params, "mcts").rounds + 1)]


def search_rows(params: dict[str, Any], table: str) -> list[dict[str, Any]]:
    """`table` of every rStar-Math round's search, in round order."""
    rows = []
    for r, d in enumerate(_search_inputs(params), 1):
        if not Path(d).is_dir():
            raise TracemillError(f"round {r}'s search output '{d}' is missing — run 'dvc repro mcts@{r}' first")
        rows.extend(store.read_rows(d, table))
    return rows


def _from_trees(params: dict[str, Any], table: str, build: Any, knobs: Any, fmt: FormatParams) -> list[dict[str, Any]]:
    """`table` built from every round's nodes and trajectories, written to data/<table> in one shard."""
    rows = build(search_rows(params, "nodes"), search_rows(params, "trajectories"), knobs, fmt)
    out = store.StageOutput(f"data/{table}", [table], stage.fingerprint([knobs, fmt], _search_inputs(params)))
    out.write_shard(0, {table: rows})
    out.finalize([0])
    return rows


def coat(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    rows = _from_trees(params, "coat", satori.build_coat, sp.coat, fmt)
    kinds = Counter(r["kind"] for r in rows)
    store.write_json("metrics/coat.json", {"rows": len(rows), "problems": len({r["problem_id"] for r in rows}),
                                           "by_kind": {k: kinds.get(k, 0) for k in satori.COAT_KINDS}})
    store.write_csv("plots/coat_kinds.csv", [{"kind": k, "count": kinds.get(k, 0)} for k in satori.COAT_KINDS])
    print(f"coat: {len(rows)} traces " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in satori.COAT_KINDS))


def rae_states(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.runtime import open_runtime
    from tracemill.start import pick_problems, trace_metrics

    rp = sp.rae_states
    run = P.section(runner.RunParams, params, "run")
    check_model_folder(FORMAT_TUNED, "the format-tuned policy (dvc repro format_tune)")
    problems = pick_problems(store.read_rows("data/problems", "problems"), rp.sample)
    seed = int(params.get("seed", 0))
    out = store.StageOutput("data/rae_states", ["traces", "rae_states"],
                            stage.fingerprint([rp, fmt, seed, run.shards], [FORMAT_TUNED, "data/problems"]))
    with open_runtime(params, FORMAT_TUNED, "format_tune") as rt:
        if runner.run_sharded(out, problems, "problem_id", partial(satori.rae_shard, rt=rt, rp=rp, seed=seed), run, "rae_states") is None:
            return
    rows = store.read_rows("data/rae_states", "rae_states")
    outcomes = Counter(r["outcome"] for r in rows)
    cut = [json.loads(r["metadata"])["backup_steps"] for r in rows if r["ends_with_reflect"]]
    sampled = trace_metrics("data", "rae_states")
    store.write_json("metrics/rae_states.json", {
        "states": len(rows), "problems": len({r["problem_id"] for r in rows}),
        "distinct_prompts": len({(r["problem_id"], tuple(r["prefix_steps"])) for r in rows}),
        "bare": outcomes.get("bare", 0), "from_correct": outcomes.get("correct", 0), "from_failed": outcomes.get("failed", 0),
        "ending_with_reflect": len(cut), "mean_backup_steps": sum(cut) / len(cut) if cut else None,
        # the format-tuned policy's sampled accuracy on the training problems (satori.rae_states.sample)
        "samples": sampled.get("traces"), "sampled_accuracy": sampled.get("accuracy")})
    print(f"rae_states: {len(rows)} states ({outcomes.get('bare', 0)} bare, {outcomes.get('correct', 0)} from correct, "
          f"{outcomes.get('failed', 0)} from wrong samples); sampled accuracy {sampled.get('accuracy')}")


def orm(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.train import LossCurve, init_ppm, train_ppm

    check_model_folder(FORMAT_TUNED, "the format-tuned policy (dvc repro format_tune)")
    pairs = satori.orm_pairs(store.read_rows("data/rae_states", "traces"))
    curve = LossCurve()

    def build(partial_dir: Path) -> dict[str, Any]:
        if pairs:
            return train_ppm(FORMAT_TUNED, pairs, partial_dir, sp.orm, resume=True, callbacks=[curve])
        # Every sample right (or every one wrong): the ORM prefers nothing, so the preference bonus is flat.
        print(f"orm: no problem has a right and a wrong sample — {ORM} scores every response 0", file=sys.stderr)
        init_ppm(FORMAT_TUNED, partial_dir, sp.orm)
        return {}

    metrics = stage.build_folder(ORM, build, fresh=not pairs)
    store.write_csv("plots/orm_loss.csv", curve.rows, LossCurve.COLUMNS)
    store.write_json("metrics/orm.json", {**metrics, "pairs_built": len(pairs), "trained": bool(pairs)})
    print(f"orm: {len(pairs)} right-over-wrong pairs of the format-tuned policy's samples -> {ORM}")


def _questions() -> dict[str, str]:
    return {p["problem_id"]: p["question"] for p in store.read("data/problems", "problems", ["problem_id", "question"]).to_pylist()}


def _train_into(out_dir: Path, init: Path, rows: list[dict[str, Any]], sft_params: Any, fmt: FormatParams) -> dict[str, Any]:
    """SFT `init` on `rows` into out_dir (stage.build_folder: resumable, swapped in when done)."""
    from tracemill.train import LossCurve, train_sft

    curve = LossCurve()

    def build(partial_dir: Path) -> dict[str, Any]:
        if rows:
            return train_sft(init, rows, partial_dir, sft_params, resume=True, callbacks=[curve], fmt=fmt)
        print(f"{out_dir.name}: no examples — {out_dir} is '{init}' untrained")
        shutil.copytree(init, partial_dir)
        return {}

    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_csv(f"plots/{out_dir.name}_loss.csv", curve.rows, LossCurve.COLUMNS)
    return metrics


def format_tune(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.train import TrainParams

    tp = P.section(TrainParams, params, "train").format_tune
    base, base_name = resolve_policy(params)
    coat_rows = store.read_rows("data/coat", "coat")
    rows = satori.coat_sft_rows(coat_rows, _questions(), fmt)
    out = store.StageOutput("data/format_tune", ["sft"], stage.fingerprint([tp, fmt], ["data/coat", "data/problems"]))
    out.write_shard(0, {"sft": rows})
    out.finalize([0])
    init, added = satori.with_meta_tokens(base, Path("data/format_tune/base_with_meta_tokens"), sp.coat.meta_init)
    warmup: dict[str, Any] = {"epochs": 0}
    if sp.coat.meta_warmup_epochs and rows:
        warmed = Path("data/format_tune/meta_tokens_warmed")
        warmup = satori.warm_meta_tokens(init, warmed, rows, tp, fmt, sp.coat.meta_warmup_epochs, sp.coat.meta_warmup_lr)
        init = warmed
    metrics = _train_into(FORMAT_TUNED, init, rows, tp, fmt)
    kinds = Counter(r["kind"] for r in coat_rows)
    store.write_json("metrics/format_tune.json", {**metrics, "base": base_name, "examples": len(rows), "by_kind": dict(sorted(kinds.items())),
                                                  "meta_tokens_added": added, "meta_init": sp.coat.meta_init, "meta_warmup": warmup})
    print(f"format_tune: {len(rows)} COAT examples -> {FORMAT_TUNED}")


def rl(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.grading import GradingParams, get_grader
    from tracemill.rl import CURVE_COLUMNS, ROLLOUT_COLUMNS, reflection_rates, train_rl
    from tracemill.sandbox import SandboxParams, open_sandbox

    check_model_folder(FORMAT_TUNED, "the format-tuned policy (dvc repro format_tune)")
    states = store.read_rows("data/rae_states", "rae_states")
    problems = {p["problem_id"]: p for p in store.read_rows("data/problems", "problems")}
    if not any(problems.get(s["problem_id"], {}).get("domain") == "math" for s in states):
        # No search trajectory reached an answer (a weak policy on a small run): the next stages still
        # need a policy, so this one is the format-tuned policy unchanged, and the metrics say so.
        print(f"rl: no math restart states in data/rae_states — {RL_MODEL} is {FORMAT_TUNED} untrained", file=sys.stderr)

        def untrained(partial_dir: Path) -> dict[str, Any]:
            shutil.copytree(FORMAT_TUNED, partial_dir)
            return {}

        stage.build_folder(RL_MODEL, untrained, fresh=True)
        store.write_csv("plots/rl_reward.csv", [], CURVE_COLUMNS)
        store.write_csv("plots/rl_rollouts.csv", [], ROLLOUT_COLUMNS)
        store.write_json("metrics/rl.json", {"states": 0, "steps": 0, "trained": False, "reward_first": None, "reward_last": None,
                                             **reflection_rates([])})
        return
    result: dict[str, Any] = {}

    def build(partial_dir: Path) -> dict[str, Any]:  # the partial folder holds the checkpoints a killed run resumes from
        # The reward is the grader every other stage labels with (a code problem's tests run in the sandbox).
        with open_sandbox(P.section(SandboxParams, params, "sandbox")) as sandbox, \
                get_grader(P.section(GradingParams, params, "grading"), sandbox=sandbox) as grader:
            result.update(train_rl(FORMAT_TUNED, states, problems, lambda p, text: grader.grade_many([(p, text)])[0].correct,
                                   partial_dir, sp.rl, fmt, sandbox=sandbox, resume=True,
                                   orm=check_model_folder(ORM, "the outcome reward model (dvc repro orm)") if sp.rl.reward.preference_bonus else None))
        return {}

    stage.build_folder(RL_MODEL, build, fresh=False)
    store.write_csv("plots/rl_reward.csv", result.pop("curve"), CURVE_COLUMNS)
    store.write_csv("plots/rl_rollouts.csv", result.pop("rollouts"), ROLLOUT_COLUMNS)
    store.write_json("metrics/rl.json", {**result, "trained": True})
    print(f"rl: {result['states']} restart states, {result['steps']} GRPO steps, reward {result['reward_first']} -> {result['reward_last']}, "
          f"self-correction {result['self_correction_rate']}, break {result['break_rate']}")


def distill(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from stages.sft import sft_rows
    from tracemill.runtime import open_runtime
    from tracemill.start import pick_problems, sample_shard, trace_metrics
    from tracemill.tir import LoopLimits
    from tracemill.train import TrainParams

    dp = sp.distill
    tp = P.section(TrainParams, params, "train").distill
    run = P.section(runner.RunParams, params, "run")
    check_model_folder(RL_MODEL, "the RL policy (dvc repro rl)")
    student = check_model_folder(Path(dp.student), "satori.distill.student") if dp.student else None
    problems = pick_problems(store.read_rows("data/problems", "problems"), dp.sample)
    seed = int(params.get("seed", 0))
    # Opened first: a changed fingerprint clears data/distill, the student's starting copy included.
    out = store.StageOutput("data/distill", ["traces"], stage.fingerprint([dp, fmt, seed, run.shards], [RL_MODEL, "data/problems"]))
    if student is None:
        student = satori.cut_layers(resolve_policy(params)[0], Path("data/distill/student_init"), dp.student_layers)
    with open_runtime(params, RL_MODEL, "rl") as rt:
        work = partial(sample_shard, rt=rt, gp=dp.sample, limits=LoopLimits(max_tool_calls=dp.max_tool_calls), seed=seed,
                       stage="distill", style="coat")
        if runner.run_sharded(out, problems, "problem_id", work, run, "distill") is None:
            return
    traces = sorted(store.read_rows("data/distill", "traces"), key=lambda t: (t["problem_id"], t["sample_index"]))
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        if t["correct"] and len(kept[t["problem_id"]]) < dp.max_per_problem:
            kept[t["problem_id"]].append(t)
    rows = sft_rows([t for ts in kept.values() for t in ts], {p["problem_id"]: p for p in problems}, "distill")
    selected = store.StageOutput("data/distill/selected", ["sft"], stage.fingerprint([dp, tp], ["data/distill/traces"]))
    selected.write_shard(0, {"sft": rows})
    selected.finalize([0])
    metrics = _train_into(STUDENT, student, rows, tp, fmt)
    sampled = trace_metrics("data", "distill")
    store.write_json("metrics/distill.json", {**metrics, "samples": len(traces), "teacher_accuracy": sampled.get("accuracy"),
                                              "examples": len(rows), "student": str(dp.student or f"base cut to {dp.student_layers} layers")})
    print(f"distill: {len(rows)} correct RL traces of {len(traces)} samples -> {STUDENT}")


JOBS = {"coat": coat, "format_tune": format_tune, "rae_states": rae_states, "orm": orm, "rl": rl, "distill": distill}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.satori", description="Satori's stages")
    parser.add_argument("job", choices=list(JOBS))
    args = parser.parse_args()
    params = P.load(stage.params_path())
    JOBS[args.job](params, P.section(satori.SatoriParams, params, "satori"), P.section(FormatParams, params, "format"))


if __name__ == "__main__":
    stage.run(main)
