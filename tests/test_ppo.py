"""Satori's PPO: GAE, whitening and the clipped losses on hand-built tensors; one PPO step on a real tiny
policy and ORM critic; tool rollouts whose sandbox output carries no loss; a killed run that resumes without
losing or repeating a rollout."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RL_PROBLEM, fit_lm, grade_exact, restart_state, tiny_policy

from tracemill import tiny
from tracemill.errors import ParamsError
from tracemill.formats import FormatParams
from tracemill.ppo import (
    gae,
    load_models,
    make_experience,
    own_grid,
    policy_loss,
    ppo_step,
    token_rewards,
    value_loss,
    whiten,
)
from tracemill.rl import PPOParams, RewardParams, RLParams, make_reward, state_prompt, tool_completions, train_rl

FMT = FormatParams()
PLAIN = RewardParams(preference_bonus=False)


def test_gae_on_hand_built_values_skips_tokens_that_are_not_the_policys():
    """gamma 0.9, lambda 0.5. Row 1: three own tokens, reward 1 on the last. Row 2: the same own tokens
    around a sandbox-output token (value 5, a stray reward 7) and a pad: that token gets no advantage and the
    recursion passes over it."""
    values = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 5.0, 3.0, 9.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 7.0, 1.0, 0.0]])
    own = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    adv, ret = gae(values, rewards, own, gamma=0.9, lambd=0.5)
    # row 1: A2 = 1 - 3 = -2; A1 = (0.9*3 - 2) + 0.45*A2 = -0.2; A0 = (0.9*2 - 1) + 0.45*A1 = 0.71
    # row 2: A2 = -2; A0 = (0.9*3 - 1) + 0.45*A2 = 0.8 (the next own value is token 2's)
    assert torch.allclose(adv, torch.tensor([[0.71, -0.2, -2.0, 0.0], [0.8, 0.0, -2.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.71, 1.8, 1.0, 0.0], [1.8, 0.0, 1.0, 0.0]]))
    # gamma = lambda = 1 (Satori's gamma, no bootstrapping): each own token's advantage is the reward minus its value
    adv, _ = gae(values[:1], rewards[:1], own[:1], gamma=1.0, lambd=1.0)
    assert torch.allclose(adv, torch.tensor([[0.0, -1.0, -2.0, 0.0]]))


def test_whitening_and_token_rewards():
    adv = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    own = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, variance 2/3 over own tokens; the masked 99 neither counts nor survives
    assert torch.allclose(whiten(adv, own), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]) / math.sqrt(2 / 3))
    own = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert torch.equal(
        token_rewards(torch.tensor([0.5, -1.0]), own, None, 0.0),
        torch.tensor([[0.0, 0.0, 0.5, 0.0], [0.0, -1.0, 0.0, 0.0]]),
    )
    kl = torch.full_like(own, 2.0)  # log pi - log pi_ref on every token; beta 0.1 charges 0.2 per own token
    assert torch.allclose(
        token_rewards(torch.tensor([0.5, -1.0]), own, kl, 0.1),
        torch.tensor([[0.0, -0.2, 0.3, 0.0], [-0.2, -1.2, 0.0, 0.0]]),
    )


def test_clipped_losses_on_hand_built_ratios_and_masked_tokens_carry_no_gradient():
    """eps 0.2. Ratios 1.5 and 0.5 with advantages +1 and -1: the surrogate clips the ratio only where it
    would gain from leaving [0.8, 1.2]; the fifth token (a sandbox output, ratio e^5) is masked."""
    old = torch.zeros(1, 5)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.5), math.log(0.5), 5.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    own = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss = policy_loss(logp, old, adv, own, eps_clip=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)
    loss.backward()
    # d/dlogp of -r A / 4 is -r A / 4 where unclipped; 0 where clipped and at the masked token
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.125, 0.375, 0.0, 0.0]]))
    assert policy_loss(logp, old, adv, own, 0.2, tokens=torch.tensor(8.0)).item() == pytest.approx(0.6 / 8)

    values = torch.tensor([[0.5, -0.1, 7.0]], requires_grad=True)
    returns, own = torch.tensor([[1.0, -0.1, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    vl = value_loss(values, torch.zeros(1, 3), returns, own, value_clip=0.2)
    # token 1: clipped to 0.2, max((0.5-1)^2, (0.2-1)^2) = 0.64; token 2: exact, 0; mean 0.32, halved
    assert vl.item() == pytest.approx(0.16)
    vl.backward()
    assert values.grad[0, 2] == 0.0


def test_own_grid_marks_the_policys_completion_tokens_only():
    """Prompt [a, b], completion [code, out, out, end]: the grid's column i predicts token i + 1."""
    assert own_grid([[5, 6]], [[1, 0, 0, 1]], 5).tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]


def _ppo(**ppo) -> dict:
    return {"algorithm": "ppo", "ppo": PPOParams(**ppo)}


def test_params_reject_ppo_under_deepspeed_and_uneven_mini_batches():
    with pytest.raises(ParamsError, match="DeepSpeed"):
        RLParams(**_ppo(), deepspeed="configs/deepspeed/zero2.json").check()
    with pytest.raises(ParamsError, match="mini_batch_size"):
        PPOParams(rollout_batch_size=3, mini_batch_size=2, micro_batch_size=1).check()


def test_one_ppo_step_changes_policy_and_critic_and_logs_every_rollouts_reward_parts(tmp_path):
    from tracemill.rl import dataset_rows
    from tracemill.train import PPMParams, init_ppm

    texts = ["What is 6 times 7? We multiply. \\boxed{42} \\boxed{41} <|reflect|>"] * 20
    src = tiny.save(*tiny_policy(texts), tmp_path / "policy")
    orm = init_ppm(src, tmp_path / "orm", PPMParams())  # a real ORM folder: the critic starts as it
    params = RLParams(
        **_ppo(rollout_batch_size=4, mini_batch_size=2, micro_batch_size=1, critic_learning_rate=1e-2),
        learning_rate=1e-2,
        max_completion_length=8,
        temperature=1.0,
    )
    models = load_models(src, orm, None, params, "cpu")
    from transformers import AutoModelForSequenceClassification

    ppm = AutoModelForSequenceClassification.from_pretrained(orm).state_dict()
    assert all(torch.equal(v, ppm[k]) for k, v in models.critic.state_dict().items())
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (models.policy, models.critic)]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    states = [restart_state("a"), restart_state("b", "failed", ["We multiply.\n", "<|reflect|>"])]
    rows = dataset_rows(states, {"p1": RL_PROBLEM}, tok, FMT)
    log: list[dict] = []
    reward = make_reward({"p1": RL_PROBLEM}, grade_exact, params.reward, lambda texts: [0.0] * len(texts), log.extend)
    ppo_step(models, tok, rows * 2, 0, reward, params, FMT, None)
    assert len(log) == 4 and {r["step"] for r in log} == {1} and {r["state_id"] for r in log} == {"a", "b"}
    assert all(r["preference"] == 0.5 and r["reward"] == r["rule"] + r["preference"] + r["reflection"] for r in log)
    for model, old in zip((models.policy, models.critic), before):
        assert any(not torch.equal(v, old[k]) for k, v in model.state_dict().items())


def test_tool_rollouts_mask_the_sandbox_output_from_advantages_and_losses(tmp_path):
    """A policy taught to write code and a wrong output block; in a tool rollout the sandbox writes the
    output, and none of its tokens carries an advantage, a value target or a gradient."""
    from tracemill.sandbox import SandboxParams, open_sandbox

    demo = "```python\nprint(6*7)\n```\n```output\n41\n```\nSo \\boxed{42}"
    model, tok = tiny_policy([demo, RL_PROBLEM["question"]] * 20)
    prompt = state_prompt({"prefix_steps": []}, RL_PROBLEM, tok, FMT)
    batch = tok([prompt + demo + tiny.IM_END], return_tensors="pt")
    fit_lm(model, batch, batch.input_ids, 120)
    src = tiny.save(model, tok, tmp_path / "policy")
    params = RLParams(
        **_ppo(rollout_batch_size=2, mini_batch_size=2, micro_batch_size=2),
        max_completion_length=40,
        temperature=0.3,
        reward=PLAIN,
    )
    models = load_models(src, None, None, params, "cpu")
    with open_sandbox(SandboxParams()) as sandbox:
        made = tool_completions(models.policy, tok, [prompt] * 2, 0, sandbox, FMT, params)
    texts = [tok.decode(c) for c in made["completion_ids"]]
    assert all("```output\n42\n```" in t for t in texts), texts
    exp = make_experience(models, made, [1.0, -1.0], tok.pad_token_id, params)
    for b, (p, mask) in enumerate(zip(made["prompt_ids"], made["env_mask"])):
        outside = [len(p) - 1 + i for i, m in enumerate(mask) if m == 0]
        assert outside
        assert all(exp.own[b, i] == 0 and exp.advantages[b, i] == 0 and exp.returns[b, i] == 0 for i in outside)
    logp = exp.old_logp.clone().requires_grad_()
    policy_loss(logp + 0.1, exp.old_logp, exp.advantages, exp.own, 0.2).backward()
    assert (logp.grad[exp.own == 0] == 0).all() and (logp.grad[exp.own == 1] != 0).any()


KILLED_PPO = """
import json, sys
from tracemill.rl import PPOParams, RewardParams, RLParams, train_rl
from tracemill.formats import FormatParams, last_boxed
p = json.loads(sys.argv[4])
params = RLParams(**p["rl"], ppo=PPOParams(**p["ppo"]), reward=RewardParams(preference_bonus=False))
src, out, states = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
problem = {"problem_id": "p1", "question": "What is 6 times 7?", "answer": "42", "domain": "math"}
grade = lambda p, r: last_boxed(r, FormatParams()) == "42"
train_rl(src, states, {"p1": problem}, grade, out, params, FormatParams(), resume=True)
"""


def test_ppo_killed_after_a_checkpoint_resumes_without_losing_or_repeating_a_rollout(tmp_path):
    """A real SIGKILL right after the first checkpoint (TRACEMILL_FAILPOINT=train.saved:1); the re-run
    continues from step 1 and ends with the same rollouts, step by step and state by state, as an
    uninterrupted run."""
    src = tiny.save(*tiny_policy(["What is 6 times 7? We multiply. \\boxed{42} \\boxed{41}"] * 20), tmp_path / "policy")
    states = [restart_state(str(i)) for i in range(3)]
    knobs = {
        "rl": {
            "algorithm": "ppo",
            "max_steps": 3,
            "save_steps": 1,
            "max_completion_length": 8,
            "learning_rate": 1e-3,
            "temperature": 1.0,
        },
        "ppo": {"rollout_batch_size": 2, "mini_batch_size": 2, "micro_batch_size": 1},
    }
    out = tmp_path / "rl"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", KILLED_PPO, str(src), str(out), json.dumps(states), json.dumps(knobs)]
    killed = subprocess.run(cmd, env=env | {"TRACEMILL_FAILPOINT": "train.saved:1"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-1").is_dir() and not (out / "model.safetensors").exists()
    params = RLParams(**knobs["rl"], ppo=PPOParams(**knobs["ppo"]), reward=PLAIN)
    result = train_rl(src, states, {"p1": RL_PROBLEM}, grade_exact, out, params, FMT, resume=True)
    assert result["resumed_from_step"] == 1
    assert [c["step"] for c in result["curve"]] == [1, 2, 3]
    fresh = train_rl(src, states, {"p1": RL_PROBLEM}, grade_exact, tmp_path / "other", params, FMT, resume=True)
    assert fresh["resumed_from_step"] == 0

    def order(run: dict) -> list[tuple[int, str]]:
        return [(r["step"], r["state_id"]) for r in run["rollouts"]]

    assert order(result) == order(fresh)
    assert sorted(r["step"] for r in result["rollouts"]) == [1, 1, 2, 2, 3, 3]  # no rollout lost or written twice
    # six prompts over three states: every state twice, each pass a new order
    assert sorted(r["state_id"] for r in result["rollouts"]) == ["0", "0", "1", "1", "2", "2"]
    assert (out / "model.safetensors").exists() and not (out / "checkpoints").exists()
    assert (
        set(result)
        == set(fresh)
        >= {
            "states",
            "steps",
            "curve",
            "rollouts",
            "self_correction_rate",
            "break_rate",
            "reward_first",
            "reward_last",
            "resumed_from_step",
        }
    )
