"""python -m stages.satori JOB NAME=PATH ... — Satori's data and models (COAT from rStar-Math's search trees).
dvc.yaml's stage JOB passes every path (JOB_ARGS lists each job's names); below, a name is its argument.

coat         searches/round=<r> of every round -> out/coat: COAT traces of Satori's four kinds (plain, reflect,
             confirm, explore) with meta-action tokens, each row naming its source nodes; every check after
             <|reflect|> runs in the sandbox and its critique quotes what it printed; metrics, kinds (a bar per kind).
format_tune  coat, problems -> out/sft and model: the base policy fine-tuned on the
             COAT traces (`train.format_tune`); a real model without the meta-action tokens gets them
             added and its embeddings resized first.
rae_states   policy (the format-tuned one), problems -> out: its own samples on training problems
             (`traces`, stage 'rae_states', sharded and resumable) and the restart states of Algorithm 1 built
             from them (`rae_states`: per problem one right and one wrong sample backed up at most
             satori.rae_states.max_backup_steps steps, both ending with <|reflect|>, plus the bare problem);
             metrics (with the policy's sampled accuracy).
orm          samples (rae_states' traces), policy -> model: the outcome reward model, Bradley-Terry on the policy's
             right over wrong samples with train/ppm.py's trainer (`satori.orm`); metrics, loss_plot.
rl           round 1: policy (format-tuned) + states + orm -> model: GRPO with Satori's reward
             (rule + sigmoid(ORM) + reflection bonus on reflect states, `satori.rl`); rollouts run their code in
             the sandbox with the output masked from the loss; metrics (self-correction and break rates,
             per restart state and within rollouts), reward_plot (the curve and its parts per step),
             rollouts_plot (every rollout).
rl_sft       teacher (the round-1 RL policy) samples training problems (out/traces, sharded and resumable); its
             correct traces (out/selected) fine-tune the base again (`train.format_tune`) -> model, round 2's
             start; metrics, loss_plot.
rl_r2        round 2: policy (rl_sft's) + orm -> model: GRPO from the bare problems rl_sft sampled (no
             restart states) at satori.round2's temperature and group size; metrics, reward_plot, rollouts_plot.
distill      Satori's small-model distillation: teacher (the round-2 RL policy) samples training problems
             (out/traces, sharded and resumable); its correct traces (out/selected) teach a smaller student -> model.
Params: `satori`, `train.format_tune` (format_tune, rl_sft), `train.distill`, `rstar.rounds`, `format`, `policy`,
and for the generating jobs `run`, `llm`, `sandbox`, `grading`, `seed`.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tracemill import params as P
from tracemill import runner, satori, stage, store
from tracemill.errors import TracemillError
from tracemill.formats import FormatParams
from tracemill.generate import pick_problems, sample_shard, trace_metrics
from tracemill.policy import check_model_folder, resolve_policy
from tracemill.rstar import RStarParams
from tracemill.train.examples import trace_sft_rows

# The names each job's command line passes (stage.args), besides the job itself.
JOB_ARGS = {
    "coat": ["searches", "out", "metrics", "kinds"],
    "format_tune": ["coat", "problems", "out", "model", "metrics", "loss_plot"],
    "rae_states": ["policy", "problems", "out", "metrics"],
    "orm": ["samples", "policy", "model", "metrics", "loss_plot"],
    "rl": ["states", "problems", "policy", "orm", "model", "metrics", "reward_plot", "rollouts_plot"],
    "rl_sft": ["teacher", "problems", "out", "model", "metrics", "loss_plot"],
    "rl_r2": ["problems", "policy", "orm", "model", "metrics", "reward_plot", "rollouts_plot"],
    "distill": ["teacher", "problems", "out", "model", "metrics", "loss_plot"],
}


def _search_inputs(params: dict[str, Any], searches: str) -> list[Path]:
    """The search output folder of every rStar-Math round under `searches` (rstar_search@r writes
    round=<r>), in round order."""
    return [Path(searches) / f"round={r}" for r in range(1, P.section(RStarParams, params, "rstar").rounds + 1)]


def search_rows(params: dict[str, Any], searches: str, table: str) -> list[dict[str, Any]]:
    """`table` of every rStar-Math round's search, in round order."""
    rows = []
    for r, d in enumerate(_search_inputs(params, searches), 1):
        if not d.is_dir():
            raise TracemillError(f"round {r}'s search output '{d}' is missing — run 'dvc repro rstar_search@{r}' first")
        rows.extend(store.read_rows(d, table))
    return rows


def coat(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.sandbox import SandboxParams, open_sandbox

    sb = P.section(SandboxParams, params, "sandbox")
    nodes, trajectories = (
        search_rows(params, a["searches"], "nodes"),
        search_rows(params, a["searches"], "trajectories"),
    )
    with open_sandbox(sb) as sandbox:  # every critique quotes what its check printed here
        rows = satori.build_coat(nodes, trajectories, sp.coat, fmt, satori.sandbox_check(sandbox))
    out = store.StageOutput(
        a["out"], ["coat"], stage.fingerprint([sp.coat, fmt, sb], _search_inputs(params, a["searches"]))
    )
    out.write_shard(0, {"coat": rows})
    out.finalize([0])
    kinds = Counter(r["kind"] for r in rows)
    store.write_json(
        a["metrics"],
        {
            "rows": len(rows),
            "problems": len({r["problem_id"] for r in rows}),
            "by_kind": {k: kinds.get(k, 0) for k in satori.COAT_KINDS},
        },
    )
    store.write_csv(a["kinds"], [{"kind": k, "count": kinds.get(k, 0)} for k in satori.COAT_KINDS])
    print(f"coat: {len(rows)} traces " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in satori.COAT_KINDS))


def rae_states(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.runtime import open_runtime

    rp = sp.rae_states
    run = P.section(runner.RunParams, params, "run")
    policy = check_model_folder(Path(a["policy"]), "the format-tuned policy (dvc repro format_tune)")
    problems = pick_problems(store.read_rows(a["problems"], "problems"), rp.sample)
    seed = int(params.get("seed", 0))
    out = store.StageOutput(
        a["out"], ["traces", "rae_states"], stage.fingerprint([rp, fmt, seed, run.shards], [policy, a["problems"]])
    )
    with open_runtime(params, policy, policy.name) as rt:
        if (
            runner.run_sharded(
                out, problems, "problem_id", partial(satori.rae_shard, rt=rt, rp=rp, seed=seed), run, "rae_states"
            )
            is None
        ):
            return
    rows = store.read_rows(a["out"], "rae_states")
    outcomes = Counter(r["outcome"] for r in rows)
    cut = [json.loads(r["metadata"])["backup_steps"] for r in rows if r["ends_with_reflect"]]
    sampled = trace_metrics(a["out"], "rae_states")
    store.write_json(
        a["metrics"],
        {
            "states": len(rows),
            "problems": len({r["problem_id"] for r in rows}),
            "distinct_prompts": len({(r["problem_id"], tuple(r["prefix_steps"])) for r in rows}),
            "bare": outcomes.get("bare", 0),
            "from_correct": outcomes.get("correct", 0),
            "from_failed": outcomes.get("failed", 0),
            "ending_with_reflect": len(cut),
            "mean_backup_steps": sum(cut) / len(cut) if cut else None,
            # the format-tuned policy's sampled accuracy on the training problems (satori.rae_states.sample)
            "samples": sampled.get("traces"),
            "sampled_accuracy": sampled.get("accuracy"),
        },
    )
    print(
        f"rae_states: {len(rows)} states ({outcomes.get('bare', 0)} bare, {outcomes.get('correct', 0)} from correct, "
        f"{outcomes.get('failed', 0)} from wrong samples); sampled accuracy {sampled.get('accuracy')}"
    )


def orm(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.train import LossCurve, init_ppm, train_ppm

    policy, model = (
        check_model_folder(Path(a["policy"]), "the format-tuned policy (dvc repro format_tune)"),
        Path(a["model"]),
    )
    pairs = satori.orm_pairs(store.read_rows(a["samples"], "traces"))
    curve = LossCurve()

    def build(partial_dir: Path) -> dict[str, Any]:
        if pairs:
            return train_ppm(policy, pairs, partial_dir, sp.orm, resume=True, callbacks=[curve])
        # Every sample right (or every one wrong): the ORM prefers nothing, so the preference bonus is flat.
        print(f"orm: no problem has a right and a wrong sample — {model} scores every response 0", file=sys.stderr)
        init_ppm(policy, partial_dir, sp.orm)
        return {}

    metrics = stage.build_folder(model, build, fresh=not pairs)
    store.write_csv(a["loss_plot"], curve.rows, LossCurve.COLUMNS)
    store.write_json(a["metrics"], {**metrics, "pairs_built": len(pairs), "trained": bool(pairs)})
    print(f"orm: {len(pairs)} right-over-wrong pairs of the format-tuned policy's samples -> {model}")


def _questions(problems: str) -> dict[str, str]:
    return {
        p["problem_id"]: p["question"] for p in store.read(problems, "problems", ["problem_id", "question"]).to_pylist()
    }


def _train_into(
    out_dir: Path, init: Path, rows: list[dict[str, Any]], sft_params: Any, fmt: FormatParams, loss_plot: str
) -> dict[str, Any]:
    """SFT `init` on `rows` into out_dir (stage.build_folder: resumable, swapped in when done), its loss curve to
    loss_plot."""
    from tracemill.train import LossCurve, train_sft

    curve = LossCurve()

    def build(partial_dir: Path) -> dict[str, Any]:
        if rows:
            return train_sft(init, rows, partial_dir, sft_params, resume=True, callbacks=[curve], fmt=fmt)
        print(f"{out_dir.name}: no examples — {out_dir} is '{init}' untrained")
        shutil.copytree(init, partial_dir)
        return {}

    metrics = stage.build_folder(out_dir, build, fresh=not rows)
    store.write_csv(loss_plot, curve.rows, LossCurve.COLUMNS)
    return metrics


def _tuning_start(
    params: dict[str, Any],
    sp: satori.SatoriParams,
    rows: list[dict[str, Any]],
    tp: Any,
    fmt: FormatParams,
    folder: Path,
) -> tuple[Path, list[str], dict[str, Any]]:
    """Where fine-tuning the base on COAT text starts: the base policy with the meta-action tokens (their
    embeddings at their phrases), warmed on `rows` when satori.coat.meta_warmup_epochs asks, in folder.
    Returns (model folder, tokens added, warm-up metrics)."""
    init, added = satori.with_meta_tokens(
        resolve_policy(params)[0], folder / "base_with_meta_tokens", sp.coat.meta_init
    )
    warmup: dict[str, Any] = {"epochs": 0}
    if sp.coat.meta_warmup_epochs and rows:
        warmed = folder / "meta_tokens_warmed"
        warmup = satori.warm_meta_tokens(
            init, warmed, rows, tp, fmt, sp.coat.meta_warmup_epochs, sp.coat.meta_warmup_lr
        )
        init = warmed
    return init, added, warmup


def format_tune(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.train import TrainParams

    tp = P.section(TrainParams, params, "train").format_tune
    coat_rows = store.read_rows(a["coat"], "coat")
    rows = satori.coat_sft_rows(coat_rows, _questions(a["problems"]), fmt)
    out = store.StageOutput(a["out"], ["sft"], stage.fingerprint([tp, fmt], [a["coat"], a["problems"]]))
    out.write_shard(0, {"sft": rows})
    out.finalize([0])
    init, added, warmup = _tuning_start(params, sp, rows, tp, fmt, Path(a["out"]))
    metrics = _train_into(Path(a["model"]), init, rows, tp, fmt, a["loss_plot"])
    kinds = Counter(r["kind"] for r in coat_rows)
    store.write_json(
        a["metrics"],
        {
            **metrics,
            "base": resolve_policy(params)[1],
            "examples": len(rows),
            "by_kind": dict(sorted(kinds.items())),
            "meta_tokens_added": added,
            "meta_init": sp.coat.meta_init,
            "meta_warmup": warmup,
        },
    )
    print(f"format_tune: {len(rows)} COAT examples -> {a['model']}")


ROUNDS = {1: "rl", 2: "rl_r2"}  # Satori's two RL rounds: the stage of each


def _round_states(sp: satori.SatoriParams, round_: int, a: dict[str, str]) -> list[dict[str, Any]]:
    """Round 1 restarts from the rae_states stage's states; round 2 from the bare problems its SFT sampled."""

    if round_ == 1:
        return store.read_rows(a["states"], "rae_states")
    return satori.bare_states(
        [p["problem_id"] for p in pick_problems(store.read_rows(a["problems"], "problems"), sp.round2.sample)]
    )


def rl(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str], round_: int) -> None:
    from tracemill.grading import GradingParams, get_grader
    from tracemill.rl import CURVE_COLUMNS, ROLLOUT_COLUMNS, reflection_rates, train_rl
    from tracemill.sandbox import SandboxParams, open_sandbox

    name, init, model = ROUNDS[round_], Path(a["policy"]), Path(a["model"])
    check_model_folder(init, f"round {round_}'s starting policy (dvc repro {init.name})")
    rp = sp.rl if round_ == 1 else sp.round2.rl(sp.rl)
    states = _round_states(sp, round_, a)
    problems = {p["problem_id"]: p for p in store.read_rows(a["problems"], "problems")}
    if not any(problems.get(s["problem_id"], {}).get("domain") == "math" for s in states):
        # No math prompt to restart from (a weak policy on a small run): the next stages still need a
        # policy, so this one is the round's starting policy unchanged, and the metrics say so.
        print(f"{name}: no math states — {model} is {init} untrained", file=sys.stderr)

        def untrained(partial_dir: Path) -> dict[str, Any]:
            shutil.copytree(init, partial_dir)
            return {}

        stage.build_folder(model, untrained, fresh=True)
        store.write_csv(a["reward_plot"], [], CURVE_COLUMNS)
        store.write_csv(a["rollouts_plot"], [], ROLLOUT_COLUMNS)
        store.write_json(
            a["metrics"],
            {
                "round": round_,
                "states": 0,
                "steps": 0,
                "trained": False,
                "reward_first": None,
                "reward_last": None,
                **reflection_rates([]),
            },
        )
        return
    result: dict[str, Any] = {}

    def build(
        partial_dir: Path,
    ) -> dict[str, Any]:  # the partial folder holds the checkpoints a killed run resumes from
        # The reward is the grader every other stage labels with (a code problem's tests run in the sandbox).
        with (
            open_sandbox(P.section(SandboxParams, params, "sandbox")) as sandbox,
            get_grader(P.section(GradingParams, params, "grading"), sandbox=sandbox) as grader,
        ):
            result.update(
                train_rl(
                    init,
                    states,
                    problems,
                    lambda p, text: grader.grade_many([(p, text)])[0].correct,
                    partial_dir,
                    rp,
                    fmt,
                    sandbox=sandbox,
                    resume=True,
                    orm=check_model_folder(Path(a["orm"]), "the outcome reward model (dvc repro orm)")
                    if rp.reward.preference_bonus
                    else None,
                )
            )
        return {}

    stage.build_folder(model, build, fresh=False)
    if round_ == 1:
        result["reflect_states"] = _reflect_eval(params, states, problems, rp, init, model)
    store.write_csv(a["reward_plot"], result.pop("curve"), CURVE_COLUMNS)
    store.write_csv(a["rollouts_plot"], result.pop("rollouts"), ROLLOUT_COLUMNS)
    store.write_json(
        a["metrics"],
        {
            "round": round_,
            **result,
            "temperature": rp.temperature,
            "num_generations": rp.num_generations,
            "trained": True,
        },
    )
    print(
        f"{name}: {result['states']} states, {result['steps']} GRPO steps, "
        f"reward {result['reward_first']} -> {result['reward_last']}, "
        f"self-correction {result['self_correction_rate']} / in rollouts {result['in_rollout_self_correction_rate']}, "
        f"break {result['break_rate']} / in rollouts {result['in_rollout_break_rate']}"
    )


def _reflect_eval(
    params: dict[str, Any],
    states: list[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    rp: Any,
    before: Path,
    after: Path,
) -> dict[str, Any]:
    """Self-correction and break rates of the policy before RL (the format-tuned one) and after, each
    continuing greedily from the same restart states that end with <|reflect|> (`satori.reflect_outcomes`)."""
    from tracemill.rl import reflection_rates
    from tracemill.runtime import open_runtime

    out: dict[str, Any] = {}
    for when, path in (("before_rl", before), ("after_rl", after)):
        with open_runtime(params, path, path.name) as rt:
            rows = satori.reflect_outcomes(rt, states, problems, rp, int(params.get("seed", 0)))
        rates = reflection_rates(rows)
        out[when] = {
            k: rates[k] for k in ("self_correction_rate", "break_rate", "rollouts_from_failed", "rollouts_from_correct")
        }
        print(
            f"rl: {when.replace('_', ' ')}, greedy from {len(rows)} reflect states: "
            f"self-correction {rates['self_correction_rate']}, break {rates['break_rate']}",
            flush=True,
        )
    return out


def _correct_samples(
    params: dict[str, Any], job: str, a: dict[str, str], knobs: Any, fmt: FormatParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The `teacher` samples knobs.sample on training problems (out/traces, stage `job`, sharded and
    resumable); at most knobs.max_per_problem correct ones per problem become `sft` rows
    (out/selected). Returns (sft rows, traces), or None while shards are still running."""
    from tracemill.runtime import open_runtime
    from tracemill.tir import LoopLimits

    run = P.section(runner.RunParams, params, "run")
    problems = pick_problems(store.read_rows(a["problems"], "problems"), knobs.sample)
    seed = int(params.get("seed", 0))
    teacher, out_dir = Path(a["teacher"]), Path(a["out"])
    # A changed fingerprint clears out_dir, everything the caller later writes under it included.
    out = store.StageOutput(
        out_dir, ["traces"], stage.fingerprint([knobs, fmt, seed, run.shards], [teacher, a["problems"]])
    )
    with open_runtime(params, teacher, teacher.name) as rt:
        work = partial(
            sample_shard,
            rt=rt,
            gp=knobs.sample,
            limits=LoopLimits(max_tool_calls=knobs.max_tool_calls),
            seed=seed,
            stage=job,
            style="coat",
        )
        if runner.run_sharded(out, problems, "problem_id", work, run, job) is None:
            return None
    traces = sorted(store.read_rows(out_dir, "traces"), key=lambda t: (t["problem_id"], t["sample_index"]))
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        if t["correct"] and len(kept[t["problem_id"]]) < knobs.max_per_problem:
            kept[t["problem_id"]].append(t)
    rows = trace_sft_rows([t for ts in kept.values() for t in ts], {p["problem_id"]: p for p in problems}, job)
    selected = store.StageOutput(out_dir / "selected", ["sft"], stage.fingerprint([knobs], [out_dir / "traces"]))
    selected.write_shard(0, {"sft": rows})
    selected.finalize([0])
    return rows, traces


def rl_sft(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.train import TrainParams

    check_model_folder(Path(a["teacher"]), "the round-1 RL policy (dvc repro rl)")
    tp = P.section(TrainParams, params, "train").format_tune  # the same base fine-tuned on COAT text, as format tuning
    got = _correct_samples(params, "rl_sft", a, sp.round2, fmt)
    if got is None:
        return
    rows, traces = got
    init, _, warmup = _tuning_start(params, sp, rows, tp, fmt, Path(a["out"]))
    metrics = _train_into(Path(a["model"]), init, rows, tp, fmt, a["loss_plot"])
    store.write_json(
        a["metrics"],
        {
            **metrics,
            "samples": len(traces),
            "teacher_accuracy": trace_metrics(a["out"], "rl_sft").get("accuracy"),
            "examples": len(rows),
            "problems": len({r["problem_id"] for r in rows}),
            "meta_warmup": warmup,
        },
    )
    print(f"rl_sft: {len(rows)} correct round-1 RL samples of {len(traces)} -> the base fine-tuned into {a['model']}")


def distill(params: dict[str, Any], sp: satori.SatoriParams, fmt: FormatParams, a: dict[str, str]) -> None:
    from tracemill.train import TrainParams

    dp = sp.distill
    tp = P.section(TrainParams, params, "train").distill
    check_model_folder(Path(a["teacher"]), "the round-2 RL policy (dvc repro rl_r2)")
    student = check_model_folder(Path(dp.student), "satori.distill.student") if dp.student else None
    got = _correct_samples(params, "distill", a, dp, fmt)
    if got is None:
        return
    rows, traces = got
    if student is None:
        student = satori.cut_layers(resolve_policy(params)[0], Path(a["out"]) / "student_init", dp.student_layers)
    metrics = _train_into(Path(a["model"]), student, rows, tp, fmt, a["loss_plot"])
    store.write_json(
        a["metrics"],
        {
            **metrics,
            "samples": len(traces),
            "teacher_accuracy": trace_metrics(a["out"], "distill").get("accuracy"),
            "examples": len(rows),
            "student": str(dp.student or f"base cut to {dp.student_layers} layers"),
        },
    )
    print(f"distill: {len(rows)} correct round-2 RL traces of {len(traces)} samples -> {a['model']}")


JOBS: dict[str, Callable[[dict[str, Any], satori.SatoriParams, FormatParams, dict[str, str]], None]] = {
    "coat": coat,
    "format_tune": format_tune,
    "rae_states": rae_states,
    "orm": orm,
    "rl": partial(rl, round_=1),
    "rl_sft": rl_sft,
    "rl_r2": partial(rl, round_=2),
    "distill": distill,
}


def main() -> None:
    job = stage.job(JOBS)
    a = stage.args(JOB_ARGS[job], argv=sys.argv[2:])
    params = P.load(stage.params_path())
    JOBS[job](params, P.section(satori.SatoriParams, params, "satori"), P.section(FormatParams, params, "format"), a)


if __name__ == "__main__":
    stage.run(main)
