"""The search core on hand-built trees: UCT, backup, PPM-initialised Q, and the rows drawn from trees."""

from __future__ import annotations

import math

import pytest

from tracemill import records
from tracemill.formats import FormatParams
from tracemill.search import MCTSParams, Tree, extract, q_histogram, round_metrics, uct
from tracemill.search.extract import prefix_text, sibling_pairs, step_text, trajectory_rows
from tracemill.search.tree import Node

FMT = FormatParams()
MP = MCTSParams(rollouts=24, max_depth=4, pair_margin=0.5)


def step(tree: Tree, parent: Node, text: str, code: str | None = None, out: str | None = None, **kw) -> Node:
    parent.expanded = True
    return tree.add_child(parent, text, code, exec_output=out, **kw)


def answer(tree: Tree, parent: Node, value: str, correct: bool) -> Node:
    return step(tree, parent, f"The answer is \\boxed{{{value}}}.", terminal=True, answer=value, correct=correct)


def apples() -> tuple[Tree, dict[str, Node]]:
    """Root -> add (runs) -> 7 (right) | 8 (wrong); root -> multiply (runs) -> 12 (wrong); root -> broken (fails)."""
    tree = Tree.new("p1", 1, "<|im_start|>user\nTom has 3 apples and gets 4 more.<|im_end|>\n<|im_start|>assistant\n")
    n = {"root": tree.root}
    n["add"] = step(tree, tree.root, "Add 4 to 3.", "print(3 + 4)", "7")
    n["mul"] = step(tree, tree.root, "Multiply 3 by 4.", "print(3 * 4)", "12")
    n["broken"] = step(tree, tree.root, "Add the counts.", "print(apples + more)", "NameError", exec_ok=False)
    n["right"] = answer(tree, n["add"], "7", True)
    n["off"] = answer(tree, n["add"], "8", False)
    n["twelve"] = answer(tree, n["mul"], "12", False)
    return tree, n


def search(tree: Tree, rollouts: int, c: float = MP.uct_c) -> None:
    """Rollouts over a fully expanded tree: every walk ends at a leaf, which is backed up."""
    for _ in range(rollouts):
        leaf = tree.walk(c, MP.max_depth)
        assert leaf.is_leaf, "a hand-built tree is expanded everywhere a walk can go"
        tree.backup(leaf)


def test_q_signs_follow_terminal_correctness():
    tree, n = apples()
    search(tree, MP.rollouts)
    assert n["right"].q == 1.0 and n["off"].q == -1.0 and n["twelve"].q == -1.0
    assert n["add"].q > 0 > n["mul"].q
    assert tree.root.visits == MP.rollouts == tree.rollouts
    # exploitation wins: the path to the right answer is visited most
    assert n["right"].visits > max(n["off"].visits, n["twelve"].visits)


def test_failed_code_is_never_selected_nor_expanded():
    tree, n = apples()
    search(tree, MP.rollouts)
    assert n["broken"].visits == 0 and not n["broken"].expanded and not n["broken"].children


def test_uct_tries_unvisited_children_first_then_balances_q_and_visits():
    tree, n = apples()
    assert math.isinf(uct(n["add"], 0, 2.0))
    search(tree, 2)  # one rollout per runnable child of the root
    assert n["add"].visits == n["mul"].visits == 1
    expected = n["add"].q + 2.0 * math.sqrt(math.log(tree.root.visits) / n["add"].visits)
    assert uct(n["add"], tree.root.visits, 2.0) == pytest.approx(expected)


def test_too_deep_and_childless_nodes_are_dead_ends_worth_minus_one():
    tree = Tree.new("p2", 1, "prompt")
    a = step(tree, tree.root, "Step one.", "x = 1", "")
    b = step(tree, a, "Step two.", "y = 2", "")
    a.expanded, b.expanded = True, True  # b was expanded, but every child it got failed
    step(tree, b, "Step three.", "print(z)", "NameError", exec_ok=False)
    leaf = tree.walk(2.0, max_depth=4)
    assert leaf is b and b.dead_end == "no_runnable_child"
    tree.backup(leaf)
    assert a.q == -1.0
    shallow = Tree.new("p3", 1, "prompt")
    c = step(shallow, shallow.root, "Step one.", "x = 1", "")
    assert shallow.walk(2.0, max_depth=1) is c and c.dead_end == "max_depth"


def test_ppm_score_initialises_q_as_one_pseudo_rollout():
    tree, n = apples()
    n["add"].ppm_score, n["mul"].ppm_score = 0.2, 0.6
    assert n["add"].q == 0.2
    assert tree.walk(2.0, 4) in (n["off"], n["twelve"], n["right"])
    # among unvisited children the higher PPM score goes first
    assert tree.walk(2.0, 4).parent_id == n["mul"].node_id
    search(tree, 1)
    assert n["mul"].q == pytest.approx((0.6 - 1.0) / 2)


def test_top_k_selection_picks_the_highest_average_q():
    tree, n = apples()
    second = answer(tree, n["mul"], "7", True)  # a correct answer after a step that mostly goes wrong
    answer(tree, n["mul"], "13", False)
    search(tree, MP.rollouts)
    rows = trajectory_rows(tree, top_k=1)
    correct = sorted((r for r in rows if r["correct"]), key=lambda r: -r["avg_q"])
    assert len(correct) == 2 and correct[0]["avg_q"] > correct[1]["avg_q"]
    assert [r["selected"] for r in correct] == [True, False]
    assert correct[0]["node_ids"] == [tree.root_id, n["add"].node_id, n["right"].node_id]
    assert all(r["avg_q"] == pytest.approx((tree.nodes[r["node_ids"][1]].q + tree.nodes[r["node_ids"][2]].q) / 2) for r in rows)
    assert second.visits > 0


def wide() -> tuple[Tree, list[Node]]:
    """Five first steps with graded answers under each, so siblings spread over Q."""
    tree = Tree.new("p4", 1, "prompt\n")
    kids = []
    for i, outcomes in enumerate([(True, True), (True, False), (False, False), (False,), (True, False, False)]):
        kid = step(tree, tree.root, f"Approach {i}.", f"print({i})", str(i))
        for j, ok in enumerate(outcomes):
            answer(tree, kid, f"{i}{j}", ok)
        kids.append(kid)
    return tree, kids


def test_pairs_share_their_prefix_and_respect_the_margin():
    tree, _ = wide()
    search(tree, 40)
    pairs = extract([tree], FMT, MP)["pairs"]
    records.validate("pairs", pairs)
    siblings = [p for p in pairs if not p["final_step"]]
    assert siblings
    for p in pairs:
        assert p["chosen_q"] - p["rejected_q"] >= MP.pair_margin
    for p in siblings:
        chosen, rejected = tree.nodes[p["chosen_node_id"]], tree.nodes[p["rejected_node_id"]]
        assert chosen.parent_id == rejected.parent_id
        assert p["prefix"] == prefix_text(tree, tree.nodes[chosen.parent_id], FMT)
        assert p["chosen"] == step_text(chosen, FMT) and p["rejected"] == step_text(rejected, FMT)
    per_prefix = {}
    for p in siblings:
        per_prefix.setdefault(p["prefix"], set()).update({p["chosen_node_id"]})
    assert all(len(ids) <= MP.pairs_per_side for ids in per_prefix.values())
    strict = sibling_pairs(tree, FMT, MCTSParams(pair_margin=2.5))
    assert strict == []  # no Q gap reaches 2.5 on [-1, 1]


def test_final_step_pairs_put_whole_correct_and_wrong_solutions_after_the_question():
    tree, _ = wide()
    search(tree, 40)
    finals = [p for p in extract([tree], FMT, MP)["pairs"] if p["final_step"]]
    assert finals
    for p in finals:
        assert p["prefix"] == tree.prompt
        assert tree.nodes[p["chosen_node_id"]].correct and not tree.nodes[p["rejected_node_id"]].correct
        assert p["chosen"].endswith(step_text(tree.nodes[p["chosen_node_id"]], FMT))


def test_rows_pass_their_schemas_and_metrics_count_them():
    tree, n = apples()
    search(tree, MP.rollouts)
    tables = extract([tree], FMT, MP)
    for table, rows in tables.items():
        records.validate(table, rows)
    broken = next(r for r in tables["nodes"] if r["node_id"] == n["broken"].node_id)
    assert broken["exec_ok"] is False and broken["visits"] == 0
    m = round_metrics(tables["nodes"], tables["trajectories"], tables["pairs"])
    assert m["trees"] == 1 and m["solve_rate"] == 1.0 and m["nodes"] == 6 and m["exec_ok_rate"] == pytest.approx(2 / 3, abs=1e-3)
    hist = q_histogram([r["q"] for r in tables["nodes"]], 4)
    assert [h["q"] for h in hist] == [-0.75, -0.25, 0.25, 0.75] and sum(h["count"] for h in hist) == 7
