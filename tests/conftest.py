"""Shared fixtures: a temporary copy of the repository for real `dvc repro` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Small thread pools: CI has 2 cores and tests run alongside their own worker processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def stage_cmd(
    name: str, key: int | str | None = None, item: dict[str, str] | None = None, root: Path = ROOT
) -> list[str]:
    """The command dvc.yaml runs for stage `name` (for a foreach stage, `name@key` with its `item`), in
    words: `python -m stages.X NAME=PATH ...`; `[2:]` of it is the sys.argv of an in-process run."""
    import yaml

    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][name]
    cmd = stage["do"]["cmd"] if key is not None else stage["cmd"]
    for var, value in {"key": key, **{f"item.{k}": v for k, v in (item or {}).items()}}.items():
        cmd = cmd.replace("${" + var + "}", str(value))
    return cmd.split()


def run(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The tracked project files in a fresh git + DVC repo, as a clone would have them."""
    return copy_repo(tmp_path / "repo")


def copy_repo(dest: Path) -> Path:
    """Copy the project's tracked (and untracked, not ignored) files to dest and commit them there."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


# The tiny RL world of the GRPO and PPO tests: one problem, an exact grader, a tiny policy, restart states.
RL_PROBLEM = {"problem_id": "p1", "question": "What is 6 times 7?", "answer": "42", "domain": "math"}


def grade_exact(problem: dict, response: str) -> bool:
    from tracemill.formats import FormatParams, last_boxed

    return last_boxed(response, FormatParams()) == problem["answer"]


def tiny_policy(texts: list[str]):
    """A randomly initialised tiny Qwen2 policy and its tokenizer trained on `texts`."""
    from tracemill import tiny

    tok = tiny.make_tokenizer(texts, 300)
    return tiny.make_model(
        tok, tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)
    ), tok


def fit_lm(model, batch, labels, steps: int, lr: float = 1e-2) -> float:
    """`steps` AdamW steps of the LM loss on one batch; returns the last loss."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.item()


def restart_state(state_id: str, outcome: str = "correct", prefix_steps: list[str] | None = None) -> dict:
    """A rae_states row of RL_PROBLEM; a state cut from a sample ends with <|reflect|>."""
    steps = prefix_steps or []
    return {
        "state_id": state_id,
        "problem_id": "p1",
        "prefix_steps": steps,
        "node_id": "n",
        "q": 0.0,
        "outcome": outcome,
        "ends_with_reflect": bool(steps) and steps[-1] == "<|reflect|>",
        "metadata": None,
    }


def write_problems_and_policy(root: Path, syn, policy: str) -> None:
    """The synthetic problems of `syn` as a finished `problems` table under root/data/problems, and a tiny
    policy bootstrapped on them (60 steps) in root/`policy`: what a stage test reads instead of the pipeline's."""
    from tracemill import store
    from tracemill.bootstrap import BootstrapParams, corpus, train
    from tracemill.formats import FormatParams
    from tracemill.synthetic import synthetic_problems

    bp = BootstrapParams(
        vocab_size=300,
        hidden_size=48,
        intermediate_size=96,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_steps=60,
        warmup_steps=10,
        learning_rate=1e-2,
        steps_fraction=0.0,
        log_every=10,
    )
    problems = synthetic_problems(syn)
    out = store.StageOutput(root / "data/problems", ["problems"], "test")
    out.write_shard(0, {"problems": problems})
    out.finalize([0])
    train(corpus(problems, FormatParams(), bp), root / policy, bp)
