"""`stages.satori`: coat -> format_tune -> rae_states -> orm -> rl -> rl_sft -> rl_r2 -> distill on real tables and a
tiny model.

The search rounds are real trees written through the real extraction and store (the fixtures of
test_rstar_train), the base policy a tiny random Qwen2 model, generation the HF backend and the local
sandbox, the RL TRL's GRPO trainer.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import stage_cmd
from test_rstar_train import FMT, QUESTIONS, TINY, build_project

from tracemill import formats, satori, stage, store, tiny
from tracemill.formats import FormatParams, render_prompt
from tracemill.train import IGNORE_INDEX, build_labels

COAT_FMT = FormatParams(step_system_prompt=FMT.step_system_prompt, coat_system_prompt="COAT.")
TRAIN = {
    "learning_rate": 3.0e-3,
    "batch_size": 4,
    "micro_batch_size": 4,
    "epochs": 1,
    "max_length": 384,
    "warmup_ratio": 0.0,
    "save_steps": 1000,
    "logging_steps": 1,
    "heldout_fraction": 0.0,
    "prompt_style": "coat",
}
PARAMS = {
    "format": {"step_system_prompt": FMT.step_system_prompt, "coat_system_prompt": COAT_FMT.coat_system_prompt},
    "rstar": {"rounds": 2},
    "train": {"format_tune": TRAIN, "distill": TRAIN},
    "satori": {
        "coat": {"meta_warmup_epochs": 3, "meta_warmup_lr": 1.0e-2},
        "rae_states": {
            "sample": {
                "split": "train",
                "max_problems": 3,
                "k": 4,
                "temperature": 1.0,
                "max_tokens_per_turn": 12,
                "max_tokens_total": 24,
            }
        },
        "orm": {
            **{
                k: TRAIN[k]
                for k in (
                    "learning_rate",
                    "batch_size",
                    "micro_batch_size",
                    "epochs",
                    "max_length",
                    "warmup_ratio",
                    "save_steps",
                    "logging_steps",
                )
            },
            "heldout_fraction": 0.0,
        },
        "rl": {
            "max_steps": 1,
            "per_device_train_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 12,
            "learning_rate": 1.0e-2,
            "temperature": 1.0,
        },
        "round2": {
            "max_per_problem": 2,
            "sample": {
                "split": "train",
                "max_problems": 2,
                "k": 2,
                "temperature": 1.0,
                "max_tokens_per_turn": 12,
                "max_tokens_total": 24,
            },
            "max_steps": 1,
            "num_generations": 2,
            "per_device_train_batch_size": 2,
        },
        "distill": {
            "student_layers": 1,
            "sample": {
                "split": "train",
                "max_problems": 3,
                "k": 2,
                "temperature": 1.0,
                "max_tokens_per_turn": 12,
                "max_tokens_total": 24,
            },
        },
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    built = build_project(tmp_path_factory.mktemp("satori"), PARAMS)
    for job in ("coat", "format_tune", "rae_states", "orm", "rl", "rl_sft", "rl_r2", "distill"):
        code, err = run_job(built["root"], job)
        assert code == 0, f"{job}: {err[-3000:]}"
    return built


def run_job(root: Path, job: str) -> tuple[int, str]:
    from stages.satori import main

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.chdir(root)
        mp.setenv("TRACEMILL_PARAMS", "params.test.yaml")
        mp.setattr(sys, "argv", stage_cmd(job)[2:])  # the job and the paths dvc.yaml passes
        try:
            stage.run(main)
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


def metrics(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "metrics" / f"{name}.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_coat_rows_come_from_both_rounds_nodes(project: dict[str, Any]) -> None:
    root = project["root"]
    rows = store.read_rows(root / "data/coat", "coat")
    nodes = {n["node_id"]: n for r in (1, 2) for n in project["tables"][r]["nodes"]}
    m = metrics(root, "coat")
    assert m["rows"] == len(rows) and sum(m["by_kind"].values()) == len(rows)
    # Round 1 has a right and a wrong branch per problem: every kind appears for every problem.
    assert all(m["by_kind"][k] >= len(QUESTIONS) for k in satori.COAT_KINDS)
    for row in rows:
        assert all(nodes[i]["exec_ok"] for i in row["source_node_ids"])
        last = nodes[row["source_node_ids"][-1]]
        assert last["terminal"] and last["correct"]
        actions = [a for a, _ in satori.parse(row["text"])]
        # one <|reflect|> step beyond the source nodes in every kind but plain, and its check ran in the sandbox;
        # a confirm of the answer itself gives the answer again after it
        again = json.loads(row["metadata"] or "{}").get("reflect_after") == len(row["source_node_ids"])
        assert len(actions) == len(row["source_node_ids"]) + (row["kind"] != "plain") + again
        if row["kind"] != "plain":
            printed = json.loads(row["metadata"])["check_printed"]
            assert f"{FMT.output_start}" in row["text"] and printed in row["text"].split(satori.REFLECT, 1)[1]
    csv = (root / "plots/coat_kinds.csv").read_text().splitlines()
    assert csv[0] == "kind,count" and len(csv) == 1 + len(satori.COAT_KINDS)


def test_format_tune_trains_on_coat_with_tool_output_masked(project: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    root = project["root"]
    rows = store.read_rows(root / "data/format_tune", "sft")
    assert len(rows) == metrics(root, "coat")["rows"] == metrics(root, "format_tune")["examples"]
    base, tuned = weights(root / "models/bootstrap"), weights(root / "models/format_tune")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    tokenizer = AutoTokenizer.from_pretrained(root / "models/format_tune")
    row = next(r for r in rows if json.loads(r["metadata"])["kind"] == "reflect")
    ids, labels = build_labels(tokenizer, row["prompt"], row["segments"], style="coat", fmt=COAT_FMT)
    trained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert satori.REFLECT in trained and satori.CONTINUE in trained
    # the model writes the ```output opener (its hand-over to the sandbox); what the sandbox printed is masked
    assert FMT.output_start in trained and FMT.code_start in trained
    outputs = [s for s in row["segments"] if s["kind"] == "output"]
    assert outputs and all(not s["loss"] and not s["text"].startswith(FMT.output_start) for s in outputs)
    assert "COAT." in tokenizer.decode(ids)  # the coat system prompt from params
    m = metrics(root, "format_tune")
    assert m["meta_tokens_added"] == [] and set(m["meta_init"]) == set(satori.META_ACTIONS)
    # Each meta-action token starts where its phrase sits, so few demonstrations can teach it.
    init, tuned = weights(root / "data/format_tune/base_with_meta_tokens"), weights(root / "models/format_tune")
    emb = init["model.embed_tokens.weight"]
    phrase = tokenizer(m["meta_init"][satori.REFLECT], add_special_tokens=False)["input_ids"]
    assert torch.allclose(emb[tokenizer.convert_tokens_to_ids(satori.REFLECT)], emb[phrase].mean(dim=0))
    assert not torch.equal(emb, tuned["model.embed_tokens.weight"])


def test_meta_token_warm_up_moves_only_the_meta_rows_and_lowers_the_loss(project: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    root = project["root"]
    before, warmed = (
        weights(root / "data/format_tune/base_with_meta_tokens"),
        weights(root / "data/format_tune/meta_tokens_warmed"),
    )
    meta = AutoTokenizer.from_pretrained(root / "models/format_tune").convert_tokens_to_ids(list(satori.META_ACTIONS))
    emb_before, emb_warmed = before["model.embed_tokens.weight"], warmed["model.embed_tokens.weight"]
    others = [i for i in range(emb_before.shape[0]) if i not in meta]
    assert torch.equal(emb_before[others], emb_warmed[others])
    assert all(not torch.equal(emb_before[i], emb_warmed[i]) for i in meta)
    assert all(torch.equal(before[k], warmed[k]) for k in before if k != "model.embed_tokens.weight")
    m = metrics(root, "format_tune")["meta_warmup"]
    assert m["epochs"] == 3 and m["loss_last"] < m["loss_first"]


def test_rae_states_come_from_the_format_tuned_policys_own_samples(project: dict[str, Any]) -> None:
    root = project["root"]
    traces = store.read_rows(root / "data/rae_states", "traces")
    states = store.read_rows(root / "data/rae_states", "rae_states")
    m = metrics(root, "rae_states")
    assert (
        len(traces) == 3 * 4
        and {t["stage"] for t in traces} == {"rae_states"}
        and {t["model"] for t in traces} == {"format_tune"}
    )
    assert m["states"] == len(states) and m["bare"] == 3 and m["samples"] == len(traces)
    assert m["from_correct"] == len({t["problem_id"] for t in traces if t["correct"]})
    assert m["from_failed"] == len({t["problem_id"] for t in traces if not t["correct"]}) > 0
    source = {t["trace_id"]: t for t in traces}
    for s in states:
        assert s["ends_with_reflect"] == (s["outcome"] != "bare")  # right- and wrong-based states both end with reflect
        if s["outcome"] != "bare":
            assert source[s["node_id"]]["correct"] == (s["outcome"] == "correct")
            assert 0 <= json.loads(s["metadata"])["backup_steps"] <= 2


def test_orm_is_a_ppm_folder_from_the_policys_samples(project: dict[str, Any]) -> None:
    from tracemill.train import load_ppm

    root = project["root"]
    traces = store.read_rows(root / "data/rae_states", "traces")
    m = metrics(root, "orm")
    assert m["pairs_built"] == len(satori.orm_pairs(traces)) and m["trained"] == bool(m["pairs_built"])
    [score] = load_ppm(root / "models/orm").score("", ["What is 2 + 2? \\boxed{4}"])
    assert isinstance(score, float)


def test_rl_writes_the_policy_the_reward_parts_and_the_reflection_rates(project: dict[str, Any]) -> None:
    # A random policy earns the same reward on every completion, so GRPO's advantages are zero here;
    # test_rl checks on a pre-trained tiny policy that a step changes the weights.
    root = project["root"]
    before, after = weights(root / "models/format_tune"), weights(root / "models/rl")
    assert before.keys() == after.keys()
    m = metrics(root, "rl")
    assert m["steps"] == 1 and m["states"] > 0 and m["trained"] is True and isinstance(m["reward_first"], float)
    assert {"self_correction_rate", "break_rate", "rollouts_from_failed", "rollouts_from_correct"} <= set(m)
    curve = (root / "plots/rl_reward.csv").read_text().splitlines()
    assert curve[0] == "step,reward,reward_std,rule,preference,reflection,accuracy" and len(curve) == 2
    import csv

    rollouts = list(csv.DictReader((root / "plots/rl_rollouts.csv").open()))
    assert len(rollouts) == 4 and {r["step"] for r in rollouts} == {"1"}
    for r in rollouts:  # the parts add up to the reward; the preference bonus is sigmoid(ORM score), in (0, 1)
        assert abs(float(r["rule"]) + float(r["preference"]) + float(r["reflection"]) - float(r["reward"])) < 1e-9
        assert 0 < float(r["preference"]) < 1
    assert not (root / "models/rl/checkpoints").exists()
    assert {"in_rollout_self_correction_rate", "in_rollout_break_rate", "rollouts_revising_an_answer"} <= set(m)
    # before and after RL, each policy continues greedily from the same reflect states
    reflect = [st for st in store.read_rows(root / "data/rae_states", "rae_states") if st["ends_with_reflect"]]
    for when in ("before_rl", "after_rl"):
        r = m["reflect_states"][when]
        assert r["rollouts_from_correct"] == sum(st["outcome"] == "correct" for st in reflect)
        assert r["rollouts_from_failed"] == sum(st["outcome"] == "failed" for st in reflect) > 0
        assert all(r[k] is None or 0 <= r[k] <= 1 for k in ("self_correction_rate", "break_rate"))


def test_reflect_outcomes_grade_the_state_with_its_continuation(project: dict[str, Any]) -> None:
    """A state that already boxed an answer keeps it unless the continuation boxes another: a right start
    the policy leaves alone is no break, a wrong one is no self-correction."""
    from tracemill import params as P
    from tracemill.rl import reflection_rates
    from tracemill.runtime import open_runtime
    from tracemill.satori import REFLECT, reflect_outcomes

    root = project["root"]
    problems = {p["problem_id"]: p for p in store.read_rows(root / "data/problems", "problems")}
    pid, problem = next((k, p) for k, p in problems.items() if p["domain"] == "math")
    right, wrong = problem["answer"], f"{problem['answer']}1"
    states = [
        {
            "state_id": f"s-{i}",
            "problem_id": pid,
            "outcome": outcome,
            "ends_with_reflect": True,
            "prefix_steps": [f"<|continue|>The answer is \\boxed{{{answer}}}.\n", REFLECT],
        }
        for i, (outcome, answer) in enumerate((("correct", right), ("failed", wrong)))
    ]
    states.append({**states[0], "state_id": "bare", "outcome": "bare", "ends_with_reflect": False, "prefix_steps": []})
    params = P.load(root / "params.test.yaml")
    rp = replace(P.section(satori.SatoriParams, params, "satori").rl, max_completion_length=8, max_tool_calls=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        with open_runtime(params, root / "models/format_tune", "format_tune") as rt:
            rows = reflect_outcomes(rt, states, problems, rp, seed=0)
    assert [(r["state_id"], r["start"]) for r in rows] == [("s-0", "correct"), ("s-1", "failed")]  # bare: none
    rates = reflection_rates(rows)
    assert rates["break_rate"] == 0.0 and rates["self_correction_rate"] == 0.0


def test_round_2_distils_the_rl_policy_into_the_base_then_runs_rl_from_bare_problems(project: dict[str, Any]) -> None:
    import csv

    root = project["root"]
    traces = store.read_rows(root / "data/rl_sft", "traces")
    assert (
        len(traces) == 2 * 2 and {t["stage"] for t in traces} == {"rl_sft"} and {t["model"] for t in traces} == {"rl"}
    )
    m = metrics(root, "rl_sft")
    assert m["samples"] == 4 and m["examples"] == len(store.read_rows(root / "data/rl_sft/selected", "sft"))
    assert m["examples"] == min(sum(t["correct"] for t in traces), 4)
    # the base again (with the meta-action tokens), not the RL policy: round 2 starts from a distilled base
    assert (root / "data/rl_sft/base_with_meta_tokens/config.json").is_file()
    r2 = metrics(root, "rl_r2")
    assert r2["round"] == 2 and r2["trained"] is True and r2["steps"] == 1 and r2["states"] == 2
    assert r2["temperature"] == 1.2 and r2["num_generations"] == 2  # satori.round2's, not satori.rl's
    rollouts = list(csv.DictReader((root / "plots/rl_r2_rollouts.csv").open()))
    assert len(rollouts) == 2 and {r["start"] for r in rollouts} == {"bare"}  # no restart states in round 2
    assert {r["reflection"] for r in rollouts} == {"0.0"} and r2["self_correction_rate"] is None
    assert (root / "plots/rl_r2_reward.csv").read_text().startswith("step,reward")


def test_distill_samples_the_round_2_policy_and_trains_a_smaller_student(project: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    root = project["root"]
    traces = store.read_rows(root / "data/distill", "traces")
    assert (
        len(traces) == 3 * 2
        and {t["stage"] for t in traces} == {"distill"}
        and {t["model"] for t in traces} == {"rl_r2"}
    )
    assert all(t["segments"][0]["text"].startswith(render_prompt("", None, COAT_FMT, "coat")[:30]) for t in traces)
    student = AutoModelForCausalLM.from_pretrained(root / "models/distill")
    assert student.config.num_hidden_layers == 1 < TINY.num_hidden_layers
    m = metrics(root, "distill")
    assert m["samples"] == 6 and m["examples"] == sum(1 for t in traces if t["correct"]) and "1 layers" in m["student"]
    sft = store.read_rows(root / "data/distill/selected", "sft")
    assert len(sft) == m["examples"]


def test_a_real_model_without_meta_tokens_gets_them_added(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = tiny.make_tokenizer(
        ["What is 6 times 7? 42"] * 5, 300, special_tokens=(formats.EOS, formats.IM_START, formats.IM_END)
    )
    src = tiny.save(tiny.make_model(tok, TINY), tok, tmp_path / "plain")
    out, added = satori.with_meta_tokens(src, tmp_path / "with_meta", {satori.EXPLORE: "Alternatively,"})
    assert out == tmp_path / "with_meta" and added == list(satori.META_ACTIONS)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(satori.REFLECT + "42", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids(satori.REFLECT) and len(tokenizer) == len(tok) + 3
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert satori.with_meta_tokens(out, tmp_path / "again", {})[1] == []  # already there: nothing added
    # a meta_init naming anything else never gets here: CoatParams.check refuses it (test_satori)
