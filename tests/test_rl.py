"""One GRPO step from restart states on a real tiny model: the policy changes and a reward is logged."""

import torch

from tracemill import records, tiny
from tracemill.formats import FormatParams, last_boxed
from tracemill.rl import RewardParams, RLParams, make_reward, train_rl

FMT = FormatParams()
PROBLEM = {"problem_id": "p1", "question": "What is 6 times 7?", "answer": "42", "domain": "math"}


def exact(problem, response):
    return last_boxed(response, FMT) == problem["answer"]


def test_reward_adds_reflection_bonus_and_format_penalty():
    log = []
    reward = make_reward({"p1": PROBLEM}, exact, RewardParams(), FMT, log)
    got = reward(["", "", "", ""], ["\\boxed{42}", "\\boxed{42}", "\\boxed{41}", "no answer"], problem_id=["p1"] * 4,
                 outcome=["correct", "failed", "correct", "failed"])
    assert got == [1.0, 1.5, -1.5, -1.5]
    assert log == got


def test_one_rl_step_changes_the_policy_and_logs_a_reward(tmp_path):
    texts = ["What is 6 times 7? We multiply. \\boxed{42} <|continue|> <|reflect|> step"] * 20
    tok = tiny.make_tokenizer(texts, 300)
    model = tiny.make_model(tok, tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1))
    # A few LM steps on right and wrong answers, so sampled completions differ in reward and the
    # group-normalised GRPO advantage is not zero.
    from tracemill.rl import state_prompt

    prompts = [state_prompt({"prefix_steps": ["We multiply.\n"] + extra}, PROBLEM, tok, FMT) for extra in ([], ["<|reflect|>"])]
    batch = tok([p + a for p in prompts for a in (" \\boxed{42}", " \\boxed{41}")], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(**batch, labels=batch.input_ids.masked_fill(batch.attention_mask == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.5, loss.item()
    src = tiny.save(model, tok, tmp_path / "policy")
    states = [
        {"state_id": records.content_id(i), "problem_id": "p1", "prefix_steps": ["We multiply.\n"] + (["<|reflect|>"] if i % 2 else []),
         "node_id": "n", "q": 0.0, "outcome": "failed" if i % 2 else "correct", "ends_with_reflect": bool(i % 2), "metadata": None}
        for i in range(4)
    ]
    params = RLParams(max_steps=1, per_device_train_batch_size=8, num_generations=8, max_completion_length=8, learning_rate=1e-2, temperature=1.0)
    result = train_rl(src, states, {"p1": PROBLEM}, exact, tmp_path / "rl", params, FMT)
    assert result["curve"] and isinstance(result["curve"][0]["reward"], float)
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(src).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "rl").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_tool_rollouts_run_the_policys_code_in_the_sandbox(tmp_path):
    """The policy learned to write code and then a wrong output block itself; in a tool rollout the
    sandbox writes the output, so the graded completion holds the real result."""
    from tracemill.rl import state_prompt
    from tracemill.sandbox import SandboxParams, open_sandbox

    demo = "```python\nprint(6*7)\n```\n```output\n41\n```\nSo \\boxed{42}"
    tok = tiny.make_tokenizer([demo, PROBLEM["question"]] * 20, 300)
    model = tiny.make_model(tok, tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1))
    prompt = state_prompt({"prefix_steps": []}, PROBLEM, tok, FMT)
    batch = tok([prompt + demo + tiny.IM_END], return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        loss = model(**batch, labels=batch.input_ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    src = tiny.save(model, tok, tmp_path / "policy")
    seen = []

    def grade(problem, response):
        seen.append(response)
        return exact(problem, response)

    states = [{"state_id": "s", "problem_id": "p1", "prefix_steps": [], "node_id": "n", "q": 0.0, "outcome": "correct",
               "ends_with_reflect": False, "metadata": None}]
    params = RLParams(max_steps=1, per_device_train_batch_size=4, num_generations=4, max_completion_length=40,
                      learning_rate=1e-3, temperature=0.3)
    with open_sandbox(SandboxParams()) as sandbox:
        train_rl(src, states, {"p1": PROBLEM}, grade, tmp_path / "rl", params, FMT, sandbox=sandbox)
    assert len(seen) == 4
    assert all("```output\n42\n```" in s and "41" not in s for s in seen), seen
    seen.clear()
    train_rl(src, states, {"p1": PROBLEM}, grade, tmp_path / "rl_plain", params, FMT)  # no sandbox: the model's own output
    assert any("41" in s for s in seen), seen
