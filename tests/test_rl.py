"""Satori's reward on hand-built rollouts; GRPO steps from restart states on a real tiny model: the policy
changes, every rollout's reward parts are logged, a killed run resumes without losing or repeating one."""

import math
from pathlib import Path

import torch
from conftest import RL_PROBLEM as PROBLEM
from conftest import fit_lm, restart_state, tiny_policy
from conftest import grade_exact as exact

from tracemill import records, tiny
from tracemill.formats import FormatParams
from tracemill.rl import (
    RewardParams,
    RLParams,
    keep_special_tokens,
    make_reward,
    reflection_rates,
    reward_curve,
    train_rl,
)

FMT = FormatParams()


SIGMA = {"\\boxed{42}": 0.0, "\\boxed{41}": math.log(3), "no answer": math.log(3)}  # raw ORM scores: sigmoid 0.5, 0.75


def test_satori_reward_parts_on_hand_built_rollouts():
    """Rule (verdict - 1), sigmoid(ORM score), and the reflection bonus only on reflect states; no format penalty."""
    log = []
    reward = make_reward(
        {"p1": PROBLEM}, exact, RewardParams(), lambda texts: [SIGMA[t.removeprefix("Q")] for t in texts], log.extend
    )
    starts = ["bare", "bare", "failed", "failed", "correct", "correct", "failed"]
    answers = ["\\boxed{42}", "\\boxed{41}"] * 3 + ["no answer"]
    got = reward(["Q"] * 7, answers, problem_id=["p1"] * 7, state_id=[f"s{i}" for i in range(7)], outcome=starts)
    assert got == [0.5, -0.25, 1.0, -0.25, 0.5, -0.75, -0.25]
    assert [r["reflection"] for r in log] == [0.0, 0.0, 0.5, 0.0, 0.0, -0.5, 0.0]
    assert [r["rule"] for r in log] == [0.0, -1.0, 0.0, -1.0, 0.0, -1.0, -1.0]
    assert [r["preference"] for r in log] == [0.5, 0.75, 0.5, 0.75, 0.5, 0.75, 0.75]
    assert all(r["reward"] == r["rule"] + r["preference"] + r["reflection"] for r in log)
    rates = reflection_rates(log)  # 1 of 3 wrong starts fixed, 1 of 2 right starts broken
    assert rates["self_correction_rate"] == 1 / 3 and rates["break_rate"] == 0.5
    assert (rates["rollouts_from_failed"], rates["rollouts_from_correct"]) == (3, 2)
    [step] = reward_curve(log)
    assert step["reflection"] == 0.0 and step["accuracy"] == 3 / 7 and step["reward"] == sum(got) / 7
    without = make_reward({"p1": PROBLEM}, exact, RewardParams(preference_bonus=False))
    assert without(["Q"], ["\\boxed{42}"], problem_id=["p1"], state_id=["s"], outcome=["failed"]) == [0.5]


def test_an_answer_revised_after_the_rollouts_own_reflection_is_counted_fixed_or_broken():
    """Bare prompts have no restart outcome; the answer a rollout gave before its first <|reflect|> or
    <|explore|> stands in for it."""
    log = []
    reward = make_reward({"p1": PROBLEM}, exact, RewardParams(preference_bonus=False), log=log.extend)
    completions = [
        "So \\boxed{41}.<|reflect|>6*7 is 42, so \\boxed{42}.",  # wrong, then fixed
        "So \\boxed{40}.<|reflect|>Still \\boxed{40}.",  # wrong, stays wrong
        "So \\boxed{42}.<|explore|>Or \\boxed{43}.",  # right, then broken
        "So \\boxed{42}.<|reflect|>Yes, \\boxed{42}.",  # right, stays right
        "<|reflect|>Then \\boxed{42}.",
        "Just \\boxed{42}.",
    ]  # no answer to revise
    reward(["Q"] * 6, completions, problem_id=["p1"] * 6, state_id=["s"] * 6, outcome=["bare"] * 6)
    assert [r["correct_before"] for r in log] == [False, False, True, True, None, None]
    rates = reflection_rates(log)
    assert rates["in_rollout_self_correction_rate"] == 0.5 and rates["in_rollout_break_rate"] == 0.5
    assert rates["rollouts_revising_an_answer"] == 4 and rates["self_correction_rate"] is None  # no reflect states


def test_a_rollout_is_graded_with_its_restart_states_steps():
    """A correct state's reflection that confirms the boxed answer in the state's own steps keeps it (no break);
    a wrong state's answer is overridden only by a new boxed answer in the rollout."""
    log = []
    reward = make_reward({"p1": PROBLEM}, exact, RewardParams(preference_bonus=False), log=log.extend)
    prefixes = ["6*7 = \\boxed{42}.<|reflect|>", "6*7 = \\boxed{41}.<|reflect|>", "6*7 = \\boxed{41}.<|reflect|>"]
    completions = ["Yes, that holds.", "That holds.", "No: 6*7 is \\boxed{42}."]
    got = reward(
        ["Q"] * 3,
        completions,
        problem_id=["p1"] * 3,
        state_id=["a", "b", "c"],
        outcome=["correct", "failed", "failed"],
        prefix=prefixes,
    )
    assert [r["correct"] for r in log] == [True, False, True]
    assert got == [0.0, -1.0, 0.5]
    assert reflection_rates(log)["break_rate"] == 0.0


PLAIN = RewardParams(preference_bonus=False)


def test_completions_are_read_from_their_token_ids_with_the_meta_actions_kept():
    """TRL's completion text drops special tokens (<|reflect|> among them); the reward decodes the ids itself."""
    text = "So \\boxed{41}.<|reflect|>6*7 is \\boxed{42}."
    _, tok = tiny_policy([text])
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert "<|reflect|>" not in tok.decode(ids, skip_special_tokens=True)
    log = []
    reward = make_reward({"p1": PROBLEM}, exact, PLAIN, log=log.extend, decode=keep_special_tokens(tok))
    reward(
        ["Q"],
        [tok.decode(ids, skip_special_tokens=True)],
        problem_id=["p1"],
        state_id=["s"],
        outcome=["bare"],
        completion_ids=[ids],
    )
    assert log[0]["correct_before"] is False and log[0]["correct"] is True
    assert reflection_rates(log)["in_rollout_self_correction_rate"] == 1.0


def test_one_rl_step_changes_the_policy_and_logs_a_reward(tmp_path):
    model, tok = tiny_policy(["What is 6 times 7? We multiply. \\boxed{42} <|continue|> <|reflect|> step"] * 20)
    # A few LM steps on right and wrong answers, so sampled completions differ in reward and the
    # group-normalised GRPO advantage is not zero.
    from tracemill.rl import state_prompt

    prompts = [
        state_prompt({"prefix_steps": ["We multiply.\n"] + extra}, PROBLEM, tok, FMT) for extra in ([], ["<|reflect|>"])
    ]
    batch = tok([p + a for p in prompts for a in (" \\boxed{42}", " \\boxed{41}")], return_tensors="pt", padding=True)
    loss = fit_lm(model, batch, batch.input_ids.masked_fill(batch.attention_mask == 0, -100), 150)
    assert loss < 0.5, loss
    src = tiny.save(model, tok, tmp_path / "policy")
    states = [
        restart_state(
            records.content_id(i),
            "failed" if i % 2 else "correct",
            ["We multiply.\n"] + (["<|reflect|>"] if i % 2 else []),
        )
        for i in range(4)
    ]
    params = RLParams(
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=8,
        max_completion_length=8,
        learning_rate=1e-2,
        temperature=1.0,
    )
    from tracemill.train import PPMParams, init_ppm

    orm = init_ppm(src, tmp_path / "orm", PPMParams())  # a real ORM folder with a zero head: sigmoid(0) = 0.5 for all
    result = train_rl(src, states, {"p1": PROBLEM}, exact, tmp_path / "rl", params, FMT, orm=orm)
    assert result["curve"] and isinstance(result["curve"][0]["reward"], float)
    assert len(result["rollouts"]) == 8 and {r["preference"] for r in result["rollouts"]} == {0.5}
    assert {result[k] for k in ("self_correction_rate", "break_rate")} - {None}  # the step's state is a reflect state
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(src).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "rl").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def graded_tool_rollouts(tmp_path, state, demo, *, sandboxed=True, policy=None):
    """One GRPO step (4 rollouts) of a tiny policy that learned `demo` after `state`'s prompt by heart;
    returns every response the reward graded (the state's steps and the rollout) and the policy folder."""
    from tracemill.rl import state_prompt
    from tracemill.sandbox import SandboxParams, open_sandbox

    if policy is None:
        model, tok = tiny_policy(["".join(state["prefix_steps"]) + demo, PROBLEM["question"]] * 20)
        batch = tok([state_prompt(state, PROBLEM, tok, FMT) + demo + tiny.IM_END], return_tensors="pt")
        fit_lm(model, batch, batch.input_ids, 120)
        policy = tiny.save(model, tok, tmp_path / "policy")
    seen = []

    def grade(problem, response):
        seen.append(response)
        return exact(problem, response)

    params = RLParams(
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=40,
        learning_rate=1e-3,
        temperature=0.3,
        reward=PLAIN,
    )
    out = tmp_path / ("rl" if sandboxed else "rl_plain")
    if sandboxed:
        with open_sandbox(SandboxParams()) as sandbox:
            train_rl(policy, [state], {"p1": PROBLEM}, grade, out, params, FMT, sandbox=sandbox)
    else:
        train_rl(policy, [state], {"p1": PROBLEM}, grade, out, params, FMT)
    assert len(seen) == 4
    return seen, policy


def test_tool_rollouts_run_the_policys_code_in_the_sandbox(tmp_path):
    """The policy learned to write code and then a wrong output block itself; in a tool rollout the
    sandbox writes the output, so the graded completion holds the real result."""
    demo = "```python\nprint(6*7)\n```\n```output\n41\n```\nSo \\boxed{42}"
    seen, policy = graded_tool_rollouts(tmp_path, restart_state("s"), demo)
    assert all("```output\n42\n```" in s and "41" not in s for s in seen), seen
    plain, _ = graded_tool_rollouts(tmp_path, restart_state("s"), demo, sandboxed=False, policy=policy)
    assert any("41" in s for s in plain), plain  # no sandbox: the model's own output


def test_a_rollout_from_a_restart_state_finds_the_variables_its_steps_defined(tmp_path):
    """The state's cells run again in the rollout's session first: the policy's `print(total)` prints
    what the state's step computed, not a NameError."""
    step = "Compute.\n```python\ntotal = 6*7\nprint(total)\n```\n```output\n42\n```\n"
    demo = "Check.\n```python\nprint(total)\n```\n```output\n0\n```\nSo \\boxed{42}"
    seen, _ = graded_tool_rollouts(tmp_path, restart_state("s", prefix_steps=[step]), demo)
    assert all(s.startswith(step) and s.count("```output\n42\n```") == 2 for s in seen), seen
    assert not any("NameError" in s for s in seen), seen


KILLED_RL = """
import json, sys
from tracemill.rl import RewardParams, RLParams, train_rl
from tracemill.formats import FormatParams, last_boxed
params = RLParams(**json.loads(sys.argv[4]), reward=RewardParams(preference_bonus=False))
src, out, states = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
problem = {"problem_id": "p1", "question": "What is 6 times 7?", "answer": "42", "domain": "math"}
def grade(p, r):
    return last_boxed(r, FormatParams()) == "42"
train_rl(src, states, {"p1": problem}, grade, out, params, FormatParams(), resume=True)
"""


def test_rl_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    """A real SIGKILL (TRACEMILL_FAILPOINT=train.saved:1) right after the first checkpoint; the re-run
    continues from that step and ends with the reward curve of every step."""
    import json
    import os
    import subprocess
    import sys

    src = tiny.save(*tiny_policy(["What is 6 times 7? We multiply. \\boxed{42} \\boxed{41}"] * 20), tmp_path / "policy")
    states = [restart_state(str(i)) for i in range(4)]
    params = {
        "max_steps": 3,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 8,
        "learning_rate": 1e-3,
        "temperature": 1.0,
    }
    out = tmp_path / "rl"
    cmd = [sys.executable, "-c", KILLED_RL, str(src), str(out), json.dumps(states), json.dumps(params)]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run(cmd, env=env | {"TRACEMILL_FAILPOINT": "train.saved:1"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-1").is_dir() and not (out / "model.safetensors").exists()
    result = train_rl(src, states, {"p1": PROBLEM}, exact, out, RLParams(**params, reward=PLAIN), FMT, resume=True)
    assert result["resumed_from_step"] == 1
    assert [c["step"] for c in result["curve"]] == [1, 2, 3]  # the steps before the kill come back with the checkpoint
    assert (
        sorted(r["step"] for r in result["rollouts"]) == [1] * 4 + [2] * 4 + [3] * 4
    )  # no rollout lost or written twice
    assert (out / "model.safetensors").exists() and not (out / "checkpoints").exists()
    fresh = train_rl(
        src, states, {"p1": PROBLEM}, exact, tmp_path / "other", RLParams(**params, reward=PLAIN), FMT, resume=True
    )
    assert fresh["resumed_from_step"] == 0
