"""Satori's self-improvement stage: RL from restart-and-explore states with TRL's GRPO trainer, or with
Satori's own PPO (`algorithm: ppo`, tracemill/ppo.py) on the same prompts, rollouts and reward.

Each RAE state becomes a prompt (the problem as ChatML plus the state's prefix steps; a state cut
from a sampled trajectory ends with <|reflect|>). The reward is Satori's, as its code computes it
(`satori_reward`): the rule reward from the shared grader's verdict (the same function that labels
traces and scores evaluation), plus the preference bonus sigmoid(ORM score) from the outcome reward
model, plus the reflection bonus on reflect states only — a restart from a wrong trajectory that ends
right earns it, a restart from a right one that ends wrong loses it. Every rollout's components are
logged (`rollouts`), so the reward curve can be taken apart and the self-correction and break rates
read off: per restart state, and within a rollout (an answer given before the rollout's own first
<|reflect|> or <|explore|>, graded against its final one — the measure that bare prompts allow).

With a sandbox, rollouts are tool-integrated like every other trace of the pipeline: the policy
being trained writes code, the sandbox runs it, the output block is fed back and generation goes
on (`tool_rollout`, TRL's rollout_func); the output tokens are masked from the policy loss
(env_mask). Without one, TRL samples plain completions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tracemill import faults, records
from tracemill.errors import ParamsError
from tracemill.formats import META_ACTIONS, FormatParams, ran_cells, render_prompt
from tracemill.llm import LLMParams
from tracemill.llm.hf import TransformersBackend
from tracemill.params import above, at_least, bounded, choices
from tracemill.sandbox.base import Sandbox
from tracemill.tir import LoopLimits, Sampling, TraceJob, run_traces
from tracemill.train.launch import retain_freed_memory

# grade(problem_row, response_text) -> correct?
GradeFn = Callable[[dict[str, Any], str], bool]


@dataclass(frozen=True)
class RewardParams:
    # Rule reward: Satori's code shapes the verdict to verdict - 1 (0 right, -1 wrong)
    correct: float = bounded(default=0.0)
    wrong: float = bounded(default=-1.0)
    reflection_bonus: float = at_least(0, default=0.5)  # Satori's bonus_scale: +/- on reflect states only
    preference_bonus: bool = True  # add sigmoid(ORM score) (Satori's reward model); false: rule + reflection only

    def check(self) -> None:
        if self.correct <= self.wrong:
            raise ParamsError(
                f"params 'satori.rl.reward.correct' = {self.correct} must be above "
                f"'satori.rl.reward.wrong' = {self.wrong}, or RL learns to answer wrong"
            )


@dataclass(frozen=True)
class PPOParams:
    """PPO's own knobs (tracemill/ppo.py). Defaults: Satori's examples/satori/train.sh, else the OpenRLHF
    defaults of its openrlhf/cli/train_ppo_ray.py (Satori's code is an OpenRLHF fork)."""

    critic_learning_rate: float = above(0, default=5e-6)  # train.sh --critic_learning_rate
    samples_per_prompt: int = at_least(1, default=1)  # train_ppo_ray.py --n_samples_per_prompt
    rollout_batch_size: int = at_least(1, default=1024)  # prompts per PPO step; train.sh --rollout_batch_size
    mini_batch_size: int = at_least(1, default=128)  # rollouts per optimizer step; train.sh --train_batch_size
    micro_batch_size: int = at_least(1, default=1)  # rollouts per forward pass; train.sh --micro_train_batch_size
    ppo_epochs: int = at_least(1, default=1)  # passes over a step's rollouts; train.sh --max_epochs
    gamma: float = bounded(0, 1, default=1.0)  # GAE discount; train_ppo_ray.py --gamma
    lambd: float = bounded(0, 1, default=0.95)  # GAE lambda; train_ppo_ray.py --lambd
    eps_clip: float = above(0, default=0.2)  # policy ratio clip; train_ppo_ray.py --eps_clip
    value_clip: float = above(0, default=0.2)  # value clip around the rollout's values; train_ppo_ray.py --value_clip
    max_grad_norm: float = above(0, default=1.0)  # train_ppo_ray.py --max_norm
    adam_betas: list[float] = bounded(
        0, 1, hi_open=True, default_factory=lambda: [0.9, 0.95]
    )  # train_ppo_ray.py --adam_betas

    def check(self) -> None:
        if len(self.adam_betas) != 2:
            raise ParamsError(
                f"params 'satori.rl.ppo.adam_betas' = {self.adam_betas} must be two numbers (beta1, beta2)"
            )
        if self.mini_batch_size % self.micro_batch_size:
            raise ParamsError(
                f"params 'satori.rl.ppo.mini_batch_size' = {self.mini_batch_size} must be a multiple of "
                f"'satori.rl.ppo.micro_batch_size' = {self.micro_batch_size}"
            )
        if (self.rollout_batch_size * self.samples_per_prompt) % self.mini_batch_size:
            raise ParamsError(
                "params 'satori.rl.ppo.rollout_batch_size' x 'samples_per_prompt' = "
                f"{self.rollout_batch_size * self.samples_per_prompt} "
                f"rollouts per step must be a multiple of 'satori.rl.ppo.mini_batch_size' = {self.mini_batch_size}"
            )


@dataclass(frozen=True)
class RLParams:
    # grpo: TRL's GRPOTrainer, which learns from small groups on the embedded run's tiny policy; ppo: Satori's
    # own algorithm (tracemill/ppo.py: one sample per prompt, a critic from the ORM), the GPU overlay's choice
    algorithm: str = choices("grpo", "ppo", default="grpo")
    learning_rate: float = above(0, default=1e-6)  # Satori PPO actor lr 2e-7..1e-6; embedded runs override
    max_steps: int = at_least(1, default=20)
    per_device_train_batch_size: int = at_least(1, default=8)
    num_generations: int = at_least(2, default=4)  # GRPO group size per state; its advantages need two or more
    max_completion_length: int = at_least(1, default=128)
    temperature: float = above(0, default=0.6)  # GRPO samples its group
    top_p: float = bounded(0, 1, lo_open=True, default=0.95)
    beta: float = at_least(
        0, default=0.0
    )  # KL coefficient to the reference policy (GRPO and PPO; Satori's init_kl_coef 0)
    max_states: int = at_least(1, default=256)
    seed: int = at_least(0, default=0)
    reward: RewardParams = field(default_factory=RewardParams)
    deepspeed: str | None = None  # a ZeRO config path on GPU
    tools: bool = True  # rollouts run their code in the sandbox (the policy's traces are tool-integrated)
    max_tool_calls: int = at_least(0, default=6)
    # sandbox-output tokens a completion may carry beyond the model's own max_completion_length (they are
    # masked from the loss but fill the batch); None: as many as max_completion_length
    max_tool_output_tokens: int | None = at_least(0, default=None)
    save_steps: int = at_least(1, default=50)  # RL steps between checkpoints; a killed run resumes from the last one
    ppo: PPOParams = field(default_factory=PPOParams)  # algorithm ppo only

    def check(self) -> None:
        if self.algorithm == "ppo" and self.deepspeed:
            raise ParamsError(
                f"params 'satori.rl.deepspeed' = '{self.deepspeed}' but PPO (tracemill/ppo.py) trains in one "
                "process without DeepSpeed — set it to null, or 'satori.rl.algorithm' to grpo"
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ParamsError(
                f"params 'satori.rl.per_device_train_batch_size' = {self.per_device_train_batch_size} "
                "must be a multiple of "
                f"'satori.rl.num_generations' = {self.num_generations} (GRPO groups complete per batch)"
            )


def state_prompt(state: dict[str, Any], problem: dict[str, Any], tokenizer: Any, fmt: FormatParams) -> str:
    return render_prompt(problem["question"], tokenizer, fmt, style="coat") + "".join(state["prefix_steps"])


def dataset_rows(
    states: Sequence[dict[str, Any]], problems: dict[str, dict[str, Any]], tokenizer: Any, fmt: FormatParams
) -> list[dict[str, Any]]:
    rows = []
    for s in states:
        problem = problems.get(s["problem_id"])
        if problem is None or problem["domain"] != "math":
            continue
        rows.append(
            {
                "prompt": state_prompt(s, problem, tokenizer, fmt),
                "problem_id": s["problem_id"],
                "state_id": s["state_id"],
                "outcome": s["outcome"],
                "prefix": "".join(s["prefix_steps"]),
            }
        )
    return rows


def answer_before_reflection(completion: str) -> str | None:
    """The completion up to its first <|reflect|> or <|explore|> when that part already gives an answer,
    else None (nothing to revise)."""
    from tracemill.grading.extract import extract_answer  # the grading package loads mpmath: only a reward pays for it

    cut = min((i for i in (completion.find(t) for t in META_ACTIONS[1:]) if i >= 0), default=-1)
    return (
        completion[:cut]
        if cut > 0 and extract_answer(completion[:cut], fallback_last_number=False) is not None
        else None
    )


def satori_reward(correct: bool, start: str, preference: float, rp: RewardParams) -> dict[str, float]:
    """Satori's reward of one rollout and its parts. `start` is the restart state's outcome: 'failed'
    (cut from a wrong trajectory, ends with <|reflect|>), 'correct' (cut from a right one, ends with
    <|reflect|>) or 'bare' (the problem alone: no reflection bonus either way). `preference` is
    sigmoid(ORM score), 0 without an ORM."""
    rule = rp.correct if correct else rp.wrong
    reflection = 0.0
    if start == "failed" and correct:
        reflection = rp.reflection_bonus  # a wrong start fixed
    elif start == "correct" and not correct:
        reflection = -rp.reflection_bonus  # a right start broken
    return {"rule": rule, "preference": preference, "reflection": reflection, "reward": rule + preference + reflection}


# orm_score(texts) -> raw ORM scores of prompt + completion texts
OrmFn = Callable[[list[str]], list[float]]


def make_reward(
    problems: dict[str, dict[str, Any]],
    grade: GradeFn,
    rp: RewardParams,
    orm_score: OrmFn | None = None,
    log: Callable[[list[dict[str, Any]]], None] | None = None,
    decode: Callable[[Sequence[int]], str] | None = None,
) -> Callable[..., list[float]]:
    """TRL reward function computing `satori_reward` per completion; `log` receives one row per rollout
    (step, state, start, verdict and each reward part) when given. With `decode`, a completion is read
    from its token ids (TRL's `completion_ids`) instead of TRL's text, which has lost the special tokens."""

    def reward(
        prompts: list[str],
        completions: list[str],
        problem_id: list[str],
        state_id: list[str],
        outcome: list[str],
        prefix: list[str] | None = None,
        trainer_state: Any = None,
        completion_ids: list[list[int]] | None = None,
        **_: Any,
    ) -> list[float]:
        if decode is not None and completion_ids is not None:
            completions = [decode(ids) for ids in completion_ids]
        scores = orm_score([p + c for p, c in zip(prompts, completions)]) if orm_score else [None] * len(completions)
        prefixes = prefix or [""] * len(completions)
        rows = []
        for completion, pid, sid, start, score, before in zip(
            completions, problem_id, state_id, outcome, scores, prefixes
        ):
            # graded on the restart state's steps and the rollout together, as Satori grades the tail of the
            # whole sequence: a rollout that reflects on a boxed answer and lets it stand keeps that answer
            ok = grade(problems[pid], before + completion)
            first = answer_before_reflection(completion)
            parts = satori_reward(ok, start, 0.0 if score is None else 1.0 / (1.0 + math.exp(-score)), rp)
            # TRL scores the rollouts of optimizer step global_step + 1 before taking it
            step = trainer_state.global_step + 1 if trainer_state is not None else 0
            rows.append(
                {
                    "step": step,
                    "state_id": sid,
                    "problem_id": pid,
                    "start": start,
                    "correct": ok,
                    "correct_before": None if first is None else grade(problems[pid], first),
                    **parts,
                }
            )
        if log is not None:
            log(rows)
        return [r["reward"] for r in rows]

    return reward


def keep_special_tokens(tokenizer: Any) -> Callable[[Sequence[int]], str]:
    """Decode a completion keeping <|reflect|> and <|explore|> (TRL's own text drops every special token,
    so neither the reflection measures nor the ORM would see them), less end-of-sequence and padding."""
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return lambda ids: tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)


def _rate(rows: Sequence[dict[str, Any]], key: str, was: Any, correct: bool) -> float | None:
    mine = [r for r in rows if r.get(key) == was]
    return sum(r["correct"] == correct for r in mine) / len(mine) if mine else None


def reflection_rates(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """On reflect states: the self-correction rate (a wrong start that ends right) and the break rate
    (a right start that ends wrong). Within rollouts that answered before their own first reflection:
    the same two rates with that answer as the start. Each with the rollout count it rests on."""
    return {
        "self_correction_rate": _rate(rows, "start", "failed", True),
        "break_rate": _rate(rows, "start", "correct", False),
        "rollouts_from_failed": sum(r["start"] == "failed" for r in rows),
        "rollouts_from_correct": sum(r["start"] == "correct" for r in rows),
        "in_rollout_self_correction_rate": _rate(rows, "correct_before", False, True),
        "in_rollout_break_rate": _rate(rows, "correct_before", True, False),
        "rollouts_revising_an_answer": sum(r.get("correct_before") is not None for r in rows),
    }


CURVE_COLUMNS = ["step", "reward", "reward_std", "rule", "preference", "reflection", "accuracy"]


def reward_curve(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per optimizer step: the mean reward (and its spread), the mean of each part, and the accuracy."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    return [
        {
            "step": step,
            "reward": statistics.fmean(r["reward"] for r in rs),
            "reward_std": statistics.pstdev(r["reward"] for r in rs),
            **{k: statistics.fmean(r[k] for r in rs) for k in ("rule", "preference", "reflection")},
            "accuracy": statistics.fmean(float(r["correct"]) for r in rs),
        }
        for step, rs in sorted(by_step.items())
    ]


ROLLOUT_COLUMNS = [
    "step",
    "state_id",
    "problem_id",
    "start",
    "correct",
    "correct_before",
    "rule",
    "preference",
    "reflection",
    "reward",
]


class RolloutLog:
    """Every rollout's reward parts as JSON lines in the checkpoints folder, so a resumed run keeps the
    rollouts of the steps its checkpoint holds and writes the later steps again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def restart(self, keep_through_step: int) -> None:
        """Drop the rollouts of steps after the checkpoint the run resumes from (all of them on a fresh run)."""
        kept = [r for r in self.rows() if r["step"] <= keep_through_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def tool_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    step: int,
    sandbox: Sandbox,
    fmt: FormatParams,
    params: RLParams,
    llm: LLMParams | None = None,
    setup: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, list[list[int]]]:
    """One tool-integrated completion per prompt, generated with `model`'s current weights through the
    transformers backend and the sandbox: prompt_ids, completion_ids and env_mask (output-block tokens 0),
    seeded by the RL step so a resumed run samples what the killed one would have. `setup` maps a prompt
    to the cells its session runs first (`restart_cells`: a restart state's code, so the rollout's code
    finds the variables the state's steps defined)."""
    limits = LoopLimits(max_tool_calls=params.max_tool_calls)
    was_training = model.training
    model.eval()
    backend = TransformersBackend.from_model(model, tokenizer, llm or LLMParams())
    jobs = [
        TraceJob(
            key=str(i),
            prompt=p,
            max_turn_tokens_total=params.max_completion_length,
            sampling=Sampling(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_completion_length,
                seed=params.seed + 100_003 * step + i,
            ),
            setup_cells=(setup or {}).get(p, ()),
        )
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
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "env_mask": env_mask}


def restart_cells(rows: Sequence[dict[str, Any]], fmt: FormatParams) -> dict[str, tuple[str, ...]]:
    """Each RL prompt's cells to re-run before its rollout: the code its restart state's prefix ran."""
    return {r["prompt"]: ran_cells(r["prefix"], fmt) for r in rows if r["prefix"]}


def tool_rollout(
    sandbox: Sandbox,
    fmt: FormatParams,
    params: RLParams,
    llm: LLMParams | None = None,
    setup: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[list[str], Any], dict[str, Any]]:
    """TRL rollout_func: `tool_completions` with the trainer's current weights."""

    def rollout(prompts: list[str], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        return {
            **tool_completions(
                model, trainer.processing_class, prompts, trainer.state.global_step, sandbox, fmt, params, llm, setup
            ),
            "logprobs": None,
        }

    return rollout


def run_fingerprint(
    model_path: str | Path, rows: Sequence[dict[str, Any]], params: RLParams, orm: str | Path | None
) -> str:
    """What defines an RL run: checkpoints of another model, prompts, params or ORM are never resumed."""
    return records.content_id(
        str(Path(model_path).resolve()),
        (Path(model_path) / "config.json").read_text(encoding="utf-8"),
        [r["prompt"] for r in rows],
        dataclasses.asdict(params),
        str(Path(orm).resolve()) if orm else None,
    )


def train_rl(
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
    """GRPO from RAE states with Satori's reward (the preference bonus from the ORM folder `orm`, which
    params.reward.preference_bonus requires); saves the policy to out_dir and returns the reward curve
    per step, every rollout's reward parts and the reflection rates.
    With `sandbox` and params.tools, rollouts run their code in it (`tool_rollout`). Checkpoints go to
    out_dir/checkpoints every params.save_steps; with `resume`, a run with the same model, states and
    params continues from the last one (another run's checkpoints are cleared first).
    With params.algorithm ppo, Satori's PPO (`tracemill.ppo.train_ppo`) runs instead, with the same result."""
    if params.algorithm == "ppo":
        from tracemill.ppo import train_ppo

        return train_ppo(
            model_path, states, problems, grade, out_dir, params, fmt, sandbox=sandbox, resume=resume, orm=orm
        )
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from tracemill.train.hf import resume_point, step_of

    os.environ.setdefault(
        "TRL_EXPERIMENTAL_SILENCE", "1"
    )  # rollout_func is TRL-experimental; tool_rollout is tested here
    from trl import GRPOConfig, GRPOTrainer

    if not _cuda():
        retain_freed_memory()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    rows = prompt_rows(states, problems, tokenizer, fmt, params)
    log = RolloutLog(Path(out_dir) / "checkpoints" / "rollouts.jsonl")
    orm_score = orm_scorer(params, orm)

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
        # TRL annotates a reward function as returning list[float | None], and a list is invariant
        reward_funcs=make_reward(problems, grade, params.reward, orm_score, log, decode=keep_special_tokens(tokenizer)),  # type: ignore[arg-type]
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Failpoint()],
        rollout_func=tool_rollout(sandbox, fmt, params, setup=restart_cells(rows, fmt))
        if sandbox is not None and params.tools
        else None,
    )
    checkpoint = resume_point(trainer, run_fingerprint(model_path, rows, params, orm if orm_score else None), resume)
    log.restart(step_of(checkpoint))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return finish_run(out_dir, log, len(rows), params, step_of(checkpoint))


def prompt_rows(
    states: Sequence[dict[str, Any]],
    problems: dict[str, dict[str, Any]],
    tokenizer: Any,
    fmt: FormatParams,
    params: RLParams,
) -> list[dict[str, Any]]:
    """The RL prompts: the first params.max_states states that restart a math problem."""
    rows = dataset_rows(states[: params.max_states], problems, tokenizer, fmt)
    if not rows:
        raise ParamsError("rl: no math restart states to train on — check the rae_states stage output")
    return rows


def orm_scorer(params: RLParams, orm: str | Path | None) -> OrmFn | None:
    """The ORM's raw score of whole texts (prompt + completion) for the preference bonus; None without it."""
    from tracemill.train.ppm import load_ppm

    if not params.reward.preference_bonus:
        return None
    if orm is None:
        raise ParamsError(
            "rl: params 'satori.rl.reward.preference_bonus' is true but no ORM was given — run the orm stage "
            "or set it to false"
        )
    return partial(load_ppm(orm).score, "")


def finish_run(
    out_dir: str | Path, log: RolloutLog, states: int, params: RLParams, resumed_from_step: int
) -> dict[str, Any]:
    """The result of a finished run (its policy saved to out_dir): the whole run's rollouts — the steps
    before a resume included, kept with the checkpoint — their curve and rates; the checkpoints are dropped,
    since the folder is complete and DVC should not version optimizer state."""
    rollouts = log.rows()
    shutil.rmtree(Path(out_dir) / "checkpoints", ignore_errors=True)
    curve = reward_curve(rollouts)
    return {
        "states": states,
        "steps": params.max_steps,
        "curve": curve,
        "rollouts": rollouts,
        **reflection_rates(rollouts),
        "reward_first": curve[0]["reward"] if curve else None,
        "reward_last": curve[-1]["reward"] if curve else None,
        "resumed_from_step": resumed_from_step,
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
