"""Search trees into rows: `nodes`, `trajectories` (top-k correct by average Q selected for SFT) and
step-level preference `pairs`, plus the round's metrics. Pure functions over `SearchTree`s; `sft_rows`
turns a round's written tables back into the policy's next training set.

Pairs follow rStar-Math's reference code (`extra_rm_file.py`, `train/sample_rm_data.py`): among the
runnable children of one node (so they share the prefix up to it), the `pairs_per_side` highest-Q
steps with a correct answer below them are paired with the `pairs_per_side` lowest-Q steps with a
wrong answer below them (a subtree of dead ends only is no negative); when one side has a single
step, the other side takes up to `pairs_when_one`. A pair is kept when its Q margin is at least
`pair_margin`, the two steps differ by at least `pair_min_edit_distance` characters, and (with
`pair_path_check`) the chosen step's best continuation averages a higher Q than the rejected
step's worst. Final answers rarely share a prefix, so for the final step the paper relaxes the rule:
the highest average-Q correct trajectories against the lowest average-Q wrong ones, each written out
whole after the question, under the same margin and edit distance. A pair's text is
`prefix + step`, as the PPM scores it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import product
from typing import Any

from tracemill import records
from tracemill.formats import FormatParams, Step, render_step, step_segments
from tracemill.rstar.params import RStarParams
from tracemill.rstar.tree import Node, SearchTree
from tracemill.store import Quarantine
from tracemill.train.examples import sft_row


def node_step(text: str, code: str | None, exec_output: str | None) -> Step:
    """A node's step as the policy read it: an output block only where code ran."""
    return Step(text, code, exec_output if code is not None else None)


def step_text(node: Node, fmt: FormatParams) -> str:
    """A node as the policy reads it: its sentence, code and output block, then the step delimiter."""
    return render_step(node_step(node.step_text, node.code, node.exec_output), fmt)


def prefix_text(tree: SearchTree, node: Node, fmt: FormatParams) -> str:
    """The prompt and every step from the root to `node` included: what the next step continues."""
    return tree.prompt + "".join(step_text(n, fmt) for n in tree.path(node)[1:])


def node_rows(tree: SearchTree) -> list[dict[str, Any]]:
    rows = []
    for n in tree.nodes.values():
        meta = dict(n.meta)
        if n.dead_end is not None:
            meta["dead_end"] = n.dead_end
        if n.node_id == tree.root_id:
            meta.update(rollouts=tree.rollouts, rewalks=tree.rewalks, exhausted=tree.exhausted)
        rows.append(
            {
                "node_id": n.node_id,
                "tree_id": tree.tree_id,
                "parent_id": n.parent_id,
                "problem_id": tree.problem_id,
                "round": tree.round,
                "depth": n.depth,
                "step_text": n.step_text,
                "code": n.code,
                "exec_ok": n.exec_ok,
                "exec_output": n.exec_output,
                "terminal": n.terminal,
                "answer": n.answer,
                "correct": n.correct,
                "visits": n.visits,
                "q": n.q,
                "ppm_score": n.ppm_score,
                "metadata": records.to_json(meta) if meta else None,
            }
        )
    return rows


def answered_leaves(tree: SearchTree) -> list[Node]:
    """Terminal nodes whose code ran and that were graded (their Q carries their outcome): each is a
    distinct trajectory, since no rollout re-enters a leaf."""
    return [n for n in tree.nodes.values() if n.terminal and n.exec_ok and n.visits > 0]


def avg_q(path: Sequence[Node]) -> float:
    steps = path[1:]  # the root holds no step
    return sum(n.q for n in steps) / len(steps)


def trajectory_rows(tree: SearchTree, top_k: int) -> list[dict[str, Any]]:
    """One row per answered leaf; the `top_k` correct ones with the highest average Q are selected."""
    rows: list[dict[str, Any]] = []
    for leaf in answered_leaves(tree):
        path = tree.path(leaf)
        ids = [n.node_id for n in path]
        rows.append(
            {
                "trajectory_id": records.content_id(tree.tree_id, ids),
                "tree_id": tree.tree_id,
                "problem_id": tree.problem_id,
                "round": tree.round,
                "node_ids": ids,
                "avg_q": avg_q(path),
                "correct": bool(leaf.correct),
                "selected": False,
                "final_answer": leaf.answer,
                "metadata": None,
            }
        )
    ranked = sorted((r for r in rows if r["correct"]), key=lambda r: (-r["avg_q"], r["trajectory_id"]))
    for row in ranked[:top_k]:
        row["selected"] = True
    return rows


def _answers_below(tree: SearchTree) -> dict[str, tuple[bool, bool]]:
    """node_id -> (a correct answer lies in its subtree, a wrong answer does), itself included; dead ends
    count as neither (the reference's final_correct / final_wrong)."""
    below: dict[str, tuple[bool, bool]] = {}
    for node in sorted(tree.nodes.values(), key=lambda n: -n.depth):  # children before parents
        graded = node.terminal and node.exec_ok and node.visits > 0
        kids = [below[c] for c in node.children]
        below[node.node_id] = (
            bool(graded and node.correct) or any(r for r, _ in kids),
            bool(graded and not node.correct) or any(w for _, w in kids),
        )
    return below


def edit_distance(a: str, b: str, cap: int) -> int:
    """Levenshtein distance of two texts, computed only up to `cap` (any larger distance returns cap):
    the filter needs to know whether two steps differ by at least that many characters."""
    if abs(len(a) - len(b)) >= cap:
        return cap
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        if min(row) >= cap:
            return cap
    return min(row[-1], cap)


def _path_avg(tree: SearchTree, node: Node, below: dict[str, tuple[bool, bool]], best: bool) -> float:
    """Average Q from `node` down its best correct (or worst wrong) continuation, as the reference's
    build_partial_solution follows it."""
    side = 0 if best else 1
    path = [node]
    while True:
        nxt = [c for c in tree.children(path[-1]) if below[c.node_id][side]]
        if not nxt:
            return sum(n.q for n in path) / len(path)
        path.append(max(nxt, key=lambda c: c.q) if best else min(nxt, key=lambda c: c.q))


def _pair(
    tree: SearchTree,
    kind: str,
    prefix: str,
    chosen: tuple[str, float, str],
    rejected: tuple[str, float, str],
    counts: tuple[int, int],
) -> dict[str, Any]:
    (c_text, c_q, c_id), (r_text, r_q, r_id) = chosen, rejected
    return {
        "pair_id": records.content_id(tree.tree_id, kind, c_id, r_id),
        "problem_id": tree.problem_id,
        "tree_id": tree.tree_id,
        "round": tree.round,
        "prefix": prefix,
        "chosen": c_text,
        "rejected": r_text,
        "chosen_q": c_q,
        "rejected_q": r_q,
        "final_step": kind == "final",
        "chosen_node_id": c_id,
        "rejected_node_id": r_id,
        "metadata": records.to_json({"kind": kind, "pos_count": counts[0], "neg_count": counts[1]}),
    }


def _sides(good: list[Any], bad: list[Any], mp: RStarParams) -> tuple[list[Any], list[Any]]:
    """The ranked candidates cut to pairs_per_side each, or pairs_when_one opposite a single step."""
    g, b = good[: mp.pairs_per_side], bad[: mp.pairs_per_side]
    if len(g) == 1:
        b = bad[: mp.pairs_when_one]
    if len(b) == 1:
        g = good[: mp.pairs_when_one]
    return g, b


def _distinct(chosen: str, rejected: str, mp: RStarParams) -> bool:
    cap = mp.pair_min_edit_distance
    return cap == 0 or edit_distance(chosen, rejected, cap) >= cap


def sibling_pairs(tree: SearchTree, fmt: FormatParams, mp: RStarParams) -> list[dict[str, Any]]:
    below = _answers_below(tree)
    out = []
    for parent in tree.nodes.values():
        kids = tree.runnable_children(parent)
        good = sorted((c for c in kids if below[c.node_id][0]), key=lambda c: (-c.q, c.node_id))
        bad = sorted((c for c in kids if below[c.node_id][1]), key=lambda c: (c.q, c.node_id))
        good, bad = _sides(good, bad, mp)
        if not good or not bad:
            continue
        prefix = prefix_text(tree, parent, fmt)
        for g, b in product(good, bad):
            g_text, b_text = step_text(g, fmt), step_text(b, fmt)
            if g.q - b.q < mp.pair_margin or not _distinct(g_text, b_text, mp):
                continue
            if mp.pair_path_check and _path_avg(tree, g, below, True) <= _path_avg(tree, b, below, False):
                continue
            out.append(
                _pair(
                    tree, "sibling", prefix, (g_text, g.q, g.node_id), (b_text, b.q, b.node_id), (len(good), len(bad))
                )
            )
    return out


def final_pairs(
    tree: SearchTree, trajectories: Sequence[dict[str, Any]], fmt: FormatParams, mp: RStarParams
) -> list[dict[str, Any]]:
    def whole(row: dict[str, Any]) -> tuple[str, float, str]:
        steps = [tree.nodes[i] for i in row["node_ids"][1:]]
        return "".join(step_text(n, fmt) for n in steps), row["avg_q"], row["node_ids"][-1]

    right, wrong = _sides(
        sorted((t for t in trajectories if t["correct"]), key=lambda t: (-t["avg_q"], t["trajectory_id"])),
        sorted((t for t in trajectories if not t["correct"]), key=lambda t: (t["avg_q"], t["trajectory_id"])),
        mp,
    )
    out = []
    for g, b in product(right, wrong):
        chosen, rejected = whole(g), whole(b)
        if g["avg_q"] - b["avg_q"] >= mp.pair_margin and _distinct(chosen[0], rejected[0], mp):
            out.append(_pair(tree, "final", tree.prompt, chosen, rejected, (len(right), len(wrong))))
    return out


def extract(trees: Iterable[SearchTree], fmt: FormatParams, mp: RStarParams) -> dict[str, list[dict[str, Any]]]:
    """Every table of a set of trees, rows ready for `records.validate`."""
    out: dict[str, list[dict[str, Any]]] = {"nodes": [], "trajectories": [], "pairs": []}
    for tree in trees:
        trajectories = trajectory_rows(tree, mp.top_k)
        out["nodes"] += node_rows(tree)
        out["trajectories"] += trajectories
        out["pairs"] += sibling_pairs(tree, fmt, mp) + final_pairs(tree, trajectories, fmt, mp)
    return out


def sft_rows(
    trajectories: Iterable[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    questions: Mapping[str, str],
    fmt: FormatParams,
    stage: str = "rstar_policy",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(`sft` rows, `rejected` rows) of the selected trajectories: the question as prompt and every step's
    segments as the search wrote them (`prefix_text` is the prompt followed by exactly this text), the
    sandbox's output blocks without loss. A trajectory whose problem or nodes are missing is rejected."""
    source = "trajectories"
    quarantine = Quarantine(stage)
    rows = []
    for t in trajectories:
        if not t["selected"]:
            continue
        missing = [i for i in t["node_ids"][1:] if i not in nodes]
        if t["problem_id"] not in questions:
            quarantine.reject("unknown_problem", dict(t), table="trajectories", detail=t["problem_id"])
            continue
        if missing:
            quarantine.reject("missing_node", dict(t), table="trajectories", detail=missing[0])
            continue
        steps = [nodes[i] for i in t["node_ids"][1:]]  # the root holds no step
        segments = [
            seg for n in steps for seg in step_segments(node_step(n["step_text"], n["code"], n["exec_output"]), fmt)
        ]
        rows.append(
            sft_row(
                source,
                t["trajectory_id"],
                t["problem_id"],
                questions[t["problem_id"]],
                segments,
                {"trajectory_id": t["trajectory_id"], "round": t["round"], "avg_q": t["avg_q"]},
            )
        )
    return rows, quarantine.take()


# ---- metrics ---------------------------------------------------------------------------------------


def round_metrics(
    nodes: Sequence[dict[str, Any]], trajectories: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """What `dvc metrics show` reports for a round, computed from the written tables."""
    trees = {n["tree_id"] for n in nodes}
    solved = {t["tree_id"] for t in trajectories if t["correct"]}
    roots = [json.loads(n["metadata"] or "{}") for n in nodes if n["parent_id"] is None]
    rollouts = sum(r.get("rollouts", 0) for r in roots)
    correct_per_tree: dict[str, int] = {}
    for t in trajectories:
        if t["correct"]:
            correct_per_tree[t["tree_id"]] = correct_per_tree.get(t["tree_id"], 0) + 1
    steps = [n for n in nodes if n["parent_id"] is not None]
    with_code = [n for n in steps if n["code"] is not None]
    dropped: dict[str, int] = {}  # sampled steps that are dead ends before any code ran, by why (mcts._parse)
    for n in steps:
        why = json.loads(n["metadata"] or "{}").get("dropped")
        if why:
            dropped[why] = dropped.get(why, 0) + 1
    return {
        "trees": len(trees),
        "solve_rate": round(len(solved) / len(trees), 4) if trees else None,
        "nodes": len(steps),
        "nodes_per_tree": round(len(steps) / len(trees), 2) if trees else None,
        "exec_ok_rate": round(sum(n["exec_ok"] for n in with_code) / len(with_code), 4) if with_code else None,
        "terminal_nodes": sum(n["terminal"] for n in steps),
        "dropped_steps": dict(sorted(dropped.items())),
        "trajectories": len(trajectories),
        "trajectories_per_tree": round(len(trajectories) / len(trees), 2) if trees else None,
        "correct_trajectories": sum(t["correct"] for t in trajectories),
        "correct_trajectories_per_solved_tree": round(sum(correct_per_tree.values()) / len(solved), 2)
        if solved
        else None,
        "solved_trees_with_2_correct": sum(c >= 2 for c in correct_per_tree.values()),
        "rollouts": rollouts,
        "rewalked_rollout_share": round(sum(r.get("rewalks", 0) for r in roots) / rollouts, 4) if rollouts else None,
        "exhausted_trees": sum(bool(r.get("exhausted")) for r in roots),
        "selected": sum(t["selected"] for t in trajectories),
        "pairs": len(pairs),
        "final_step_pairs": sum(p["final_step"] for p in pairs),
    }


def q_histogram(qs: Sequence[float], bins: int) -> list[dict[str, Any]]:
    """Counts of Q in `bins` equal bins over [-1, 1], for `dvc plots show` (x: q, y: count)."""
    counts = [0] * bins
    width = 2.0 / bins
    for q in qs:
        counts[min(bins - 1, max(0, int((q + 1.0) / width)))] += 1
    return [{"q": round(-1.0 + (i + 0.5) * width, 4), "count": c} for i, c in enumerate(counts)]
