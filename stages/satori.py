"""python -m stages.satori JOB — Satori's data and models (COAT from rStar-Math's search trees).

coat         data/mcts/round=<r> of every round -> data/coat/coat: COAT traces of Satori's four kinds (plain, reflect,
             confirm, explore) with meta-action tokens, each row naming its source nodes; every check after
             <|reflect|> runs in the sandbox and its critique quotes what it printed; metrics/coat.json, plots/coat_kinds.csv.
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
rl           round 1: models/format_tune + data/rae_states + models/orm -> models/rl: GRPO with Satori's reward
             (rule + sigmoid(ORM) + reflection bonus on reflect states, `satori.rl`); rollouts run their code in
             the sandbox with the output masked from the loss; metrics/rl.json (self-correction and break rates,
             per restart state and within rollouts), plots/rl_reward.csv (the curve and its parts per step),
             plots/rl_rollouts.csv (every rollout).
rl_sft       models/rl samples on training problems (data/rl_sft/traces, sharded and resumable); its correct
             traces (data/rl_sft/selected) fine-tune the base again (`train.format_tune`) -> models/rl_sft,
             round 2's start; metrics/rl_sft.json, plots/rl_sft_loss.csv.
rl_r2        round 2: models/rl_sft + models/orm -> models/rl_r2: GRPO from the bare problems rl_sft sampled (no
             restart states) at satori.round2's temperature and group size; metrics/rl_r2.json,
             plots/rl_r2_reward.csv, plots/rl_r2_rollouts.csv.
distill      Satori's small-model distillation: models/rl_r2 samples on training problems (data/distill/traces,
             sharded and resumable); its correct traces (data/distill/selected) teach a smaller student -> models/distill.
Params: `satori`, `train.format_tune` (format_tune, rl_sft), `train.distill`, `mcts.rounds`, `format`, `policy`, and for the
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

FORMAT_TUNED, ORM, STUDENT = Path("models/format_tune"), Path("models/orm"), Path("models/distill")
RL_MODEL, RL_SFT, RL_R2 = Path("models/rl"), Path("models/rl_sft"), Path("models/rl_r2")  # Satori's rounds 1 and 2


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


def coat(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.sandbox import SandboxParams, open_sandbox

    sb = P.section(SandboxParams, params, "sandbox")
    nodes, trajectories = search_rows(params, "nodes"), search_rows(params, "trajectories")
    with open_sandbox(sb) as sandbox:  # every critique quotes what its check printed here
        rows = satori.build_coat(nodes, trajectories, sp.coat, fmt, satori.sandbox_check(sandbox))
    out = store.StageOutput("data/coat", ["coat"], stage.fingerprint([sp.coat, fmt, sb], _search_inputs(params)))
    out.write_shard(0, {"coat": rows})
    out.finalize([0])
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


def _tuning_start(params: dict[str, Any], sp: satori.SatoriParams, rows: list[dict[str, Any]], tp: Any, fmt: FormatParams,
                  folder: Path) -> tuple[Path, list[str], dict[str, Any]]:
    """Where fine-tuning the base on COAT text starts: the base policy with the meta-action tokens (their
    embeddings at their phrases), warmed on `rows` when satori.coat.meta_warmup_epochs asks, in folder.
    Returns (model folder, tokens added, warm-up metrics)."""
    init, added = satori.with_meta_tokens(resolve_policy(params)[0], folder / "base_with_meta_tokens", sp.coat.meta_init)
    warmup: dict[str, Any] = {"epochs": 0}
    if sp.coat.meta_warmup_epochs and rows:
        warmed = folder / "meta_tokens_warmed"
        warmup = satori.warm_meta_tokens(init, warmed, rows, tp, fmt, sp.coat.meta_warmup_epochs, sp.coat.meta_warmup_lr)
        init = warmed
    return init, added, warmup


def format_tune(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.train import TrainParams

    tp = P.section(TrainParams, params, "train").format_tune
    coat_rows = store.read_rows("data/coat", "coat")
    rows = satori.coat_sft_rows(coat_rows, _questions(), fmt)
    out = store.StageOutput("data/format_tune", ["sft"], stage.fingerprint([tp, fmt], ["data/coat", "data/problems"]))
    out.write_shard(0, {"sft": rows})
    out.finalize([0])
    init, added, warmup = _tuning_start(params, sp, rows, tp, fmt, Path("data/format_tune"))
    metrics = _train_into(FORMAT_TUNED, init, rows, tp, fmt)
    kinds = Counter(r["kind"] for r in coat_rows)
    store.write_json("metrics/format_tune.json", {**metrics, "base": resolve_policy(params)[1], "examples": len(rows),
                                                  "by_kind": dict(sorted(kinds.items())), "meta_tokens_added": added,
                                                  "meta_init": sp.coat.meta_init, "meta_warmup": warmup})
    print(f"format_tune: {len(rows)} COAT examples -> {FORMAT_TUNED}")


# Satori's two RL rounds: (stage and model name, the policy it starts from)
ROUNDS = {1: ("rl", FORMAT_TUNED), 2: ("rl_r2", RL_SFT)}


def _round_states(sp: satori.SatoriParams, round_: int) -> list[dict[str, Any]]:
    """Round 1 restarts from the rae_states stage's states; round 2 from the bare problems its SFT sampled."""
    from tracemill.start import pick_problems

    if round_ == 1:
        return store.read_rows("data/rae_states", "rae_states")
    return satori.bare_states([p["problem_id"] for p in pick_problems(store.read_rows("data/problems", "problems"), sp.round2.sample)])


def rl(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, round_: int) -> None:
    from tracemill.grading import GradingParams, get_grader
    from tracemill.rl import CURVE_COLUMNS, ROLLOUT_COLUMNS, reflection_rates, train_rl
    from tracemill.sandbox import SandboxParams, open_sandbox

    name, init = ROUNDS[round_]
    model = Path("models") / name
    check_model_folder(init, f"round {round_}'s starting policy (dvc repro {init.name})")
    rp = sp.rl if round_ == 1 else sp.round2.rl(sp.rl)
    states = _round_states(sp, round_)
    problems = {p["problem_id"]: p for p in store.read_rows("data/problems", "problems")}
    if not any(problems.get(s["problem_id"], {}).get("domain") == "math" for s in states):
        # No math prompt to restart from (a weak policy on a small run): the next stages still need a
        # policy, so this one is the round's starting policy unchanged, and the metrics say so.
        print(f"{name}: no math states — {model} is {init} untrained", file=sys.stderr)

        def untrained(partial_dir: Path) -> dict[str, Any]:
            shutil.copytree(init, partial_dir)
            return {}

        stage.build_folder(model, untrained, fresh=True)
        store.write_csv(f"plots/{name}_reward.csv", [], CURVE_COLUMNS)
        store.write_csv(f"plots/{name}_rollouts.csv", [], ROLLOUT_COLUMNS)
        store.write_json(f"metrics/{name}.json", {"round": round_, "states": 0, "steps": 0, "trained": False, "reward_first": None,
                                                  "reward_last": None, **reflection_rates([])})
        return
    result: dict[str, Any] = {}

    def build(partial_dir: Path) -> dict[str, Any]:  # the partial folder holds the checkpoints a killed run resumes from
        # The reward is the grader every other stage labels with (a code problem's tests run in the sandbox).
        with open_sandbox(P.section(SandboxParams, params, "sandbox")) as sandbox, \
                get_grader(P.section(GradingParams, params, "grading"), sandbox=sandbox) as grader:
            result.update(train_rl(init, states, problems, lambda p, text: grader.grade_many([(p, text)])[0].correct,
                                   partial_dir, rp, fmt, sandbox=sandbox, resume=True,
                                   orm=check_model_folder(ORM, "the outcome reward model (dvc repro orm)") if rp.reward.preference_bonus else None))
        return {}

    stage.build_folder(model, build, fresh=False)
    store.write_csv(f"plots/{name}_reward.csv", result.pop("curve"), CURVE_COLUMNS)
    store.write_csv(f"plots/{name}_rollouts.csv", result.pop("rollouts"), ROLLOUT_COLUMNS)
    store.write_json(f"metrics/{name}.json", {"round": round_, **result, "temperature": rp.temperature,
                                              "num_generations": rp.num_generations, "trained": True})
    print(f"{name}: {result['states']} states, {result['steps']} GRPO steps, reward {result['reward_first']} -> {result['reward_last']}, "
          f"self-correction {result['self_correction_rate']} / in rollouts {result['in_rollout_self_correction_rate']}, "
          f"break {result['break_rate']} / in rollouts {result['in_rollout_break_rate']}")


def _correct_samples(params: dict[str, Any], job: str, teacher: Path, teacher_name: str, knobs: Any,
                     fmt: FormatParams) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """`teacher` samples knobs.sample on training problems (data/<job>/traces, stage `job`, sharded and
    resumable); at most knobs.max_per_problem correct ones per problem become `sft` rows
    (data/<job>/selected). Returns (sft rows, traces), or None while shards are still running."""
    from stages.sft import sft_rows
    from tracemill.runtime import open_runtime
    from tracemill.start import pick_problems, sample_shard
    from tracemill.tir import LoopLimits

    run = P.section(runner.RunParams, params, "run")
    problems = pick_problems(store.read_rows("data/problems", "problems"), knobs.sample)
    seed = int(params.get("seed", 0))
    # A changed fingerprint clears data/<job>, everything the caller later writes under it included.
    out = store.StageOutput(f"data/{job}", ["traces"], stage.fingerprint([knobs, fmt, seed, run.shards], [teacher, "data/problems"]))
    with open_runtime(params, teacher, teacher_name) as rt:
        work = partial(sample_shard, rt=rt, gp=knobs.sample, limits=LoopLimits(max_tool_calls=knobs.max_tool_calls), seed=seed,
                       stage=job, style="coat")
        if runner.run_sharded(out, problems, "problem_id", work, run, job) is None:
            return None
    traces = sorted(store.read_rows(f"data/{job}", "traces"), key=lambda t: (t["problem_id"], t["sample_index"]))
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        if t["correct"] and len(kept[t["problem_id"]]) < knobs.max_per_problem:
            kept[t["problem_id"]].append(t)
    rows = sft_rows([t for ts in kept.values() for t in ts], {p["problem_id"]: p for p in problems}, job)
    selected = store.StageOutput(f"data/{job}/selected", ["sft"], stage.fingerprint([knobs], [f"data/{job}/traces"]))
    selected.write_shard(0, {"sft": rows})
    selected.finalize([0])
    return rows, traces


def rl_sft(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.start import trace_metrics
    from tracemill.train import TrainParams

    check_model_folder(RL_MODEL, "the round-1 RL policy (dvc repro rl)")
    tp = P.section(TrainParams, params, "train").format_tune  # the same base fine-tuned on COAT text, as format tuning
    got = _correct_samples(params, "rl_sft", RL_MODEL, "rl", sp.round2, fmt)
    if got is None:
        return
    rows, traces = got
    init, _, warmup = _tuning_start(params, sp, rows, tp, fmt, Path("data/rl_sft"))
    metrics = _train_into(RL_SFT, init, rows, tp, fmt)
    store.write_json("metrics/rl_sft.json", {**metrics, "samples": len(traces), "teacher_accuracy": trace_metrics("data", "rl_sft").get("accuracy"),
                                             "examples": len(rows), "problems": len({r["problem_id"] for r in rows}), "meta_warmup": warmup})
    print(f"rl_sft: {len(rows)} correct round-1 RL samples of {len(traces)} -> the base fine-tuned into {RL_SFT}")


def distill(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams) -> None:
    from tracemill.start import trace_metrics
    from tracemill.train import TrainParams

    dp = sp.distill
    tp = P.section(TrainParams, params, "train").distill
    check_model_folder(RL_R2, "the round-2 RL policy (dvc repro rl_r2)")
    student = check_model_folder(Path(dp.student), "satori.distill.student") if dp.student else None
    got = _correct_samples(params, "distill", RL_R2, "rl_r2", dp, fmt)
    if got is None:
        return
    rows, traces = got
    if student is None:
        student = satori.cut_layers(resolve_policy(params)[0], Path("data/distill/student_init"), dp.student_layers)
    metrics = _train_into(STUDENT, student, rows, tp, fmt)
    store.write_json("metrics/distill.json", {**metrics, "samples": len(traces), "teacher_accuracy": trace_metrics("data", "distill").get("accuracy"),
                                              "examples": len(rows), "student": str(dp.student or f"base cut to {dp.student_layers} layers")})
    print(f"distill: {len(rows)} correct round-2 RL traces of {len(traces)} samples -> {STUDENT}")


JOBS = {"coat": coat, "format_tune": format_tune, "rae_states": rae_states, "orm": orm, "rl": partial(rl, round_=1), "rl_sft": rl_sft,
        "rl_r2": partial(rl, round_=2), "distill": distill}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.satori", description="Satori's stages")
    parser.add_argument("job", choices=list(JOBS))
    args = parser.parse_args()
    params = P.load(stage.params_path())
    JOBS[args.job](params, P.section(satori.SatoriParams, params, "satori"), P.section(FormatParams, params, "format"))


if __name__ == "__main__":
    stage.run(main)
