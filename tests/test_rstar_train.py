"""`stages.rstar_train`: the policy and PPM of an rStar-Math round, trained from a round's real tables.

The round's tables come from real search trees (tracemill.rstar.tree) through the real extraction and
store, so they are what `stages.rstar_search` writes; each run passes the paths dvc.yaml's cmd passes; the base
policy is a tiny random Qwen2 model. Round 1 has two correct trajectories and three pairs per problem; round 2
only wrong answers, so nothing to learn.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT, stage_cmd

from tracemill import records, stage, store, tiny
from tracemill.formats import FormatParams, boxed, render_prompt
from tracemill.rstar import RStarParams, extract
from tracemill.rstar.extract import prefix_text
from tracemill.rstar.tree import Node, SearchTree
from tracemill.train import IGNORE_INDEX, build_labels

FMT = FormatParams(step_system_prompt="Steps.")  # a short prompt keeps the sequences, and the training, small
MP = RStarParams(
    rounds=2, top_k=2, pair_min_edit_distance=0
)  # "Add them." vs "Multiply them." are closer than 20 characters
QUESTIONS = [(3, 4), (5, 8), (6, 9), (7, 2), (4, 4), (9, 1)]
TINY = tiny.TinyConfig(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
SAVE_STEPS = 2  # the policy checkpoints mid-run, so a killed run has something to resume from
TRAIN = {
    "learning_rate": 3.0e-3,
    "batch_size": 4,
    "micro_batch_size": 4,
    "epochs": 2,
    "max_length": 256,
    "warmup_ratio": 0.0,
    "save_steps": 1000,
    "logging_steps": 1,
}
PARAMS = {
    "format": {"step_system_prompt": FMT.step_system_prompt},
    "rstar": {"rounds": MP.rounds, "top_k": MP.top_k},
    "train": {
        "rstar_policy": {**TRAIN, "prompt_style": "steps", "heldout_fraction": 0.0, "save_steps": SAVE_STEPS},
        "rstar_ppm": {**TRAIN, "heldout_fraction": 0.25},
    },
}


def problem(a: int, b: int) -> dict[str, Any]:
    return {
        "problem_id": records.content_id("p", a, b),
        "source": "test",
        "split": "train",
        "domain": "math",
        "question": f"{a} and {b} more?",
        "answer": str(a + b),
    }


def answer(tree: SearchTree, parent: Node, text: str, value: int, correct: bool, rollouts: int) -> Node:
    leaf = tree.add_child(parent, text, None, terminal=True, answer=str(value), correct=correct)
    for _ in range(rollouts):
        tree.backup(leaf)
    return leaf


def searched_tree(p: dict[str, Any], a: int, b: int, round_: int) -> SearchTree:
    """Round 1: adding (two right endings), multiplying (wrong) and code that fails; round 2: only the wrong one."""
    tree = SearchTree.new(p["problem_id"], round_, render_prompt(p["question"], None, FMT, "steps"))
    mul = tree.add_child(tree.root, "Multiply them.", f"print({a} * {b})", exec_output=str(a * b))
    answer(tree, mul, f"So the answer is {boxed(str(a * b), FMT)}.", a * b, False, 2)
    if round_ == 1:
        add = tree.add_child(tree.root, "Add them.", f"print({a} + {b})", exec_output=str(a + b))
        answer(tree, add, f"So the answer is {boxed(str(a + b), FMT)}.", a + b, True, 2)
        answer(tree, add, f"The answer is {boxed(str(a + b), FMT)}.", a + b, True, 1)
        tree.add_child(tree.root, "Sum.", "print(n + m)", exec_output="NameError", exec_ok=False)
    return tree


def write_round(root: Path, trees: list[SearchTree]) -> dict[str, list[dict[str, Any]]]:
    tables = extract(trees, FMT, MP)
    out = store.StageOutput(
        root / f"data/rstar_search/round={trees[0].round}", ["nodes", "trajectories", "pairs", "rejected"], "test"
    )
    out.write_shard(0, tables)
    out.finalize([0])
    return tables


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project folder: problems, rounds 1 and 2 of search output, the base policy and a small params file."""
    return build_project(tmp_path_factory.mktemp("project"), PARAMS)


def build_project(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Problems, rounds 1 and 2 of search output, a tiny random base policy and params.test.yaml under root."""
    problems = [problem(a, b) for a, b in QUESTIONS]
    out = store.StageOutput(root / "data/problems", ["problems"], "test")
    out.write_shard(0, {"problems": problems})
    out.finalize([0])
    trees = {r: [searched_tree(p, a, b, r) for p, (a, b) in zip(problems, QUESTIONS)] for r in (1, 2)}
    tables = {r: write_round(root, trees[r]) for r in (1, 2)}
    texts = [prefix_text(t, n, FMT) for t in trees[1] for n in t.nodes.values()]
    tokenizer = tiny.make_tokenizer(texts, TINY.vocab_size)
    tiny.save(tiny.make_model(tokenizer, TINY), tokenizer, root / "models/bootstrap")
    (root / "params.test.yaml").write_text(yaml.safe_dump(params))
    return {"root": root, "trees": trees, "tables": tables, "problems": problems}


def dvc_args(stage_name: str, round_: int) -> list[str]:
    """The job and NAME=PATH arguments dvc.yaml's `stage_name@round_` runs stages.rstar_train with."""
    return stage_cmd(stage_name, round_)[3:]


def run_stage(root: Path, *args: str) -> tuple[int, str]:
    """Run `python -m stages.rstar_train ARGS` in-process (torch is imported once for the whole module):
    (exit code, stderr)."""
    from stages.rstar_train import main

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.chdir(root)
        mp.setenv("TRACEMILL_PARAMS", "params.test.yaml")
        mp.setattr(sys, "argv", ["stages.rstar_train", *args])
        try:
            stage.run(main)
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


@pytest.fixture(scope="module")
def round1(workdir: dict[str, Any]) -> dict[str, Any]:
    root = workdir["root"]
    for name in ("rstar_policy", "rstar_ppm"):
        code, err = run_stage(root, *dvc_args(name, 1))
        assert code == 0, err[-2000:]
    return workdir


def metrics(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "metrics" / f"{name}.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_policy_is_fine_tuned_from_the_base_on_the_selected_trajectories(round1: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    root = round1["root"]
    assert AutoModelForCausalLM.from_pretrained(root / "models/rstar_policy_r1").config.model_type == "qwen2"
    assert not (root / "models/rstar_policy_r1.partial").exists()
    base, trained = weights(root / "models/bootstrap"), weights(root / "models/rstar_policy_r1")
    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    m = metrics(root, "rstar_policy_round1")
    selected = [t for t in round1["tables"][1]["trajectories"] if t["selected"]]
    assert m["trained"] is True and m["examples"] == len(selected) == 2 * len(QUESTIONS) and m["round"] == 1
    assert m["train_loss"] > 0 and m["global_step"] > 0
    curve = (root / "plots/rstar_policy_loss_round1.csv").read_text().splitlines()
    assert curve[0] == "step,loss" and len(curve) - 1 == m["global_step"]


def test_sft_rows_are_the_searched_steps_with_tool_output_masked(round1: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    root = round1["root"]
    rows = store.read_rows(root / "data/rstar_policy/round=1", "sft")
    leaves = {n.node_id: (t, n) for t in round1["trees"][1] for n in t.nodes.values()}
    assert len(rows) == 2 * len(QUESTIONS)
    tokenizer = AutoTokenizer.from_pretrained(root / "models/bootstrap")
    for row in rows:
        trajectory = json.loads(row["metadata"])["trajectory_id"]
        leaf_id = next(
            t["node_ids"][-1] for t in round1["tables"][1]["trajectories"] if t["trajectory_id"] == trajectory
        )
        tree, leaf = leaves[leaf_id]
        # The text the policy continued during the search, after its prompt, exactly.
        assert "".join(s["text"] for s in row["segments"]) == prefix_text(tree, leaf, FMT)[len(tree.prompt) :]
        outputs = [s for s in row["segments"] if s["kind"] == "output"]
        assert outputs and all(not s["loss"] for s in outputs)
        assert all(s["loss"] for s in row["segments"] if s["kind"] != "output")
        input_ids, labels = build_labels(tokenizer, row["prompt"], row["segments"], style="steps", fmt=FMT)
        trained = tokenizer.decode([t for t, lab in zip(input_ids, labels) if lab != IGNORE_INDEX])
        # the policy writes the ```output opener that hands over to the sandbox; what the sandbox printed is masked
        assert FMT.output_start in trained and FMT.code_start in trained
        assert all(not s["text"].startswith(FMT.output_start) for s in outputs)
    assert store.read_rows(root / "data/rstar_policy/round=1", "rejected") == []


def test_ppm_starts_from_the_round_policy_and_scores_steps(round1: dict[str, Any]) -> None:
    from tracemill.train import load_ppm

    root = round1["root"]
    pairs = round1["tables"][1]["pairs"]
    m = metrics(root, "rstar_ppm_round1")
    assert m["trained"] is True and m["pairs"] == len(pairs) == 3 * len(QUESTIONS)
    assert m["heldout_pairs"] > 0 and 0.0 <= m["heldout_pairwise_accuracy"] <= 1.0
    assert m["policy"] == "models/rstar_policy_r1"
    scores = load_ppm(root / "models/rstar_ppm_r1").score(
        pairs[0]["prefix"], [pairs[0]["chosen"], pairs[0]["rejected"]]
    )
    assert len(scores) == 2 and all(-1.0 <= s <= 1.0 for s in scores)
    assert (root / "plots/rstar_ppm_loss_round1.csv").read_text().startswith("step,loss\n")


def test_round_without_selected_trajectories_copies_the_base_and_says_so(workdir: dict[str, Any]) -> None:
    from tracemill.train import load_ppm

    root = workdir["root"]
    assert not any(t["selected"] for t in workdir["tables"][2]["trajectories"]) and workdir["tables"][2]["pairs"] == []
    code, err = run_stage(root, *dvc_args("rstar_policy", 2))
    assert code == 0 and "no selected trajectories" in err and "untrained" in err
    assert (root / "models/rstar_policy_r2/model.safetensors").read_bytes() == (
        root / "models/bootstrap/model.safetensors"
    ).read_bytes()
    m = metrics(root, "rstar_policy_round2")
    assert m["trained"] is False and m["examples"] == 0
    assert (root / "plots/rstar_policy_loss_round2.csv").read_text().splitlines() == ["step,loss"]
    code, err = run_stage(root, *dvc_args("rstar_ppm", 2))
    assert code == 0 and "no pairs were extracted" in err
    assert metrics(root, "rstar_ppm_round2")["trained"] is False
    assert load_ppm(root / "models/rstar_ppm_r2").score("3 and 4 more?", ["Add them.", "Multiply them."]) == [0.0, 0.0]


@pytest.mark.parametrize("name, round_", [("rstar_policy", 3), ("rstar_ppm", 0)])
def test_round_outside_the_configured_rounds_fails_with_one_line(
    workdir: dict[str, Any], name: str, round_: int
) -> None:
    """The real command line: the check comes before torch is imported, so this is quick."""
    env = os.environ | {"TRACEMILL_PARAMS": "params.test.yaml", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "stages.rstar_train", *dvc_args(name, round_)],
        cwd=workdir["root"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: round={round_} is outside 1..rstar.rounds ({MP.rounds})"]


def test_a_missing_or_unknown_argument_fails_with_one_line_each(workdir: dict[str, Any]) -> None:
    args = [a for a in dvc_args("rstar_ppm", 1) if not a.startswith("policy=")] + ["plicy=models/p"]
    code, err = run_stage(workdir["root"], *args)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: unknown argument 'plicy'; allowed: loss_plot, metrics, model, policy, round, search",
        "error: missing argument 'policy=...' — the stage's cmd in dvc.yaml passes it",
    ]
    code, err = run_stage(workdir["root"], "value", *args)
    assert code == 2 and err.strip() == "error: the first argument must be the job, one of policy, ppm"


def test_ppm_before_its_policy_names_the_stage_to_run(tmp_path: Path) -> None:
    (tmp_path / "data/rstar_search/round=1").mkdir(parents=True)
    (tmp_path / "params.test.yaml").write_text(yaml.safe_dump(PARAMS))
    code, err = run_stage(tmp_path, *dvc_args("rstar_ppm", 1))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'models/rstar_policy_r1' is missing" in err and "dvc repro rstar_policy@1" in err


class Interrupted(Exception):
    """Ends a training run right after its first checkpoint, leaving it behind as a crash would."""


def test_killed_policy_training_resumes_from_its_checkpoint(round1: dict[str, Any]) -> None:
    """A run killed mid-training leaves models/rstar_policy_r1.partial with a checkpoint; the stage goes on from
    it, and the loss curve still covers every step (the log history comes back with the checkpoint)."""
    from transformers import TrainerCallback

    from tracemill import params as P
    from tracemill.train import TrainParams, train_sft

    class InterruptAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            raise Interrupted

    root = round1["root"]
    rows = store.read_rows(root / "data/rstar_policy/round=1", "sft")
    params = P.section(TrainParams, PARAMS, "train").rstar_policy
    with pytest.raises(Interrupted):
        train_sft(
            root / "models/bootstrap",
            rows,
            root / "models/rstar_policy_r1.partial",
            params,
            fmt=FMT,
            callbacks=[InterruptAfterFirstCheckpoint()],
        )
    code, err = run_stage(root, *dvc_args("rstar_policy", 1))
    assert code == 0, err[-2000:]
    m = metrics(root, "rstar_policy_round1")
    assert m["resumed_from_step"] == SAVE_STEPS < m["global_step"]
    steps = [
        int(line.split(",")[0]) for line in (root / "plots/rstar_policy_loss_round1.csv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(1, m["global_step"] + 1))
    assert not (root / "models/rstar_policy_r1.partial").exists()


def test_trajectories_with_an_unknown_problem_or_a_missing_node_are_quarantined(workdir: dict[str, Any]) -> None:
    from tracemill.rstar.extract import sft_rows

    tables = workdir["tables"][1]
    nodes = {n["node_id"]: n for n in tables["nodes"]}
    questions = {p["problem_id"]: p["question"] for p in store.read_rows(workdir["root"] / "data/problems", "problems")}
    selected = [t for t in tables["trajectories"] if t["selected"]]
    broken = [{**selected[0], "problem_id": "nowhere"}, {**selected[1], "node_ids": [*selected[1]["node_ids"], "gone"]}]
    rows, rejected = sft_rows([*selected[2:], *broken], nodes, questions, FMT)
    assert len(rows) == len(selected) - 2
    assert sorted((r["reason"], r["detail"]) for r in rejected) == [
        ("missing_node", "gone"),
        ("unknown_problem", "nowhere"),
    ]
