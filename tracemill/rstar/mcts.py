"""rStar-Math's code-augmented MCTS, batched across problems.

All trees advance together. Each iteration walks every live tree by UCT until it reaches a node to
expand (rollout semantics in tree.py: a leaf is evaluated once where it is created and never entered
again), then one generation call carries the pending expansion of every tree, `children` samples
each, stopping at the end of a step or at a code block to run. Every candidate's code runs in the sandbox after the
code of its path (replayed in a fresh session, so no session outlives an iteration however large
the trees grow); a candidate whose code fails is kept with `exec_ok = false` and never expanded.
Terminal candidates (a boxed answer) are graded in one batch and backed up at once; with a PPM,
every new runnable non-leaf node of the whole batch is scored in one batched call on the PPM's
device, the score counting as the node's first visit. A node is continued from its own completion's handle,
so the backend never re-encodes a path it already holds.

Deterministic given the seed: each expansion samples with a seed derived from the node's id, and
the backends draw the same samples for a seeded request however it is batched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tracemill import records
from tracemill.errors import TracemillError
from tracemill.formats import (
    FormatParams,
    Step,
    is_terminal,
    last_boxed,
    malformed_step,
    output_block,
    parse_step,
    render_prompt,
)
from tracemill.llm import Backend, Completion, Request
from tracemill.rstar.extract import extract, prefix_text
from tracemill.rstar.params import RStarParams
from tracemill.rstar.tree import Node, SearchTree
from tracemill.runtime import Runtime
from tracemill.sandbox.base import Sandbox
from tracemill.store import Quarantine

if TYPE_CHECKING:  # grading loads mpmath: only open_runtime, which builds a grader, pays for it
    from tracemill.grading import Grader


class SearchError(TracemillError):
    """The search was asked to do something it must not (search an evaluation problem)."""


class Scorer(Protocol):
    """What the search asks of a PPM (train.ppm.PPMScorer): a score in [-1, 1] per `prefix + step` text."""

    def score_many(self, texts: Sequence[str]) -> list[float]: ...


SEED_BITS = 8  # hex digits of a node id hash used as its sampling seed (fits every backend's seed)


@dataclass
class SearchStats:
    generate_calls: int = 0
    expansions: int = 0  # requests sent (one per expanded node)
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generate_s: float = 0.0
    exec_s: float = 0.0
    grade_s: float = 0.0
    ppm_s: float = 0.0
    ppm_calls: int = 0  # one per expansion batch that made open nodes
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _Candidate:
    """One sampled step under `parent`, before it becomes a node."""

    tree: SearchTree
    parent: Node
    completion: Completion
    step: Step
    # why it can never be continued (length, empty, no_code, undecodable, after_answer) — kept with exec_ok false
    drop: str | None
    ended: bool  # the policy closed its turn after this step
    samples: int = 1
    exec_ok: bool = True
    exec_output: str | None = None
    exec_status: str | None = None
    answer: str | None = None
    correct: bool | None = None


@dataclass
class _Live:
    """What continuing a node needs: the completion that wrote it and the text that follows it."""

    completion: Completion
    append: str


@dataclass
class Search:
    backend: Backend
    sandbox: Sandbox
    grader: Grader
    fmt: FormatParams
    mp: RStarParams
    seed: int
    ppm: Scorer | None = None  # None: terminal-guided Q only
    last_round: bool = False  # unsolved trees get mp.escalate_rollouts more rollouts
    stats: SearchStats = field(default_factory=SearchStats)
    round_: int = 1
    _live: dict[str, _Live] = field(default_factory=dict)

    def run(self, problems: Sequence[dict[str, Any]], round_: int, show_progress: bool = True) -> list[SearchTree]:
        """Search a tree per problem; returns the trees with every node, visit count and Q."""
        start = time.perf_counter()
        self.round_ = round_
        by_id = {p["problem_id"]: p for p in problems}
        tokenizer = getattr(self.backend, "tokenizer", None)
        trees = [
            SearchTree.new(p["problem_id"], round_, render_prompt(p["question"], tokenizer, self.fmt, "steps"))
            for p in problems
        ]
        total = len(trees) * self._rollouts
        with _progress(show_progress, total) as advance:
            live = list(trees)
            while live:
                pending = []
                for tree in live:
                    before = tree.rollouts
                    node = self._advance(tree)
                    advance(tree.rollouts - before)
                    if node is not None:
                        pending.append((tree, node))
                live = [t for t, _ in pending]
                if pending:
                    self._expand(pending, by_id)
        self.backend.release([lv.completion for lv in self._live.values()])
        self._live.clear()
        self.stats.wall_s += time.perf_counter() - start
        return trees

    # ---- rollouts --------------------------------------------------------------------------------

    @property
    def _rollouts(self) -> int:
        return self.mp.rollouts_of(self.round_)

    def _budget(self, tree: SearchTree) -> int:
        """The tree's rollouts; in the last round a tree still unsolved after them gets the escalation."""
        base = self._rollouts
        if self.last_round and tree.rollouts >= base and not _solved(tree):
            return base + self.mp.escalate_rollouts
        return base

    def _advance(self, tree: SearchTree) -> Node | None:
        """The node the current rollout expands next, or None when the tree's budget is spent or every
        path is finished (a rollout that could only re-walk leaves is never started)."""
        while tree.rollouts < self._budget(tree) and not tree.exhausted:
            node = tree.walk(self.mp.uct_c)
            if node is not None:
                return node
        return None

    def _forget(self, node: Node) -> None:
        live = self._live.pop(node.node_id, None)
        if live is not None:
            self.backend.release([live.completion])

    # ---- one batched expansion -------------------------------------------------------------------

    def _expand(self, pending: list[tuple[SearchTree, Node]], problems: dict[str, dict[str, Any]]) -> None:
        requests = [self._request(tree, node) for tree, node in pending]
        t0 = time.perf_counter()
        outputs = self.backend.generate(requests)
        self.stats.generate_s += time.perf_counter() - t0
        self.stats.generate_calls += 1
        self.stats.expansions += len(requests)
        candidates: list[_Candidate] = []
        for (tree, node), outs in zip(pending, outputs, strict=True):
            self._forget(node)  # expanded once: its completion is never continued again
            for out in outs:
                self.stats.generated_tokens += out.generated_tokens
                self.stats.prompt_tokens += out.prompt_tokens
                self.stats.cached_prompt_tokens += out.cached_prompt_tokens
            candidates += self._dedupe([self._parse(tree, node, out) for out in outs])
        self._execute(candidates)
        self._grade(candidates, problems)
        children = [(c.tree, self._add(c)) for c in candidates]
        for tree, child in children:
            if child.exec_ok and child.is_leaf:
                tree.settle(child)  # graded (or a dead end) once, here; never selected again
        for tree, node in pending:
            tree.expanded(node)
        self._score([(tree, child) for tree, child in children if child.exec_ok and not child.is_leaf])

    def _request(self, tree: SearchTree, node: Node) -> Request:
        common: dict[str, Any] = dict(
            stop=self.fmt.step_stop,
            n=self.mp.children,
            temperature=self.mp.temperature_of(self.round_),
            top_p=self.mp.top_p,
            max_tokens=self.mp.max_step_tokens,
            seed=int(records.content_id(self.seed, node.node_id, length=SEED_BITS), 16),
        )
        if node.node_id == tree.root_id:
            return Request(prompt=tree.prompt, **common)
        live = self._live[node.node_id]
        return Request(continues=live.completion, append=live.append, **common)

    def _parse(self, tree: SearchTree, parent: Node, out: Completion) -> _Candidate:
        step = parse_step(out.text, self.fmt)
        drop = None
        if out.finish_reason == "length":
            drop = "length"
        elif not step.text and step.code is None:
            drop = "empty"
        elif out.stop_reason in self.fmt.tool_stop and step.code is None:
            drop = "no_code"
        elif self.mp.drop_malformed:
            drop = malformed_step(step, self.fmt)
        return _Candidate(tree, parent, out, Step(step.text, step.code), drop, ended=out.finish_reason == "eos")

    def _dedupe(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Identical samples under one parent become one candidate that counts them."""
        first: dict[tuple[str, str | None], _Candidate] = {}
        for c in candidates:
            key = (c.step.text, c.step.code)
            if key in first:
                first[key].samples += 1
                self.backend.release([c.completion])
            else:
                first[key] = c
        return list(first.values())

    def _execute(self, candidates: list[_Candidate]) -> None:
        runs = [c for c in candidates if c.drop is None and c.step.code is not None]
        for c in candidates:
            c.exec_ok = c.drop is None
        if not runs:
            return
        t0 = time.perf_counter()
        jobs = [
            [code for code in [*(n.code for n in c.tree.path(c.parent)[1:]), c.step.code] if code is not None]
            for c in runs
        ]
        for c, results in zip(runs, self.sandbox.run_many(jobs), strict=True):
            result = results[-1]
            shown = result.stdout if result.ok else result.stdout + result.stderr
            c.exec_ok, c.exec_status = result.ok, result.status
            c.exec_output = shown[-self.mp.max_output_chars :].rstrip("\n")
        self.stats.exec_s += time.perf_counter() - t0

    def _grade(self, candidates: list[_Candidate], problems: dict[str, dict[str, Any]]) -> None:
        answered = [c for c in candidates if c.exec_ok and is_terminal(c.step, self.fmt)]
        if not answered:
            return
        t0 = time.perf_counter()
        verdicts = self.grader.grade_many([(problems[c.tree.problem_id], c.step.text) for c in answered])
        for c, v in zip(answered, verdicts, strict=True):
            c.answer, c.correct = v.predicted or last_boxed(c.step.text, self.fmt), v.correct
        self.stats.grade_s += time.perf_counter() - t0

    def _add(self, c: _Candidate) -> Node:
        meta: dict[str, Any] = {
            "samples": c.samples,
            "finish_reason": c.completion.finish_reason,
            "generated_tokens": c.completion.generated_tokens,
        }
        if c.drop:
            meta["dropped"] = c.drop
        if c.exec_status:
            meta["exec_status"] = c.exec_status
        terminal = is_terminal(c.step, self.fmt)
        node = c.tree.add_child(
            c.parent,
            c.step.text,
            c.step.code,
            exec_output=c.exec_output,
            exec_ok=c.exec_ok,
            terminal=terminal,
            answer=c.answer,
            correct=c.correct,
            meta=meta,
        )
        if c.exec_ok and not terminal and c.ended:
            node.dead_end = "ended_without_answer"
        elif c.exec_ok and not terminal and node.depth >= self.mp.max_depth:
            node.dead_end = "max_depth"
        if node.exec_ok and not node.is_leaf and node.depth < self.mp.max_depth:
            self._live[node.node_id] = _Live(c.completion, self._append(node))
        else:
            self.backend.release([c.completion])
        return node

    def _append(self, node: Node) -> str:
        """The text after a node's generated part: its output block (if it ran code) and the delimiter."""
        shown = output_block(node.exec_output or "", self.fmt) if node.code is not None else ""
        return f"{shown}{self.fmt.step_delimiter}\n"

    def _score(self, new: list[tuple[SearchTree, Node]]) -> None:
        """The PPM's scores of every new open node of the batch, in one call: each is the node's first visit."""
        if self.ppm is None or not new:
            return
        t0 = time.perf_counter()
        texts = [prefix_text(tree, node, self.fmt) for tree, node in new]
        for (tree, node), score in zip(new, self.ppm.score_many(texts), strict=True):
            tree.prime(node, float(score))
        self.stats.ppm_s += time.perf_counter() - t0
        self.stats.ppm_calls += 1


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over rollouts, as `advance(n)`; a no-op when hidden."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]mcts rollouts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("rollouts", total=total)
        yield lambda n: progress.advance(task, n)


def _solved(tree: SearchTree) -> bool:
    return any(n.terminal and n.correct for n in tree.nodes.values())


def search(
    problems: Sequence[dict[str, Any]],
    rt: Runtime,
    mp: RStarParams,
    round_: int,
    seed: int,
    ppm: Scorer | None = None,
    show_progress: bool = True,
) -> tuple[list[SearchTree], SearchStats]:
    """Search one tree per problem with a runtime's backend, sandbox, grader and formats."""
    s = Search(rt.backend, rt.sandbox, rt.grader, rt.fmt, mp, seed, ppm, last_round=round_ == mp.rounds)
    return s.run(problems, round_, show_progress), s.stats


def shard_tables(
    problems: Sequence[dict[str, Any]],
    rt: Runtime,
    mp: RStarParams,
    round_: int,
    seed: int,
    ppm: Scorer | None = None,
    show_progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """The tables of one shard of a round: problems without a reference answer are quarantined (a
    tree needs its terminals graded), the rest searched together."""
    leaked = sorted({p["problem_id"] for p in problems if p.get("split") != "train"})
    if leaked:
        # An evaluation problem in a search tree ends up in the trajectories, the pairs and every policy
        # trained on them: refuse the shard rather than contaminate the evaluation.
        raise SearchError(
            f"mcts: {len(leaked)} problem(s) outside the train split, e.g. '{leaked[0]}' — only split "
            "'train' is ever searched; fix rstar.sources / the source's split in params.yaml"
        )
    quarantine = Quarantine("rstar_search")
    usable = []
    for p in problems:
        if p.get("answer"):
            usable.append(p)
        else:
            quarantine.reject(
                "no_reference_answer", {"problem_id": p["problem_id"]}, table="problems", source=p["source"]
            )
    trees = search(usable, rt, mp, round_, seed, ppm, show_progress)[0] if usable else []
    return {**extract(trees, rt.fmt, mp), "rejected": quarantine.take()}
