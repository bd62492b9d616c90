"""The search core on hand-built trees: rollout semantics (a leaf is evaluated once, where it is created,
and never re-entered), UCT, PPM-primed Q, and the rows and pairs drawn from trees.

`grow` expands a tree from a plan (a node's step text -> the children the policy would sample) the way
Search._expand does: add the children, settle the leaves among them, close what is finished, then give
each new open node its PPM score as a first visit."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tracemill import records
from tracemill.errors import ParamsError
from tracemill.formats import FormatParams
from tracemill.rstar import RStarParams, SearchTree, extract, q_histogram, round_metrics, uct
from tracemill.rstar.extract import edit_distance, prefix_text, sibling_pairs, step_text, trajectory_rows
from tracemill.rstar.tree import Node

FMT = FormatParams()
MP = RStarParams(rollouts=24, max_depth=4, pair_margin=0.5)
PROMPT = "<|im_start|>user\nTom has 3 apples and gets 4 more.<|im_end|>\n<|im_start|>assistant\n"


def S(text: str, code: str | None = None, out: str | None = None) -> dict[str, Any]:
    """A runnable step."""
    return {"text": text, "code": code, "exec_output": out}


def A(value: str, correct: bool, text: str = "") -> dict[str, Any]:
    """A boxed answer, graded."""
    return {
        "text": text or f"The answer is \\boxed{{{value}}}.",
        "code": None,
        "terminal": True,
        "answer": value,
        "correct": correct,
    }


def F(text: str) -> dict[str, Any]:
    """A step whose code failed."""
    return {"text": text, "code": "print(nope)", "exec_output": "NameError", "exec_ok": False}


def grow(
    tree: SearchTree,
    plan: dict[str, list[dict[str, Any]]],
    rollouts: int,
    c: float = 2.0,
    ppm: dict[str, float] | None = None,
) -> list[str]:
    """Run rollouts until the budget is spent or the tree is exhausted; the step texts expanded, in order."""
    expanded = []
    while tree.rollouts < rollouts and not tree.exhausted:
        node = tree.walk(c)
        if node is None:
            continue
        expanded.append(node.step_text)
        kids = []
        for spec in plan.get(node.step_text, []):
            fields = {k: v for k, v in spec.items() if k not in ("text", "code")}
            kids.append(tree.add_child(node, spec["text"], spec["code"], **fields))
        for kid in kids:
            if kid.exec_ok and not kid.terminal and kid.depth >= MP.max_depth:
                kid.dead_end = "max_depth"
            if kid.exec_ok and kid.is_leaf:
                tree.settle(kid)
        tree.expanded(node)
        for kid in kids:
            if ppm is not None and kid.exec_ok and not kid.is_leaf:
                tree.prime(kid, ppm[kid.step_text])
    return expanded


APPLES = {
    "": [S("Add 4 to 3.", "print(3 + 4)", "7"), S("Multiply 3 by 4.", "print(3 * 4)", "12"), F("Add the counts.")],
    "Add 4 to 3.": [A("7", True), A("8", False)],
    "Multiply 3 by 4.": [A("12", False)],
}


def by_text(tree: SearchTree) -> dict[str, Node]:
    return {n.step_text: n for n in tree.nodes.values()}


def test_each_leaf_is_graded_and_backed_up_once_and_the_tree_stops_when_exhausted():
    tree = SearchTree.new("p1", 1, PROMPT)
    grow(tree, APPLES, rollouts=MP.rollouts)
    n = by_text(tree)
    leaves = [x for x in tree.nodes.values() if x.terminal]
    assert len(leaves) == 3 and all(x.visits == 1 for x in leaves)
    assert [x.q for x in leaves] == [1.0, -1.0, -1.0]
    assert n["Add 4 to 3."].visits == 2 and n["Add 4 to 3."].q == 0.0 and n["Multiply 3 by 4."].q == -1.0
    assert tree.root.visits == 3  # one backup per answer, none per rollout that passes a finished leaf
    # two expansions of an answered parent were all the work there was: two rollouts, then the tree is done
    assert tree.exhausted and tree.rollouts == 2 < MP.rollouts and tree.rewalks == 0
    assert len(trajectory_rows(tree, top_k=2)) == 3


def test_a_walk_into_a_finished_tree_is_a_rewalk_not_a_new_trajectory():
    tree = SearchTree.new("p1", 1, PROMPT)
    grow(tree, APPLES, rollouts=MP.rollouts)
    before = len(trajectory_rows(tree, top_k=2))
    assert tree.walk(2.0) is None  # no open child anywhere: the rollout ends at once
    assert tree.rollouts == 3 and tree.rewalks == 1 and len(trajectory_rows(tree, top_k=2)) == before
    m = round_metrics(*(extract([tree], FMT, MP)[t] for t in ("nodes", "trajectories", "pairs")))
    assert m["rewalked_rollout_share"] == pytest.approx(1 / 3, abs=1e-4) and m["exhausted_trees"] == 1


def test_failed_code_is_never_selected_nor_expanded():
    tree = SearchTree.new("p1", 1, PROMPT)
    expanded = grow(tree, APPLES, rollouts=MP.rollouts)
    broken = by_text(tree)["Add the counts."]
    assert broken.visits == 0 and not broken.expanded and broken.closed and "Add the counts." not in expanded


def test_unvisited_children_get_no_exploration_bonus_and_visited_ones_do():
    tree = SearchTree.new("p1", 1, PROMPT)
    add = tree.add_child(tree.root, "Add 4 to 3.", "print(3 + 4)", exec_output="7")
    tree.expanded(tree.root)
    assert uct(add, 0, 2.0) == 0.0 and uct(add, 5, 2.0) == 0.0  # the reference's puct: Q 0, no bonus
    add.update(-1.0)
    assert uct(add, 3, 2.0) == pytest.approx(-1.0 + 2.0 * math.sqrt(math.log(3)))


def test_dead_ends_take_minus_one_on_themselves_only():
    tree = SearchTree.new("p2", 1, "prompt")
    plan = {
        "": [S("Step one.", "x = 1", "")],
        "Step one.": [S("Step two.", "y = 2", "")],
        "Step two.": [F("Step three.")],
    }
    grow(tree, plan, rollouts=4)
    n = by_text(tree)
    assert n["Step two."].dead_end == "no_runnable_child" and n["Step two."].q == -1.0
    assert n["Step one."].visits == 0 and tree.root.visits == 0 and tree.exhausted
    deep = SearchTree.new("p3", 1, "prompt")
    chain = {
        "": [S("a.", "a = 1", "")],
        "a.": [S("b.", "b = 1", "")],
        "b.": [S("c.", "c = 1", "")],
        "c.": [S("d.", "d = 1", "")],
    }
    grow(deep, chain, rollouts=4)
    assert by_text(deep)["d."].dead_end == "max_depth" and not by_text(deep)["d."].expanded


def test_the_ppm_score_is_the_first_visit_and_decides_which_child_is_explored():
    plan = {
        "": [S("Add 4 to 3.", "print(3 + 4)", "7"), S("Multiply 3 by 4.", "print(3 * 4)", "12")],
        "Add 4 to 3.": [A("7", True)],
        "Multiply 3 by 4.": [A("12", False)],
    }
    guided = SearchTree.new("p1", 1, PROMPT)
    order = grow(guided, plan, rollouts=1, ppm={"Add 4 to 3.": -0.4, "Multiply 3 by 4.": 0.6})
    n = by_text(guided)
    assert order == ["", "Multiply 3 by 4."]  # the higher score goes first, though it was sampled second
    assert n["Add 4 to 3."].visits == 1 and n["Add 4 to 3."].q == -0.4 and n["Add 4 to 3."].ppm_score == -0.4
    assert n["Multiply 3 by 4."].q == pytest.approx((0.6 - 1.0) / 2)  # score, then the wrong answer's -1
    # a terminal node keeps its rule-based value
    assert n["The answer is \\boxed{12}."].q == -1.0 and n["The answer is \\boxed{12}."].ppm_score is None
    plain = SearchTree.new("p1", 1, PROMPT)
    assert grow(plain, plan, rollouts=1) == ["", "Add 4 to 3."]  # without a PPM: the first sampled


def test_top_k_selection_picks_the_highest_average_q():
    plan = {**APPLES, "Multiply 3 by 4.": [A("12", False), A("7", True, "So it is \\boxed{7}."), A("13", False)]}
    tree = SearchTree.new("p1", 1, PROMPT)
    grow(tree, plan, rollouts=MP.rollouts)
    rows = trajectory_rows(tree, top_k=1)
    correct = sorted((r for r in rows if r["correct"]), key=lambda r: -r["avg_q"])
    assert len(correct) == 2 and correct[0]["avg_q"] > correct[1]["avg_q"]
    assert [r["selected"] for r in correct] == [True, False]
    assert correct[0]["node_ids"][1] == by_text(tree)["Add 4 to 3."].node_id
    assert all(
        r["avg_q"] == pytest.approx((tree.nodes[r["node_ids"][1]].q + tree.nodes[r["node_ids"][2]].q) / 2) for r in rows
    )


def wide() -> SearchTree:
    """Five first steps, distinct enough to pair, with graded answers under each, so siblings spread over Q."""
    approaches = [
        "Count the apples one by one.",
        "Use the formula for a sum of two terms.",
        "Subtract the smaller from the larger.",
        "Guess a number and check it against both counts.",
        "Write both counts in binary and add the bits.",
    ]
    outcomes = [(True, True), (True, False), (False, False), (False,), (True, False, False)]
    plan: dict[str, list[dict[str, Any]]] = {"": [S(text, f"print({i})", str(i)) for i, text in enumerate(approaches)]}
    for i, (text, oks) in enumerate(zip(approaches, outcomes, strict=True)):
        plan[text] = [
            A(f"{i}{j}", ok, f"Approach {i} gives the answer \\boxed{{{i}{j}}} in the end.") for j, ok in enumerate(oks)
        ]
    tree = SearchTree.new("p4", 1, "prompt\n")
    grow(tree, plan, rollouts=40)
    return tree


def test_pairs_share_their_prefix_and_respect_margin_and_edit_distance():
    tree = wide()
    pairs = extract([tree], FMT, MP)["pairs"]
    records.validate("pairs", pairs)
    siblings = [p for p in pairs if not p["final_step"]]
    assert siblings
    for p in pairs:
        assert p["chosen_q"] - p["rejected_q"] >= MP.pair_margin
        assert edit_distance(p["chosen"], p["rejected"], MP.pair_min_edit_distance) >= MP.pair_min_edit_distance
    for p in siblings:
        chosen, rejected = tree.nodes[p["chosen_node_id"]], tree.nodes[p["rejected_node_id"]]
        assert chosen.parent_id == rejected.parent_id
        assert p["prefix"] == prefix_text(tree, tree.nodes[chosen.parent_id], FMT)
        assert p["chosen"] == step_text(chosen, FMT) and p["rejected"] == step_text(rejected, FMT)
    assert sibling_pairs(tree, FMT, RStarParams(pair_margin=2.5)) == []  # no Q gap reaches 2.5 on [-1, 1]


def test_near_identical_steps_are_not_paired():
    assert edit_distance("Add 20 and 3: 23.", "Add 20 and 8: 28.", 20) == 2
    assert edit_distance("kitten", "sitting", 20) == 3 and edit_distance("a" * 50, "b", 20) == 20
    plan = {
        "": [S("Add 20 and 3.", "print(23)", "23"), S("Add 20 and 8.", "print(28)", "28")],
        "Add 20 and 3.": [A("23", True)],
        "Add 20 and 8.": [A("28", False)],
    }
    tree = SearchTree.new("p5", 1, "prompt\n")
    grow(tree, plan, rollouts=8)
    assert sibling_pairs(tree, FMT, MP) == []
    assert len(sibling_pairs(tree, FMT, RStarParams(pair_min_edit_distance=0))) == 1


def test_a_subtree_of_dead_ends_only_is_no_negative():
    plan = {
        "": [
            S("Count every apple in the basket.", "print(7)", "7"),
            S("Give up on counting and stop here now.", "x = 0", ""),
        ],
        "Count every apple in the basket.": [A("7", True)],
        "Give up on counting and stop here now.": [F("Then fail.")],
    }
    tree = SearchTree.new("p6", 1, "prompt\n")
    grow(tree, plan, rollouts=8)
    assert by_text(tree)["Give up on counting and stop here now."].q == -1.0  # a dead end, low Q
    assert sibling_pairs(tree, FMT, MP) == []


def test_one_chosen_step_is_paired_with_up_to_four_rejected():
    wrong = [f"Try method number {i} which multiplies the counts together." for i in range(5)]
    plan: dict[str, list[dict[str, Any]]] = {
        "": [S("Add the two counts of apples together.", "print(3 + 4)", "7")]
        + [S(t, f"print({i})", str(i)) for i, t in enumerate(wrong)]
    }
    plan["Add the two counts of apples together."] = [A("7", True)]
    for i, t in enumerate(wrong):
        plan[t] = [A(f"1{i}", False)]
    tree = SearchTree.new("p7", 1, "prompt\n")
    grow(tree, plan, rollouts=40)
    pairs = sibling_pairs(tree, FMT, MP)
    assert len(pairs) == MP.pairs_when_one == 4 and len({p["rejected_node_id"] for p in pairs}) == 4
    # the counts the PPM weighs each pair by (1/(pos x neg)): one chosen against the four rejected
    assert {(json.loads(p["metadata"])["pos_count"], json.loads(p["metadata"])["neg_count"]) for p in pairs} == {(1, 4)}
    assert len(sibling_pairs(tree, FMT, RStarParams(pairs_when_one=2))) == 2


def test_path_average_check_drops_a_pair_whose_continuations_disagree():
    """The step Qs favour the chosen step, but its best correct continuation runs through low-Q steps and the
    rejected step's worst wrong one through high-Q steps, so the path averages disagree (Qs set by hand)."""
    tree = SearchTree.new("p8", 1, "prompt\n")

    def node(parent: Node, text: str, q: float, **kw: Any) -> Node:
        child = tree.add_child(parent, text, None, **kw)
        child.visits, child.value_sum, parent.expanded = 1, q, True
        return child

    good = node(tree.root, "Take the long way around the whole problem.", 0.0)
    low = node(node(good, "Check the first count.", -0.9), "Check the second count.", -0.9)
    node(low, "right", 1.0, terminal=True, answer="7", correct=True)
    bad = node(tree.root, "Jump straight to an answer without checking.", -0.1)
    high = node(node(bad, "Looks fine.", 0.95), "Still fine.", 0.95)
    node(high, "wrong", -1.0, terminal=True, answer="8", correct=False)
    assert len(sibling_pairs(tree, FMT, RStarParams(pair_margin=0.0, pair_path_check=False))) == 1
    assert sibling_pairs(tree, FMT, RStarParams(pair_margin=0.0)) == []


def test_final_step_pairs_put_whole_correct_and_wrong_solutions_after_the_question():
    tree = wide()
    finals = [p for p in extract([tree], FMT, MP)["pairs"] if p["final_step"]]
    assert finals
    for p in finals:
        assert p["prefix"] == tree.prompt
        assert tree.nodes[p["chosen_node_id"]].correct and not tree.nodes[p["rejected_node_id"]].correct
        assert p["chosen"].endswith(step_text(tree.nodes[p["chosen_node_id"]], FMT))


def test_rows_pass_their_schemas_and_metrics_count_them():
    tree = SearchTree.new("p1", 1, PROMPT)
    grow(tree, APPLES, rollouts=MP.rollouts)
    tables = extract([tree], FMT, MP)
    for table, rows in tables.items():
        records.validate(table, rows)
    broken = next(r for r in tables["nodes"] if r["step_text"] == "Add the counts.")
    assert broken["exec_ok"] is False and broken["visits"] == 0
    m = round_metrics(tables["nodes"], tables["trajectories"], tables["pairs"])
    assert (
        m["trees"] == 1
        and m["solve_rate"] == 1.0
        and m["nodes"] == 6
        and m["exec_ok_rate"] == pytest.approx(2 / 3, abs=1e-3)
    )
    assert (
        m["trajectories_per_tree"] == 3
        and m["correct_trajectories_per_solved_tree"] == 1
        and m["rewalked_rollout_share"] == 0
    )
    hist = q_histogram([r["q"] for r in tables["nodes"]], 4)
    assert [h["q"] for h in hist] == [-0.75, -0.25, 0.25, 0.75] and sum(h["count"] for h in hist) == 7


def test_a_first_round_model_folder_is_what_round_one_reads_so_dvc_reruns_it_when_it_changes():
    def table(first: str) -> dict[str, dict[str, str]]:
        return {"1": {"policy": first, "ppm": first}, "2": {"policy": "models/p1", "ppm": "models/q1"}}

    RStarParams(rounds=2, ppm_from_round=2, first_round_model="models/big", round_inputs=table("models/big")).check()
    bootstrap = RStarParams(
        rounds=2, ppm_from_round=2, first_round_model="models/big", round_inputs=table("models/bootstrap")
    )
    with pytest.raises(ParamsError, match=r"\"1\" must name rstar.first_round_model = models/big"):
        bootstrap.check()
    # a model served behind openai is a name, no file: round 1 keeps the bootstrap folder
    RStarParams(
        rounds=2,
        ppm_from_round=2,
        first_round_model="deepseek-coder",
        first_round_backend="openai",
        round_inputs=table("models/bootstrap"),
    ).check()
