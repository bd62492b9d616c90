"""The batched search on a real tiny policy, the real sandbox and grader, written through the real store.

The policy is trained in a module fixture on four rStar-format solutions per problem: one that adds
(right), one that multiplies (wrong answer), one whose code fails and one whose answer step is
malformed (a stray brace after the right boxed answer), so a search meets every kind of node. A short
system prompt keeps its sequences, and so its training, small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tracemill import records, runner, store, tiny
from tracemill.bootstrap import BootstrapParams, train
from tracemill.formats import FormatParams, Step, boxed, render_prompt, render_steps
from tracemill.grading import GradingParams, get_grader
from tracemill.llm import LLMParams, load_backend
from tracemill.rstar import RStarParams
from tracemill.rstar.extract import edit_distance
from tracemill.rstar.mcts import SearchError, shard_tables
from tracemill.runtime import Runtime
from tracemill.sandbox import SandboxParams, open_sandbox

FMT = FormatParams(step_system_prompt="Steps.")
MP = RStarParams(
    rollouts=6,
    children=3,
    max_depth=3,
    max_step_tokens=40,
    temperature=0.8,
    top_p=1.0,
    pair_margin=0.5,
    pair_min_edit_distance=4,
)  # the tiny problems' whole solutions differ by fewer than the reference's 20
QUESTIONS = [(3, 4), (5, 8), (6, 9), (7, 2)]  # two land in each of two shards
BP = BootstrapParams(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_steps=70,
    batch_size=12,
    warmup_steps=10,
    learning_rate=1e-2,
    log_every=10,
    bucket_batches=1,
)
RUN = runner.RunParams(shards=2)
TABLES = ["nodes", "trajectories", "pairs", "rejected"]


def problem(a: int, b: int) -> dict[str, Any]:
    return {
        "problem_id": records.content_id("p", a, b),
        "source": "test",
        "split": "train",
        "domain": "math",
        "question": f"{a} and {b} more?",
        "answer": str(a + b),
    }


def solutions(a: int, b: int) -> list[str]:
    right = [Step("Add.", f"print({a} + {b})", str(a + b)), Step(f"So {boxed(str(a + b), FMT)}.")]
    wrong = [Step("Multiply.", f"print({a} * {b})", str(a * b)), Step(f"So {boxed(str(a * b), FMT)}.")]
    broken = [Step("Sum.", "print(n + m)", "NameError"), Step(f"So {boxed(str(a + b + 1), FMT)}.")]
    # the right answer with the tail of a broken second one after it, as a policy sampled hot writes it
    garbled = [right[0], Step(f"So {boxed(str(a + b), FMT)}.{a}}}.")]
    return [render_steps(s, FMT) for s in (right, wrong, broken, garbled)]


PROBLEMS = [problem(a, b) for a, b in QUESTIONS]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory):
    pairs = [
        (render_prompt(p["question"], None, FMT, "steps"), s + tiny.IM_END)
        for p, (a, b) in zip(PROBLEMS, QUESTIONS)
        for s in solutions(a, b)
    ]
    model = tmp_path_factory.mktemp("mcts") / "policy"
    train(pairs, model, BP)
    with open_sandbox(SandboxParams()) as sandbox, get_grader(GradingParams(math="exact"), sandbox) as grader:
        yield Runtime(model, "tiny", load_backend(LLMParams(), model), sandbox, grader, FMT)


def run_stage(out_dir: Path, rt: Runtime, work=None) -> dict[str, int] | None:
    out = store.StageOutput(out_dir, TABLES, "test")
    work = work or (lambda shard, items: shard_tables(items, rt, MP, 1, 0, show_progress=False))
    return runner.run_sharded(out, PROBLEMS, "problem_id", work, RUN, "mcts")


def tables(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {t: sorted(store.read_rows(out_dir, t), key=lambda r: str(r)) for t in TABLES}


@pytest.fixture(scope="module")
def searched(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mcts") / "round=1"
    run_stage(out, runtime)
    return {"dir": out, **tables(out)}


def test_search_meets_failed_code_and_right_and_wrong_answers(searched):
    nodes = searched["nodes"]
    assert len({n["tree_id"] for n in nodes}) == len(PROBLEMS)
    assert any(not n["exec_ok"] for n in nodes)
    assert any(n["terminal"] and n["correct"] for n in nodes) and any(
        n["terminal"] and n["correct"] is False for n in nodes
    )


def test_q_signs_follow_terminal_correctness(searched):
    visited = [n for n in searched["nodes"] if n["terminal"] and n["exec_ok"] and n["visits"] > 0]
    assert visited
    for n in visited:
        assert (n["q"] > 0) == bool(n["correct"]) and abs(n["q"]) == 1.0
    roots = [n for n in searched["nodes"] if n["parent_id"] is None]
    answers: dict[str, int] = {}
    for n in visited:
        answers[n["tree_id"]] = answers.get(n["tree_id"], 0) + 1
    for r in roots:  # each answer backed up once, when it was made; no rollout re-walks a finished leaf
        meta = json.loads(r["metadata"])
        assert r["visits"] == answers.get(r["tree_id"], 0) and meta["rewalks"] == 0
        assert meta["rollouts"] == MP.rollouts or meta["exhausted"]


def test_a_ppm_primes_every_new_open_node_in_one_batched_call_per_expansion(runtime: Runtime, tmp_path: Path):
    from tracemill.rstar.mcts import search
    from tracemill.train import PPMParams, init_ppm, load_ppm

    ppm = load_ppm(
        init_ppm(runtime.model_path, tmp_path / "ppm", PPMParams(max_length=256))
    )  # scores every step tanh(0) = 0
    trees, stats = search(PROBLEMS[:2], runtime, MP, 3, 0, ppm, show_progress=False)
    nodes = [n for t in trees for n in t.nodes.values() if n.parent_id is not None]
    primed = [n for n in nodes if n.exec_ok and not n.is_leaf]
    assert primed and all(n.ppm_score == 0.0 and n.visits >= 1 for n in primed)
    graded = [n for n in nodes if n.terminal and n.exec_ok]
    assert graded and all(n.ppm_score is None and abs(n.q) == 1.0 for n in graded)  # rule-based, never scored
    assert 0 < stats.ppm_calls <= stats.generate_calls  # one call per batch of expansions, not per parent


def test_test_split_problems_are_never_searched(runtime: Runtime):
    with pytest.raises(SearchError, match="outside the train split.*only split 'train' is ever searched"):
        shard_tables([{**PROBLEMS[0], "split": "test"}], runtime, MP, 1, 0, show_progress=False)


def test_malformed_steps_are_dead_ends_and_never_trajectories(searched):
    nodes = {n["node_id"]: n for n in searched["nodes"]}
    garbled = [n for n in nodes.values() if json.loads(n["metadata"] or "{}").get("dropped") == "after_answer"]
    assert garbled, "the policy never sampled its malformed answer step"
    for n in garbled:  # a right answer, but no trajectory, grade or Q comes of it
        assert "}." in n["step_text"] and not n["exec_ok"] and n["correct"] is None and n["visits"] == 0
    ends = {t["node_ids"][-1] for t in searched["trajectories"]}
    assert ends and not ends & {n["node_id"] for n in garbled}


def test_failed_code_nodes_are_never_expanded(searched):
    parents = {n["parent_id"] for n in searched["nodes"]}
    failed = [n for n in searched["nodes"] if not n["exec_ok"]]
    assert failed and all(n["node_id"] not in parents and n["visits"] == 0 for n in failed)


def test_selected_trajectories_are_the_top_correct_by_average_q(searched):
    by_tree: dict[str, list[dict[str, Any]]] = {}
    for t in searched["trajectories"]:
        by_tree.setdefault(t["tree_id"], []).append(t)
    assert any(t["selected"] for t in searched["trajectories"])
    for rows in by_tree.values():
        correct = sorted((t for t in rows if t["correct"]), key=lambda t: (-t["avg_q"], t["trajectory_id"]))
        assert {t["trajectory_id"] for t in correct[: MP.top_k]} == {t["trajectory_id"] for t in rows if t["selected"]}


def test_pairs_share_their_prefix_and_respect_the_margin(searched):
    nodes = {n["node_id"]: n for n in searched["nodes"]}
    assert searched["pairs"]
    for p in searched["pairs"]:
        assert p["chosen_q"] - p["rejected_q"] >= MP.pair_margin
        assert edit_distance(p["chosen"], p["rejected"], MP.pair_min_edit_distance) >= MP.pair_min_edit_distance
        chosen, rejected = nodes[p["chosen_node_id"]], nodes[p["rejected_node_id"]]
        if not p["final_step"]:
            assert chosen["parent_id"] == rejected["parent_id"]
        assert chosen["tree_id"] == rejected["tree_id"] == p["tree_id"]


def test_killed_search_resumes_to_the_same_tables(runtime: Runtime, searched, tmp_path: Path):
    out = tmp_path / "round=1"

    def killed_after_first_shard(shard: int, items: list[dict[str, Any]]) -> dict[str, Any]:
        if store.StageOutput(out, TABLES, "test").pending(range(RUN.shards)) != list(range(RUN.shards)):
            raise KeyboardInterrupt  # the second shard never finishes
        return shard_tables(items, runtime, MP, 1, 0, show_progress=False)

    with pytest.raises(KeyboardInterrupt):
        run_stage(out, runtime, killed_after_first_shard)
    (out / "nodes" / ".part-00001.parquet.tmp-4242").write_bytes(b"half a file")  # a writer killed mid-write
    assert len(list((out / store.SHARDS_DIR).glob("*.done"))) == 1
    counts = run_stage(out, runtime)
    assert counts is not None and counts["nodes"] == len(searched["nodes"])
    assert tables(out) == {t: searched[t] for t in TABLES}


def test_shards_of_the_run_are_not_empty():
    assert {store.shard_of(p["problem_id"], RUN.shards) for p in PROBLEMS} == set(range(RUN.shards))


def test_problems_without_an_answer_are_quarantined(runtime: Runtime):
    out = shard_tables([{**PROBLEMS[0], "answer": None}], runtime, MP, 1, 0, show_progress=False)
    assert out["nodes"] == [] and [r["reason"] for r in out["rejected"]] == ["no_reference_answer"]
