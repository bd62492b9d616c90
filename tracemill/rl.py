"""Satori's self-improvement stage: RL from restart-and-explore states with TRL's GRPO trainer.

Each RAE state becomes a prompt (the problem as ChatML plus the state's prefix steps; a failed
state ends with <|reflect|>). The reward is the shared grader's verdict (the same function that
labels traces and scores evaluation) plus Satori's reflection bonus — a restart from a failed
state that ends correct earns it, a restart from a correct state that ends wrong loses it — and a
format penalty for a response without a final boxed answer.

With a sandbox, rollouts are tool-integrated like every other trace of the pipeline: the policy
being trained writes code, the sandbox runs it, the output block is fed back and generation goes
on (`tool_rollout`, TRL's rollout_func); the output tokens are masked from the policy loss
(env_mask). Without one, TRL samples plain completions.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemill import faults, records
from tracemill.errors import ParamsError
from tracemill.formats import FormatParams, last_boxed, render_prompt
from tracemill.params import above, at_least, bounded

# grade(problem_row, response_text) -> correct?
GradeFn = Callable[[dict[str, Any], str], bool]


@dataclass(frozen=True)
class RewardParams:
    correct: float = bounded(default=1.0)  # rule-based reward for a correct final answer
    wrong: float = bounded(default=-1.0)
    reflection_bonus: float = at_least(0, default=0.5)  # Satori: recovering from a failed restart state (and its mirror penalty)
    format_penalty: float = bounded(hi=0, default=-0.5)  # added when there is no \boxed{} final answer

    def check(self) -> None:
        if self.correct <= self.wrong:
            raise ParamsError(f"params 'satori.rl.reward.correct' = {self.correct} must be above "
                              f"'satori.rl.reward.wrong' = {self.wrong}, or RL learns to answer wrong")


@dataclass(frozen=True)
class RLParams:
    learning_rate: float = above(0, default=1e-6)  # Satori PPO actor lr 2e-7..1e-6; embedded runs override
    max_steps: int = at_least(1, default=20)
    per_device_train_batch_size: int = at_least(1, default=8)
    num_generations: int = at_least(2, default=4)  # GRPO group size per state; its advantages need two or more
    max_completion_length: int = at_least(1, default=128)
    temperature: float = above(0, default=0.6)  # GRPO samples its group
    top_p: float = bounded(0, 1, lo_open=True, default=0.95)
    beta: float = at_least(0, default=0.0)  # KL coefficient to the reference policy
    max_states: int = at_least(1, default=256)
    eval_fraction: float = bounded(0, 1, hi_open=True, default=0.1)
    seed: int = at_least(0, default=0)
    reward: RewardParams = field(default_factory=RewardParams)
    deepspeed: str | None = None  # a ZeRO config path on GPU
    tools: bool = True  # rollouts run their code in the sandbox (the policy's traces are tool-integrated)
    max_tool_calls: int = at_least(0, default=6)
    # sandbox-output tokens a completion may carry beyond the model's own max_completion_length (they are
    # masked from the loss but fill the batch); None: as many as max_completion_length
    max_tool_output_tokens: int | None = at_least(0, default=None)
    save_steps: int = at_least(1, default=50)  # GRPO steps between checkpoints; a killed run resumes from the last one

    def check(self) -> None:
        if self.per_device_train_batch_size % self.num_generations:
            raise ParamsError(
                f"params 'satori.rl.per_device_train_batch_size' = {self.per_device_train_batch_size} must be a multiple of "
                f"'satori.rl.num_generations' = {self.num_generations} (GRPO groups complete per batch)"
            )


def state_prompt(state: dict[str, Any], problem: dict[str, Any], tokenizer: Any, fmt: FormatParams) -> str:
    return render_prompt(problem["question"], tokenizer, fmt, style="coat") + "".join(state["prefix_steps"])


def dataset_rows(states: Sequence[dict[str, Any]], problems: dict[str, dict[str, Any]], tokenizer: Any, fmt: FormatParams) -> list[dict[str, Any]]:
    rows = []
    for s in states:
        problem = problems.get(s["problem_id"])
        if problem is None or problem["domain"] != "math":
            continue
        rows.append({"prompt": state_prompt(s, problem, tokenizer, fmt), "problem_id": s["problem_id"], "outcome": s["outcome"]})
    return rows


def make_reward(problems: dict[str, dict[str, Any]], grade: GradeFn, rp: RewardParams, fmt: FormatParams,
                log: list[float] | None = None) -> Callable[..., list[float]]:
    """TRL reward function; every reward it hands out is also appended to `log` when one is given."""

    def satori_reward(prompts: list[str], completions: list[str], problem_id: list[str], outcome: list[str], **_: Any) -> list[float]:
        rewards = []
        for completion, pid, start in zip(completions, problem_id, outcome):
            ok = grade(problems[pid], completion)
            r = rp.correct if ok else rp.wrong
            if start == "failed" and ok:
                r += rp.reflection_bonus
            elif start == "correct" and not ok:
                r -= rp.reflection_bonus
            if last_boxed(completion, fmt) is None:
                r += rp.format_penalty
            rewards.append(r)
        if log is not None:
            log.extend(rewards)
        return rewards

    return satori_reward


def tool_rollout(sandbox: Any, fmt: FormatParams, params: RLParams, llm: Any = None) -> Callable[[list[str], Any], dict[str, Any]]:
    """TRL rollout_func: one tool-integrated completion per prompt, generated with the trainer's current
    weights through the transformers backend and the sandbox; output-block tokens get env_mask 0."""
    from tracemill.llm import LLMParams
    from tracemill.llm.hf import TransformersBackend
    from tracemill.tir import LoopLimits, Sampling, TraceJob, run_traces

    limits = LoopLimits(max_tool_calls=params.max_tool_calls)

    def rollout(prompts: list[str], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        was_training = model.training
        model.eval()
        backend = TransformersBackend.from_model(model, tokenizer, llm or LLMParams())
        step = trainer.state.global_step
        jobs = [
            TraceJob(key=str(i), prompt=p, max_turn_tokens_total=params.max_completion_length,
                     sampling=Sampling(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_completion_length,
                                       seed=params.seed + 100_003 * step + i))
            for i, p in enumerate(prompts)
        ]
        try:
            results = run_traces(backend, sandbox, jobs, fmt, limits)
        finally:
            model.train(was_training)
        end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        extra = params.max_completion_length if params.max_tool_output_tokens is None else params.max_tool_output_tokens
        keep = params.max_completion_length + extra
        prompt_ids, completion_ids, env_mask = [], [], []
        for p, r in zip(prompts, results):
            ids, mask = [], []
            for seg in r.segments:
                seg_ids = tokenizer(seg["text"], add_special_tokens=False)["input_ids"]
                ids += seg_ids
                mask += [int(seg["kind"] != "output")] * len(seg_ids)
            if r.finish_reason == "stop":
                ids.append(end)
                mask.append(1)
            prompt_ids.append(tokenizer(p, add_special_tokens=False)["input_ids"])
            completion_ids.append(ids[:keep])
            env_mask.append(mask[:keep])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "env_mask": env_mask}

    return rollout


def train_rl(
    model_path: str | Path,
    states: Sequence[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    grade: GradeFn,
    out_dir: str | Path,
    params: RLParams,
    fmt: FormatParams,
    sandbox: Any = None,
    resume: bool = False,
) -> dict[str, Any]:
    """GRPO from RAE states; saves the policy to out_dir and returns the reward curve per step.
    With `sandbox` and params.tools, rollouts run their code in it (`tool_rollout`). Checkpoints go to
    out_dir/checkpoints every params.save_steps; with `resume`, a run with the same model, states and
    params continues from the last one (another run's checkpoints are cleared first)."""
    import os

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from tracemill.train.hf import resume_point, step_of
    from tracemill.train.launch import retain_freed_memory

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; tool_rollout is tested here
    from trl import GRPOConfig, GRPOTrainer

    if not _cuda():
        retain_freed_memory()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    rows = dataset_rows(states[: params.max_states], problems, tokenizer, fmt)
    if not rows:
        raise ParamsError("rl: no math restart states to train on — check the rae_states stage output")

    class Failpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 — transformers' signature
            faults.hit("train.saved")  # crash tests: a kill right after a checkpoint

    config = GRPOConfig(
        output_dir=str(Path(out_dir) / "checkpoints"),
        learning_rate=params.learning_rate,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_train_batch_size,
        num_generations=params.num_generations,
        max_completion_length=params.max_completion_length,
        temperature=params.temperature,
        top_p=params.top_p,
        beta=params.beta,
        logging_steps=1,
        save_strategy="steps",
        save_steps=params.save_steps,
        report_to="none",
        seed=params.seed,
        use_cpu=not _cuda(),
        deepspeed=params.deepspeed,
        disable_tqdm=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=make_reward(problems, grade, params.reward, fmt),
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Failpoint()],
        rollout_func=tool_rollout(sandbox, fmt, params) if sandbox is not None and params.tools else None,
    )
    run_id = records.content_id(str(Path(model_path).resolve()), (Path(model_path) / "config.json").read_text(encoding="utf-8"),
                                [r["prompt"] for r in rows], dataclasses.asdict(params))
    checkpoint = resume_point(trainer, run_id, resume)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    shutil.rmtree(Path(out_dir) / "checkpoints", ignore_errors=True)  # the folder is complete; no optimizer state in DVC
    # The whole run's history, the steps before a resume included (restored with the checkpoint).
    curve = [{"step": e["step"], "reward": float(e["reward"]), "reward_std": float(e.get("reward_std", 0.0))}
             for e in trainer.state.log_history if "reward" in e]
    return {"states": len(rows), "steps": params.max_steps, "curve": curve, "reward_first": curve[0]["reward"] if curve else None,
            "reward_last": curve[-1]["reward"] if curve else None, "resumed_from_step": step_of(checkpoint)}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
