"""The search tree of one problem: nodes, UCT selection, rewards set once where a leaf is created.

A node is one step (a sentence and optionally its python code with that code's output). Rollouts
follow rStar-Math's reference code (`rstar_deepthink/agents/mcts.py`, `nodes/mcts_node.py`):

- A leaf is evaluated once, when it is created: a terminal node (a boxed answer, graded: +1 correct,
  -1 wrong) adds its reward to every node from the root to it; a dead end (too deep, the policy ended
  its turn without an answer, no runnable child) takes -1 on itself only, as the reference's invalid
  final answers do. A leaf is never selected again, and a node whose children are all closed is
  closed itself, so no rollout re-walks a finished path.
- A rollout walks from the root by UCT over open children to a node not expanded yet; the driver
  expands it and the same rollout goes on from there among the new children. It ends where no open
  child is left (its last expansion made only leaves) and the next one starts at the root. Every
  rollout therefore ends having created at least one leaf; `rewalks` counts those that did not.
- Without a PPM an unvisited child has Q 0 and no exploration bonus (the reference's `puct`). With a
  PPM a new runnable child gets its score as a first visit (N = 1, Q = score), so the PPM decides
  which child the next walk takes; terminal nodes keep the rule-based reward.

A node whose code failed is kept for inspection but is never selected, so never expanded.
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
    closed: bool = False  # a leaf, a failed step, or every child closed: no rollout enters it again
    visits: int = 0
    value_sum: float = 0.0
    children: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_leaf(self) -> bool:
        """A rollout that creates this node has its reward here."""
        return self.terminal or self.dead_end is not None

    @property
    def reward(self) -> float:
        return CORRECT_REWARD if self.terminal and self.correct else WRONG_REWARD

    def update(self, value: float) -> None:
        self.visits += 1
        self.value_sum += value


@dataclass
class SearchTree:
    tree_id: str
    problem_id: str
    round: int
    prompt: str  # the rendered prompt the policy continues; pairs and PPM scores start from it
    nodes: dict[str, Node]
    root_id: str
    rollouts: int = 0  # finished rollouts
    rewalks: int = 0  # finished rollouts that created no leaf (re-walked old paths only)
    leaves: int = 0  # leaves evaluated so far
    cursor: str = ""  # where the current rollout stands; the root between rollouts
    _leaves_at_start: int = 0

    @classmethod
    def new(cls, problem_id: str, round_: int, prompt: str) -> SearchTree:
        tree_id = records.content_id("mcts", problem_id, round_)
        root = Node(node_id=records.content_id(tree_id, "root"), parent_id=None, depth=0, step_text="")
        return cls(tree_id, problem_id, round_, prompt, {root.node_id: root}, root.node_id, cursor=root.node_id)

    @property
    def root(self) -> Node:
        return self.nodes[self.root_id]

    @property
    def exhausted(self) -> bool:
        """Every path is finished: another rollout would only re-walk leaves."""
        return self.root.closed

    def add_child(self, parent: Node, step_text: str, code: str | None, **fields: Any) -> Node:
        """A new child of `parent`; an identical step (same text and code) returns the existing child."""
        node_id = records.content_id(self.tree_id, parent.node_id, step_text, code)
        if node_id in self.nodes:
            return self.nodes[node_id]
        child = Node(
            node_id=node_id, parent_id=parent.node_id, depth=parent.depth + 1, step_text=step_text, code=code, **fields
        )
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

    # ---- rollouts ---------------------------------------------------------------------------------

    def walk(self, c: float) -> Node | None:
        """Continue the current rollout by UCT over open children to a node to expand; None when the
        rollout has ended (no open child where it stands), which counts it and moves to the root."""
        node = self.nodes[self.cursor]
        while node.expanded:
            child = select_child(self, node, c)
            if child is None:
                self._end_rollout()
                return None
            node = child
        self.cursor = node.node_id
        return node

    def _end_rollout(self) -> None:
        self.rollouts += 1
        self.rewalks += self.leaves == self._leaves_at_start
        self._leaves_at_start = self.leaves
        self.cursor = self.root_id

    def expanded(self, node: Node) -> None:
        """`node`'s children are all added (and the leaves among them settled): close what is finished.
        A node with no runnable child is a dead end."""
        node.expanded = True
        for child in self.children(node):
            if not child.exec_ok:
                child.closed = True
        if not self.runnable_children(node):
            node.dead_end = "no_runnable_child"
            self.settle(node)
        else:
            self._close_up(node)

    def settle(self, leaf: Node) -> None:
        """Evaluate a leaf once, where it is created: an answer's reward goes up to the root, a dead end's
        stays on the node; either way no rollout enters it again."""
        if leaf.terminal:
            self.backup(leaf)
        else:
            leaf.update(WRONG_REWARD)
        self.leaves += 1
        leaf.closed = True
        if leaf.parent_id is None:
            self._end_rollout()  # the root itself is a dead end: the rollout in flight was the last
        else:
            self._close_up(self.nodes[leaf.parent_id])

    def backup(self, leaf: Node) -> float:
        """Add the leaf's reward to every node from the root to it."""
        reward = leaf.reward
        for node in self.path(leaf):
            node.update(reward)
        return reward

    def _close_up(self, node: Node) -> None:
        while not node.closed and node.expanded and all(c.closed for c in self.children(node)):
            node.closed = True
            if node.parent_id is None:
                self._end_rollout()  # the rollout in flight made the tree's last leaves: it is the last one
                return
            node = self.nodes[node.parent_id]

    def prime(self, node: Node, score: float) -> None:
        """The PPM's score of a new runnable node as its first visit (the reference's `update(value)`)."""
        node.ppm_score = score
        node.update(score)


def uct(child: Node, parent_visits: int, c: float) -> float:
    """Q + c * sqrt(ln N(parent) / N(child)); no exploration bonus while either count is 0 (the
    reference's `puct`), so an unvisited child scores 0 and a PPM-primed one its score."""
    if child.visits == 0 or parent_visits == 0:
        return child.q
    return child.q + c * math.sqrt(math.log(parent_visits) / child.visits)


def select_child(tree: SearchTree, node: Node, c: float) -> Node | None:
    """The open runnable child with the highest UCT, ties to the child sampled first (deterministic);
    None when every child is closed."""
    open_ = [ch for ch in tree.runnable_children(node) if not ch.closed]
    if not open_:
        return None
    return max(open_, key=lambda ch: uct(ch, node.visits, c))  # max keeps the first of equals
