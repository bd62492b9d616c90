"""The search tree of one problem: nodes, UCT selection, backup of terminal rewards.

A node is one step (a sentence and optionally its python code with that code's output). A rollout
walks from the root by UCT to a node that is not expanded yet (the driver expands it and the walk
goes on) or to a leaf: a terminal node (a boxed answer, graded: +1 correct, -1 wrong) or a dead
end (too deep, the policy ended its turn without an answer, no runnable child: -1). The leaf's
reward is added to every node on the path. A node whose code failed is kept for inspection but
is never selected, so never expanded.

Q is the mean reward of the rollouts through a node. From the round where a PPM is used, its score
initialises Q: it counts as one pseudo-rollout, so Q = (ppm + sum of rewards) / (visits + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tracemill import records

CORRECT_REWARD = 1.0
WRONG_REWARD = -1.0  # a wrong answer and a dead end alike


@dataclass
class Node:
    node_id: str
    parent_id: str | None
    depth: int
    step_text: str
    code: str | None = None
    exec_output: str | None = None
    exec_ok: bool = True
    terminal: bool = False
    answer: str | None = None
    correct: bool | None = None
    ppm_score: float | None = None
    dead_end: str | None = None  # why a runnable, unanswered node ends its rollouts
    expanded: bool = False
    visits: int = 0
    value_sum: float = 0.0
    children: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def q(self) -> float:
        if self.ppm_score is None:
            return self.value_sum / self.visits if self.visits else 0.0
        return (self.ppm_score + self.value_sum) / (self.visits + 1)

    @property
    def is_leaf(self) -> bool:
        """A rollout that reaches this node ends here with a reward."""
        return self.terminal or self.dead_end is not None

    @property
    def reward(self) -> float:
        return CORRECT_REWARD if self.terminal and self.correct else WRONG_REWARD


@dataclass
class Tree:
    tree_id: str
    problem_id: str
    round: int
    prompt: str  # the rendered prompt the policy continues; pairs and PPM scores start from it
    nodes: dict[str, Node]
    root_id: str
    rollouts: int = 0  # finished rollouts

    @classmethod
    def new(cls, problem_id: str, round_: int, prompt: str) -> Tree:
        tree_id = records.content_id("mcts", problem_id, round_)
        root = Node(node_id=records.content_id(tree_id, "root"), parent_id=None, depth=0, step_text="")
        return cls(tree_id, problem_id, round_, prompt, {root.node_id: root}, root.node_id)

    @property
    def root(self) -> Node:
        return self.nodes[self.root_id]

    def add_child(self, parent: Node, step_text: str, code: str | None, **fields: Any) -> Node:
        """A new child of `parent`; an identical step (same text and code) returns the existing child."""
        node_id = records.content_id(self.tree_id, parent.node_id, step_text, code)
        if node_id in self.nodes:
            return self.nodes[node_id]
        child = Node(node_id=node_id, parent_id=parent.node_id, depth=parent.depth + 1, step_text=step_text, code=code, **fields)
        self.nodes[node_id] = child
        parent.children.append(node_id)
        return child

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[c] for c in node.children]

    def runnable_children(self, node: Node) -> list[Node]:
        return [c for c in self.children(node) if c.exec_ok]

    def path(self, node: Node) -> list[Node]:
        """Root to `node`, both included."""
        out = [node]
        while out[-1].parent_id is not None:
            out.append(self.nodes[out[-1].parent_id])
        return out[::-1]

    def walk(self, c: float, max_depth: int) -> Node:
        """Follow UCT from the root to a node to expand or a leaf. Nothing changes between the
        expansions of one rollout except the new children, so walking again from the root after an
        expansion continues the same rollout."""
        node = self.root
        while not node.is_leaf:
            if not node.expanded:
                if node.depth >= max_depth:
                    node.dead_end = "max_depth"
                    break
                return node
            child = select_child(self, node, c)
            if child is None:
                node.dead_end = "no_runnable_child"
                break
            node = child
        return node

    def backup(self, leaf: Node) -> float:
        """Add the leaf's reward to every node from the root to it; one rollout is finished."""
        reward = leaf.reward
        for node in self.path(leaf):
            node.visits += 1
            node.value_sum += reward
        self.rollouts += 1
        return reward


def uct(child: Node, parent_visits: int, c: float) -> float:
    """Q + c * sqrt(ln N(parent) / N(child)); an unvisited child comes first."""
    if child.visits == 0:
        return math.inf
    return child.q + c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def select_child(tree: Tree, node: Node, c: float) -> Node | None:
    """The runnable child with the highest UCT; ties (unvisited children) go to the higher PPM score,
    then to the child sampled first, so the search is deterministic."""
    runnable = tree.runnable_children(node)
    if not runnable:
        return None
    order = {child.node_id: i for i, child in enumerate(runnable)}
    return max(runnable, key=lambda ch: (uct(ch, node.visits, c), ch.ppm_score if ch.ppm_score is not None else 0.0, -order[ch.node_id]))
