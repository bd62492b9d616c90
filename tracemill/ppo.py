"""Satori's RL algorithm: PPO as its code runs it (satori-reasoning/Satori, an OpenRLHF fork), on plain
PyTorch and transformers, for `satori.rl.algorithm: ppo`.

One PPO step: `rollout_batch_size` prompts (the restart states of `tracemill.rl.prompt_rows`), each
sampled `samples_per_prompt` times — tool-integrated with a sandbox (`tracemill.rl.tool_completions`,
GRPO's path), plain sampling otherwise; Satori's reward (`tracemill.rl.make_reward`, which logs every
rollout's parts) on each rollout's last own token; values from the critic, the ORM folder's backbone and
scalar head read at every token (Satori's critic starts from its reward model); GAE over the policy's own
tokens, whitened over the step; then `ppo_epochs` passes of the clipped policy and clipped value losses in
mini-batches, each model with its own AdamW. Sandbox output tokens are the environment's: no advantage,
no value target, no loss. A reference policy is loaded only when the KL coefficient `beta` is above 0.

Checkpoints (policy, critic, optimizer states) go to out_dir/checkpoints every `save_steps`; a step's
prompts and sampling seed follow from its number, so a killed run resumes from the last checkpoint and
neither loses nor repeats a rollout (`RolloutLog` keeps the rollouts of the steps the checkpoint holds).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tracemill import faults
from tracemill.formats import FormatParams
from tracemill.rl import (
    GradeFn,
    RLParams,
    RolloutLog,
    finish_run,
    make_reward,
    orm_scorer,
    prompt_rows,
    restart_cells,
    run_fingerprint,
    tool_completions,
)
from tracemill.sandbox.base import Sandbox
from tracemill.train.hf import CHECKPOINTS, claim_checkpoints, pad, step_of
from tracemill.train.launch import retain_freed_memory

WHITEN_EPS = 1e-8  # variance floor: a step whose advantages are all equal is centred, never divided by 0
OPTIMIZERS = "optimizers.pt"
REWARD_COLUMNS = ("problem_id", "state_id", "outcome", "prefix")  # the prompt rows' columns make_reward reads


# --- the algorithm on tensors -------------------------------------------------------------------------
# Every tensor below is on the grid of next-token predictions: column i is the state after token i and the
# action of token i + 1. `own` marks the policy's own completion tokens (1), everything else 0.


def gae(
    values: torch.Tensor, rewards: torch.Tensor, own: torch.Tensor, gamma: float, lambd: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and value targets (returns) of each own token. A token that is not the policy's —
    prompt, padding, a sandbox output block — is part of the environment's transition: it gets no
    advantage and the recursion passes over it to the next own token's value. Where a row's own tokens are
    contiguous this is OpenRLHF's get_advantages_and_returns."""
    mine = own.bool()
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        here = delta + gamma * lambd * last
        advantages[:, t] = torch.where(mine[:, t], here, 0.0)
        last = torch.where(mine[:, t], here, last)
        next_value = torch.where(mine[:, t], values[:, t], next_value)
    return advantages, torch.where(mine, advantages + values, 0.0)


def whiten(advantages: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit variance over all own tokens of the step (OpenRLHF normalises across the whole
    rollout batch, not per mini-batch)."""
    n = own.sum().clamp(min=1)
    mean = (advantages * own).sum() / n
    var = ((advantages - mean) ** 2 * own).sum() / n
    return (advantages - mean) * var.clamp(min=WHITEN_EPS).rsqrt() * own


def token_rewards(scores: torch.Tensor, own: torch.Tensor, kl: torch.Tensor | None, beta: float) -> torch.Tensor:
    """Each rollout's reward on its last own token, minus beta x the KL estimate log pi - log pi_ref on
    every own token (OpenRLHF's compute_reward with the k1 estimator)."""
    out = -beta * kl * own if kl is not None else torch.zeros_like(own)
    last = (own * torch.arange(own.shape[1], device=own.device)).argmax(dim=1)
    out[torch.arange(own.shape[0], device=own.device), last] += scores.to(out.dtype)
    return out


def _token_mean(loss: torch.Tensor, own: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    return torch.where(own.bool(), loss, 0.0).sum() / (own.sum() if tokens is None else tokens)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    own: torch.Tensor,
    eps_clip: float,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate -min(r A, clip(r, 1 - eps, 1 + eps) A), r = pi / pi_old, averaged over own
    tokens; with `tokens`, summed and divided by it (a micro-batch's share of its mini-batch's mean)."""
    # not-own positions get ratio 1, so exp never overflows where the loss is not taken
    ratio = torch.where(own.bool(), logp - old_logp, 0.0).exp()
    loss = -torch.min(ratio * advantages, ratio.clamp(1 - eps_clip, 1 + eps_clip) * advantages)
    return _token_mean(loss, own, tokens)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    own: torch.Tensor,
    value_clip: float,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Half the larger squared error of the values and of the values kept within value_clip of the
    rollout's (OpenRLHF's ValueLoss), averaged over own tokens like `policy_loss`."""
    clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    return 0.5 * _token_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), own, tokens)


# --- models --------------------------------------------------------------------------------------------


@dataclass
class Models:
    policy: Any
    critic: Any
    reference: Any | None
    policy_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer


def token_logprobs(policy: Any, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(token i + 1 | tokens up to i) at the sampling temperature. No attention mask: rows are
    right-padded, and under causal attention padding never reaches a real token."""
    logits = policy(input_ids=ids).logits[:, :-1].float() / temperature
    return logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_values(critic: Any, ids: torch.Tensor) -> torch.Tensor:
    """The critic's scalar head on every position's hidden state: the value of the state after token i.
    The ORM reads the same head at the last token only."""
    hidden = critic.base_model(input_ids=ids).last_hidden_state
    return critic.score(hidden).squeeze(-1)[:, :-1].float()


def _critic(path: str | Path, fresh_head: bool) -> Any:
    """The critic from an ORM folder; with fresh_head, the policy's backbone with a zero head (OpenRLHF's
    critic_pretrain falls back to the policy when there is no reward model)."""
    from transformers import AutoModelForSequenceClassification

    critic = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    if fresh_head:
        with torch.no_grad():
            critic.score.weight.zero_()
    return critic


def load_models(
    model_path: str | Path, orm: str | Path | None, checkpoint: str | None, params: RLParams, device: str
) -> Models:
    """Policy and critic from the checkpoint when resuming, else from the model and the ORM; their AdamW
    optimizers (weight decay 0: train_ppo_ray.py --l2), restored with them."""
    from transformers import AutoModelForCausalLM

    start = Path(checkpoint) if checkpoint else None
    policy = AutoModelForCausalLM.from_pretrained(str(start / "policy" if start else model_path), dtype=torch.float32)
    critic = _critic(start / "critic" if start else orm or model_path, fresh_head=start is None and orm is None)
    reference = None
    if params.beta > 0:
        # transformers types .to as taking a model, not a device (as in llm/hf.py)
        reference = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
        reference = reference.to(device).eval()  # type: ignore[arg-type]
    policy, critic = policy.to(device), critic.to(device)  # type: ignore[arg-type]
    beta1, beta2 = params.ppo.adam_betas
    betas = (beta1, beta2)
    models = Models(
        policy,
        critic,
        reference,
        torch.optim.AdamW(policy.parameters(), lr=params.learning_rate, betas=betas, weight_decay=0.0),
        torch.optim.AdamW(critic.parameters(), lr=params.ppo.critic_learning_rate, betas=betas, weight_decay=0.0),
    )
    if start:
        states = torch.load(start / OPTIMIZERS, map_location=device)
        models.policy_opt.load_state_dict(states["policy"])
        models.critic_opt.load_state_dict(states["critic"])
    return models


def save_checkpoint(checkpoints: Path, step: int, models: Models) -> None:
    """checkpoint-<step>, written under a temporary name and renamed whole, so a kill mid-save leaves the
    previous one; older checkpoints go (a resume needs only the last)."""
    done = checkpoints / f"checkpoint-{step}"
    tmp = checkpoints / f"tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    models.policy.save_pretrained(tmp / "policy")
    models.critic.save_pretrained(tmp / "critic")
    torch.save({"policy": models.policy_opt.state_dict(), "critic": models.critic_opt.state_dict()}, tmp / OPTIMIZERS)
    tmp.rename(done)
    for old in checkpoints.glob("checkpoint-*"):
        if old != done:
            shutil.rmtree(old)
    faults.hit("train.saved")  # crash tests: a kill right after a checkpoint


# --- one step --------------------------------------------------------------------------------------------


def step_rows(rows: Sequence[dict[str, Any]], step: int, params: RLParams) -> list[dict[str, Any]]:
    """The prompt rows of PPO step `step` (0-based), each samples_per_prompt times: consecutive slices of a
    shuffle of the rows, drawn anew each pass from (seed, pass), so a step's prompts follow from its number."""
    per = params.ppo.rollout_batch_size
    orders: dict[int, list[int]] = {}
    out = []
    for k in range(step * per, (step + 1) * per):
        epoch, i = divmod(k, len(rows))
        if epoch not in orders:
            shuffle = torch.Generator().manual_seed(params.seed + epoch)
            orders[epoch] = torch.randperm(len(rows), generator=shuffle).tolist()
        out += [rows[orders[epoch][i]]] * params.ppo.samples_per_prompt
    return out


def _ends(policy: Any, tokenizer: Any) -> set[int]:
    eos = policy.generation_config.eos_token_id
    return {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}


def sample(policy: Any, tokenizer: Any, prompts: list[str], step: int, params: RLParams) -> dict[str, list[list[int]]]:
    """Plain sampled completions (the same keys as `tool_completions`, every token the policy's own), each
    cut after its first end token; seeded by the step."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(len(p) for p in prompt_ids)
    pad_id = tokenizer.pad_token_id
    device = next(policy.parameters()).device
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompt_ids], device=device)  # left-padded to generate
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
    torch.manual_seed(params.seed + step)
    policy.eval()
    with torch.no_grad():
        out = policy.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            max_new_tokens=params.max_completion_length,
            pad_token_id=pad_id,
        )
    policy.train()
    ends = _ends(policy, tokenizer)
    completions = []
    for row in out[:, width:].tolist():
        completions.append(row[: next((i + 1 for i, t in enumerate(row) if t in ends), len(row))])
    return {"prompt_ids": prompt_ids, "completion_ids": completions, "env_mask": [[1] * len(c) for c in completions]}


def completion_texts(tokenizer: Any, completion_ids: list[list[int]], ends: set[int]) -> list[str]:
    """The text the reward grades: the completion without its end token, meta-action tokens kept (the
    in-rollout reflection measure looks for them)."""
    return [tokenizer.decode(c[:-1] if c and c[-1] in ends else c, skip_special_tokens=False) for c in completion_ids]


@dataclass
class Experience:
    """A step's rollouts as right-padded token rows and, on the prediction grid, what PPO learns from."""

    ids: torch.Tensor
    own: torch.Tensor
    old_logp: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def take(self, rows: torch.Tensor) -> Experience:
        """Those rows, cut after their last own token (causal: later columns change nothing before it)."""
        used = self.own[rows].any(dim=0).nonzero()
        width = int(used.max()) + 1 if len(used) else 1
        grid = (self.own, self.old_logp, self.old_values, self.advantages, self.returns)
        return Experience(self.ids[rows, : width + 1], *(t[rows, :width] for t in grid))


def own_grid(prompt_ids: list[list[int]], env_mask: list[list[int]], width: int) -> torch.Tensor:
    """1 where the prediction grid's next token is one the policy wrote (env_mask 1 in its completion)."""
    own = torch.zeros(len(prompt_ids), width)
    for b, (p, m) in enumerate(zip(prompt_ids, env_mask)):
        own[b, len(p) - 1 : len(p) - 1 + len(m)] = torch.tensor(m, dtype=own.dtype)
    return own


def make_experience(
    models: Models, made: dict[str, list[list[int]]], scores: list[float], pad_id: int, params: RLParams
) -> Experience:
    """Old log-probs and values by micro-batch, the token rewards, GAE and whitened advantages."""
    device = next(models.policy.parameters()).device
    ids = pad([p + c for p, c in zip(made["prompt_ids"], made["completion_ids"])], pad_id).to(device)
    own = own_grid(made["prompt_ids"], made["env_mask"], ids.shape[1] - 1).to(device)
    micro = params.ppo.micro_batch_size
    models.policy.eval()
    models.critic.eval()
    with torch.no_grad():
        logp = torch.cat([token_logprobs(models.policy, c, params.temperature) for c in ids.split(micro)])
        values = torch.cat([token_values(models.critic, c) for c in ids.split(micro)])
        kl = None
        if models.reference is not None:
            kl = logp - torch.cat([token_logprobs(models.reference, c, params.temperature) for c in ids.split(micro)])
    models.policy.train()
    models.critic.train()
    rewards = token_rewards(torch.tensor(scores, device=device), own, kl, params.beta)
    advantages, returns = gae(values, rewards, own, params.ppo.gamma, params.ppo.lambd)
    return Experience(ids, own, logp, values, whiten(advantages, own), returns)


def ppo_update(models: Models, exp: Experience, params: RLParams, step: int) -> None:
    """ppo_epochs passes over the step's rollouts in shuffled mini-batches: one optimizer step per model
    and mini-batch, its micro-batches' gradients accumulated to the mini-batch's token mean."""
    pp = params.ppo
    gen = torch.Generator().manual_seed(params.seed + step)
    for _ in range(pp.ppo_epochs):
        for mini in torch.randperm(exp.ids.shape[0], generator=gen).split(pp.mini_batch_size):
            tokens = exp.own[mini].sum().clamp(min=1)
            for rows in mini.split(pp.micro_batch_size):
                e = exp.take(rows.to(exp.ids.device))
                logp = token_logprobs(models.policy, e.ids, params.temperature)
                loss = policy_loss(logp, e.old_logp, e.advantages, e.own, pp.eps_clip, tokens)
                values = token_values(models.critic, e.ids)
                loss = loss + value_loss(values, e.old_values, e.returns, e.own, pp.value_clip, tokens)
                loss.backward()  # two models, two disjoint graphs: one backward fills both
            for model, opt in ((models.policy, models.policy_opt), (models.critic, models.critic_opt)):
                torch.nn.utils.clip_grad_norm_(model.parameters(), pp.max_grad_norm)
                opt.step()
                opt.zero_grad()


@dataclass(frozen=True)
class _StepState:
    global_step: int  # make_reward logs a rollout under global_step + 1, the step it trains


def ppo_step(
    models: Models,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    step: int,
    reward: Callable[..., list[float]],
    params: RLParams,
    fmt: FormatParams,
    sandbox: Sandbox | None,
) -> None:
    """Roll out the step's prompts, score them with Satori's reward (logged), and learn from them."""
    prompts = [r["prompt"] for r in rows]
    if sandbox is not None and params.tools:
        made = tool_completions(
            models.policy, tokenizer, prompts, step, sandbox, fmt, params, setup=restart_cells(rows, fmt)
        )
    else:
        made = sample(models.policy, tokenizer, prompts, step, params)
    texts = completion_texts(tokenizer, made["completion_ids"], _ends(models.policy, tokenizer))
    scores = reward(prompts, texts, trainer_state=_StepState(step), **{k: [r[k] for r in rows] for k in REWARD_COLUMNS})
    ppo_update(models, make_experience(models, made, scores, tokenizer.pad_token_id, params), params, step)


def train_ppo(
    model_path: str | Path,
    states: Sequence[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    grade: GradeFn,
    out_dir: str | Path,
    params: RLParams,
    fmt: FormatParams,
    sandbox: Sandbox | None = None,
    resume: bool = False,
    orm: str | Path | None = None,
) -> dict[str, Any]:
    """`tracemill.rl.train_rl` with PPO: the same arguments and result. The critic starts from the ORM
    folder `orm` (without one: the policy's backbone with a zero head)."""
    from transformers import AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        retain_freed_memory()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = prompt_rows(states, problems, tokenizer, fmt, params)
    checkpoints = Path(out_dir) / CHECKPOINTS
    orm_score = orm_scorer(params, orm)
    checkpoint = claim_checkpoints(checkpoints, run_fingerprint(model_path, rows, params, orm), resume)
    log = RolloutLog(checkpoints / "rollouts.jsonl")
    log.restart(step_of(checkpoint))
    reward = make_reward(problems, grade, params.reward, orm_score, log)
    models = load_models(model_path, orm, checkpoint, params, device)
    for step in range(step_of(checkpoint), params.max_steps):
        ppo_step(models, tokenizer, step_rows(rows, step, params), step, reward, params, fmt, sandbox)
        if (step + 1) % params.save_steps == 0:
            save_checkpoint(checkpoints, step + 1, models)
    models.policy.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return finish_run(out_dir, log, len(rows), params, step_of(checkpoint))
