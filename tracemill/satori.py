"""Satori's data: COAT traces from rStar-style search trees, and restart-and-explore (RAE) states from
the format-tuned policy's own samples (the paper's Algorithm 1).

A search tree already holds what Chain-of-Action-Thought needs, in Satori's four kinds: a correct path
(`plain`: steps joined by <|continue|>); a wrong step beside a right sibling (`reflect`: the wrong step,
<|reflect|>, a check that finds the error, the right step and its continuation); a right step checked
and confirmed (`confirm`: the step, <|reflect|>, a check that agrees, then the rest of the path); and a
failed branch beside a successful one (`explore`: the branch to a wrong answer, <|reflect|>, a check
that refutes it, <|explore|>, the alternative). Every check is real: code from the tree runs in the
sandbox after every earlier step of the trace, and the critique quotes what it printed. Every COAT row
records the node ids it was built from, so it can be traced back to the tree.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemill import records
from tracemill.errors import ParamsError
from tracemill.formats import META_ACTIONS, FormatParams, code_block, output_block, ran_cells, split_tir
from tracemill.generate import GenParams, response_text, sample_shard
from tracemill.params import above, at_least, bounded
from tracemill.rl import RLParams
from tracemill.runtime import Runtime
from tracemill.sandbox.base import Sandbox
from tracemill.tir import LoopLimits
from tracemill.train.examples import sft_row
from tracemill.train.labels import IGNORE_INDEX
from tracemill.train.params import PPMParams

CONTINUE, REFLECT, EXPLORE = META_ACTIONS
COAT_KINDS = ("plain", "reflect", "confirm", "explore")
CHECKED_KINDS = ("reflect", "confirm", "explore")  # the kinds whose <|reflect|> step runs a check


def _default_templates() -> dict[str, list[str]]:
    # {printed}: the last line the check printed; {got}: what the wrong step or answer gave.
    return {
        "reflect": [
            "It prints {printed}, but this step got {got}, so the step is wrong.",
            "The check gives {printed}, not {got}, so this step is wrong; let me fix it.",
        ],
        "confirm": [
            "It prints {printed} again, which agrees with this step, so the step is right.",
            "The check gives {printed} as before, so this step holds.",
        ],
        "explore": [
            "It prints {printed}, which does not fit the answer {got}, so this approach is wrong.",
            "The check gives {printed}, not {got}, so the answer is wrong and another way is needed.",
        ],
    }


def _default_meta_init() -> dict[str, str]:
    return {"<|continue|>": "<end_of_step>", "<|reflect|>": "Wait, let me check.", "<|explore|>": "Alternatively,"}


@dataclass(frozen=True)
class CoatParams:
    max_total: int = at_least(0, default=10_000)  # Satori: about 10K demonstrations for format tuning
    max_per_problem: int = at_least(1, default=6)
    # Shares of the four kinds (the paper publishes no mix; its demonstrations hold every kind)
    mix: dict[str, float] = at_least(
        0, default_factory=lambda: {"plain": 0.3, "reflect": 0.2, "confirm": 0.3, "explore": 0.2}
    )
    # The one sentence after a check's code and output, per checked kind; one is picked by a hash of the node
    critique_templates: dict[str, list[str]] = field(default_factory=_default_templates)
    wrong_q_max: float = bounded(
        -1, 1, default=0.0
    )  # a step is wrong when its Q (in [-1, 1]) is at most this (or its subtree only fails)
    # Format tuning starts each meta-action token's embedding at the mean of its phrase (with_meta_tokens).
    meta_init: dict[str, str] = field(default_factory=_default_meta_init)
    # Then, before full format tuning, trains only the meta-action rows of the embeddings on the COAT
    # set (every other weight frozen) for this many epochs; 0: no warm-up (paper)
    meta_warmup_epochs: int = at_least(0, default=0)
    meta_warmup_lr: float = above(0, default=3e-2)
    # A confirm reflects after a step this many or fewer back from its trajectory's end, where the restart
    # states reflect (rae_states.max_backup_steps); 0: after the answer only
    confirm_backup_steps: int = at_least(0, default=2)

    def check(self) -> None:
        unknown = set(self.mix) - set(COAT_KINDS)
        if unknown:
            raise ParamsError(
                f"params 'satori.coat.mix.{sorted(unknown)[0]}' is not a COAT kind; allowed: {', '.join(COAT_KINDS)}"
            )
        if not sum(self.mix.values()):
            raise ParamsError("params 'satori.coat.mix' needs shares that do not all vanish")
        for kind in CHECKED_KINDS:
            if self.mix.get(kind) and not self.critique_templates.get(kind):
                raise ParamsError(
                    f"params 'satori.coat.critique_templates.{kind}' needs at least one template "
                    f"while 'satori.coat.mix.{kind}' is above 0"
                )
        strange = sorted(set(self.meta_init) - set(META_ACTIONS))
        if strange:
            raise ParamsError(
                f"params 'satori.coat.meta_init' names '{strange[0]}', not a meta-action; "
                f"allowed: {', '.join(META_ACTIONS)}"
            )


def _rae_sampling() -> GenParams:
    return GenParams(split="train", max_problems=10_000, temperature=0.6, top_p=0.95, k=8)


@dataclass(frozen=True)
class RaeParams:
    """Restart-and-explore states by the paper's Algorithm 1, from the format-tuned policy's own samples."""

    # The policy's samples per training problem; a problem gives restart states only where they hold a
    # correct and a wrong trajectory (Satori: T=0.6, as its RL rollouts).
    sample: GenParams = field(default_factory=_rae_sampling)
    max_backup_steps: int = at_least(0, default=2)  # Satori: back up at most T=2 steps from a trajectory's end
    bare_problems: bool = True  # Satori: the problems themselves are restart states too (plain RL prompts)
    max_tool_calls: int = at_least(0, default=6)


def _distill_sampling() -> GenParams:
    return GenParams(split="train", max_problems=10_000, temperature=0.6, top_p=0.95, k=16)


@dataclass(frozen=True)
class DistillParams:
    """Satori's small-model distillation: the last RL policy's correct traces on training problems teach a
    smaller model."""

    # A model folder for the student; null: the base policy cut to its first `student_layers` layers.
    student: str | None = None
    student_layers: int = at_least(1, default=1)
    sample: GenParams = field(default_factory=_distill_sampling)  # the RL policy's samples (paper-style k=16, T=0.6)
    max_tool_calls: int = at_least(0, default=6)
    max_per_problem: int = at_least(1, default=1)  # correct traces kept per problem


def _round2_sampling() -> GenParams:
    return GenParams(split="train", max_problems=10_000, temperature=0.6, top_p=0.95, k=8)


@dataclass(frozen=True)
class Round2Params:
    """Satori's second round of self-improvement: the round-1 RL policy distilled back into the base (SFT
    on its correct samples of the training problems, with `train.format_tune`'s knobs), then RL again
    from the bare problems alone (no restart states) at a higher temperature with more samples per
    prompt; every other RL knob is `satori.rl`'s."""

    # The RL policy's samples per training problem; the problems it samples are round 2's RL prompts too.
    sample: GenParams = field(default_factory=_round2_sampling)
    max_tool_calls: int = at_least(0, default=6)
    max_per_problem: int = at_least(1, default=1)  # correct samples kept per problem for the SFT
    temperature: float = above(0, default=1.2)  # paper: round 2 samples at 1.2
    num_generations: int = at_least(2, default=8)  # paper: 8 samples per prompt
    per_device_train_batch_size: int = at_least(1, default=8)
    max_steps: int | None = at_least(1, default=None)  # None: satori.rl.max_steps

    def check(self) -> None:
        if self.per_device_train_batch_size % self.num_generations:
            raise ParamsError(
                f"params 'satori.round2.per_device_train_batch_size' = {self.per_device_train_batch_size} "
                "must be a multiple of "
                f"'satori.round2.num_generations' = {self.num_generations} (GRPO groups complete per batch)"
            )

    def rl(self, first: RLParams) -> RLParams:
        """Round 2's RL knobs: round 1's with this round's sampling, group and steps."""
        return dataclasses.replace(
            first,
            temperature=self.temperature,
            num_generations=self.num_generations,
            per_device_train_batch_size=self.per_device_train_batch_size,
            max_steps=self.max_steps or first.max_steps,
        )


@dataclass(frozen=True)
class SatoriParams:
    """The `satori` section: COAT synthesis, restart-and-explore states, the outcome reward model, RL in two
    rounds, distillation to a smaller model."""

    coat: CoatParams = field(default_factory=CoatParams)
    rae_states: RaeParams = field(default_factory=RaeParams)
    # The outcome reward model behind RL's preference bonus: Bradley-Terry on the rae_states samples
    # (train/ppm.py's trainer, the prompt as prefix, a correct response chosen over a wrong one).
    orm: PPMParams = field(default_factory=PPMParams)
    rl: RLParams = field(default_factory=RLParams)  # round 1, from the restart states
    round2: Round2Params = field(default_factory=Round2Params)
    distill: DistillParams = field(default_factory=DistillParams)


def with_meta_tokens(model_dir: str | Path, out_dir: Path, init: dict[str, str]) -> tuple[Path, list[str]]:
    """The policy format tuning starts from: `model_dir` with the meta-action tokens as special tokens
    (added, and the embeddings resized, when its tokenizer lacks them), each token's embedding row set
    to the mean embedding of its phrase in `init`, written to out_dir. A token no text has shown the
    model (new, or never in its pretraining corpus) has only been pushed down by the softmax; starting
    it where its phrase sits lets a few thousand demonstrations teach it. Returns (folder, added)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    missing = [t for t in META_ACTIONS if t not in tokenizer.get_vocab()]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    tables = {model.get_input_embeddings().weight, model.get_output_embeddings().weight}  # one when tied
    with torch.no_grad():
        # Only the meta-actions are looked up: CoatParams.check turns any other key away when params load.
        for token, phrase in ((t, init[t]) for t in META_ACTIONS if t in init):
            ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
            row = tokenizer.convert_tokens_to_ids(token)
            for weight in tables:
                weight[row] = weight[ids].mean(dim=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir, missing


def warm_meta_tokens(
    model_dir: Path, out_dir: Path, rows: Sequence[dict[str, Any]], tp: Any, fmt: FormatParams, epochs: int, lr: float
) -> dict[str, Any]:
    """Train only the meta-action tokens' embedding rows on the format-tuning rows (`tp` gives the
    prompt style, max length, micro-batch and seed), everything else frozen; save to out_dir.

    A small policy that meets three new tokens in full fine-tuning has to move every weight at once
    to place them, and at a learning rate high enough for that it forgets how to copy numbers from
    the question and from tool output. Placing the tokens first lets full tuning run gently after.
    Returns {"epochs", "learning_rate", "loss_first", "loss_last"} (mean loss of the first and last epoch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tracemill.train.hf import pad
    from tracemill.train.sft import sft_features

    torch.manual_seed(tp.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    features, _ = sft_features(tokenizer, rows, tp, fmt)
    rows_of = torch.tensor(tokenizer.convert_tokens_to_ids(list(META_ACTIONS)))
    tables = list({model.get_input_embeddings().weight, model.get_output_embeddings().weight})  # one when tied
    for param in model.parameters():
        param.requires_grad_(False)
    mask = torch.zeros_like(tables[0][:, :1])
    mask[rows_of] = 1.0
    for weight in tables:
        weight.requires_grad_(True)
        weight.register_hook(lambda grad: grad * mask)
    opt = torch.optim.Adam(tables, lr=lr)
    gen = torch.Generator().manual_seed(tp.seed)
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(features), generator=gen).tolist()
        total = 0.0
        for start in range(0, len(order), tp.micro_batch_size):
            batch = [features[i] for i in order[start : start + tp.micro_batch_size]]
            loss = model(
                input_ids=pad([f["input_ids"] for f in batch], tokenizer.pad_token_id),
                labels=pad([f["labels"] for f in batch], IGNORE_INDEX),
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(batch)
        losses.append(total / max(1, len(features)))
        print(f"format_tune: meta-token warm-up epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "epochs": epochs,
        "learning_rate": lr,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }


def cut_layers(model_dir: str | Path, out_dir: Path, layers: int) -> Path:
    """A smaller student for distillation: `model_dir` with only its first `layers` decoder layers
    (embeddings, final norm and head kept), saved with its tokenizer to out_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    have = model.config.num_hidden_layers
    if not 1 <= layers <= have:
        raise ParamsError(
            f"params 'satori.distill.student_layers' = {layers} must be in 1..{have} (the base policy's layers)"
        )
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return out_dir


def step_body(node: dict[str, Any], fmt: FormatParams) -> str:
    """A node as text inside a COAT trace: its sentence, code and output, without a step delimiter."""
    body = node["step_text"].rstrip() + "\n"
    if node.get("code"):
        body += code_block(node["code"], fmt)
    if node.get("exec_output") is not None and node.get("code"):
        body += output_block(node["exec_output"], fmt)
    return body


def join(bodies: Sequence[str], actions: Sequence[str]) -> str:
    """Interleave meta-actions and step bodies: actions[i] opens bodies[i]."""
    return "".join(f"{a}{b}" for a, b in zip(actions, bodies))


_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in META_ACTIONS) + ")")


def parse(text: str) -> list[tuple[str, str]]:
    """A COAT text back into (meta-action, step body) pairs."""
    parts = _SPLIT.split(text)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def coat_segments(text: str, fmt: FormatParams) -> list[dict[str, Any]]:
    """A COAT text as `records.segment`s for SFT: meta-actions, sentences and code carry the loss, the
    sandbox's output blocks do not (as in every other tool-integrated training set). Code stays in the
    model segments around it: a COAT step is one piece of model text, its code included."""
    return split_tir(text, fmt, blocks=("output",))


def coat_sft_rows(rows: Sequence[dict[str, Any]], questions: dict[str, str], fmt: FormatParams) -> list[dict[str, Any]]:
    """`sft` rows for format tuning: the question as prompt, the COAT trace as the answer."""
    return [
        sft_row(
            "coat",
            r["coat_id"],
            r["problem_id"],
            questions[r["problem_id"]],
            coat_segments(r["text"], fmt),
            {"kind": r["kind"]},
        )
        for r in rows
        if r["problem_id"] in questions
    ]


class TreeRows:
    """A searched tree read back from its written `nodes` rows: children by parent, paths, best and
    failed leaves below a node (rstar.SearchTree is the live tree the search grows)."""

    def __init__(self, nodes: Sequence[dict[str, Any]]) -> None:
        self.nodes = {n["node_id"]: n for n in nodes}
        self.children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for n in sorted(nodes, key=lambda n: n["node_id"]):
            self.children[n["parent_id"]].append(n)
        self.problem_id = nodes[0]["problem_id"]

    def path(self, node_id: str) -> list[dict[str, Any]]:
        """Root-exclusive path of steps ending at node_id (the root holds no step)."""
        out = []
        node = self.nodes.get(node_id)
        while node is not None and node["parent_id"] is not None:
            out.append(node)
            node = self.nodes.get(node["parent_id"])
        return out[::-1]

    def correct_leaf_below(self, node: dict[str, Any]) -> dict[str, Any] | None:
        """The best (highest Q) correct terminal in node's subtree, following highest-Q children."""
        if node["terminal"]:
            return node if node["correct"] else None
        for child in sorted(self.children[node["node_id"]], key=lambda c: (-c["q"], c["node_id"])):
            if child["exec_ok"]:
                leaf = self.correct_leaf_below(child)
                if leaf is not None:
                    return leaf
        return None

    def failed_leaf_below(self, node: dict[str, Any]) -> dict[str, Any] | None:
        if node["terminal"]:
            return None if node["correct"] else node
        for child in sorted(self.children[node["node_id"]], key=lambda c: (c["q"], c["node_id"])):
            if child["exec_ok"]:
                leaf = self.failed_leaf_below(child)
                if leaf is not None:
                    return leaf
        return None


# check(jobs) -> per job the sandbox's stdout of its last cell, None when a cell failed (`sandbox_check`)
CheckFn = Callable[[list[tuple[str, ...]]], list[str | None]]


def sandbox_check(sandbox: Sandbox) -> CheckFn:
    """Each job's cells in a fresh sandbox session, in order, as the trace they stand for would run them;
    the last cell's stdout is what the check printed."""

    def check(jobs: list[tuple[str, ...]]) -> list[str | None]:
        results = sandbox.run_many([list(j) for j in jobs])
        return [r[-1].stdout if all(x.ok for x in r) else None for r in results]

    return check


@dataclass(frozen=True)
class Draft:
    """A COAT trace before its check has run: the steps before the <|reflect|> step (with their actions),
    the check's code, what the checked step or answer gave, the steps after it, their source nodes."""

    kind: str
    before: list[tuple[str, dict[str, Any]]]
    code: str
    got: str
    after: list[tuple[str, dict[str, Any]]]
    node_ids: list[str]
    key: str  # picks the template
    meta: dict[str, Any]

    def cells(self) -> tuple[str, ...]:
        """Every earlier step's code, then the check: one sandbox session, as the trace runs."""
        return tuple(n["code"] for _, n in self.before if n.get("code")) + (self.code,)


def _coat_row(problem_id: str, kind: str, text: str, node_ids: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "coat_id": records.content_id("coat", problem_id, kind, node_ids),
        "problem_id": problem_id,
        "kind": kind,
        "text": text,
        "correct": True,  # every kind ends on a search path that reached the right answer
        "source_node_ids": node_ids,
        "metadata": records.to_json(meta),
    }


def plain_traces(tree: TreeRows, trajectories: Sequence[dict[str, Any]], fmt: FormatParams) -> list[dict[str, Any]]:
    out = []
    for traj in sorted(trajectories, key=lambda t: (-t["avg_q"], t["trajectory_id"])):
        if not traj["correct"]:
            continue
        steps = [tree.nodes[i] for i in traj["node_ids"] if tree.nodes[i]["parent_id"] is not None]
        text = join([step_body(n, fmt) for n in steps], [CONTINUE] * len(steps))
        out.append(
            _coat_row(
                tree.problem_id, "plain", text, [n["node_id"] for n in steps], {"trajectory_id": traj["trajectory_id"]}
            )
        )
    return out


def _summary(node: dict[str, Any]) -> str:
    out = (node.get("exec_output") or "").strip().splitlines()
    return out[-1] if out else (node.get("answer") or node["step_text"].strip()[:80])


def _first_code(nodes: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((n for n in nodes if n.get("code")), None)


def _continued(nodes: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(CONTINUE, n) for n in nodes]


def _wrong_and_right(
    tree: TreeRows, kids: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Among runnable siblings: those with no correct answer below, and those with one (with that leaf)."""
    runnable = [k for k in kids if k["exec_ok"]]
    return (
        [k for k in runnable if tree.correct_leaf_below(k) is None],
        [(k, leaf) for k in runnable if (leaf := tree.correct_leaf_below(k)) is not None],
    )


def reflect_drafts(tree: TreeRows, cp: CoatParams) -> list[Draft]:
    """A wrong step, <|reflect|>, a check that refutes it (the right sibling's path's first code, else the
    last code before the fork), then the right sibling and its path."""
    out = []
    for parent_id, kids in sorted(tree.children.items(), key=lambda kv: str(kv[0])):
        failing, right = _wrong_and_right(tree, kids)
        wrong = [k for k in failing if k["q"] <= cp.wrong_q_max]
        if not wrong or not right:
            continue
        bad = min(wrong, key=lambda k: (k["q"], k["node_id"]))
        good, leaf = max(right, key=lambda kl: (kl[0]["q"], kl[0]["node_id"]))
        prefix = tree.path(parent_id) if parent_id is not None else []
        fix = tree.path(leaf["node_id"])[len(prefix) :]
        source = _first_code(fix) or _first_code(prefix[::-1])
        if source is None:
            continue
        out.append(
            Draft(
                "reflect",
                _continued(prefix + [bad]),
                source["code"],
                _summary(bad),
                _continued(fix),
                [n["node_id"] for n in prefix + [bad] + fix],
                bad["node_id"],
                {"wrong_node_id": bad["node_id"], "fixed_node_id": good["node_id"], "check_node_id": source["node_id"]},
            )
        )
    return out


def confirm_drafts(tree: TreeRows, trajectories: Sequence[dict[str, Any]], cp: CoatParams) -> list[Draft]:
    """A correct trajectory with <|reflect|> after one of its last steps (0..cp.confirm_backup_steps back
    from its end, drawn per trajectory, as rae_states cuts its restart states), the last code at or before
    that step run again and agreeing, then the rest of the path; after the answer step, the answer again."""
    out = []
    for traj in sorted(trajectories, key=lambda t: (-t["avg_q"], t["trajectory_id"])):
        steps = [tree.nodes[i] for i in traj["node_ids"] if tree.nodes[i]["parent_id"] is not None]
        if not traj["correct"] or not steps:
            continue
        at = len(steps) - _backup(len(steps), cp.confirm_backup_steps, "confirm", traj["trajectory_id"])
        checked = _first_code(steps[:at][::-1])
        if checked is None:
            continue
        out.append(
            Draft(
                "confirm",
                _continued(steps[:at]),
                checked["code"],
                _summary(checked),
                _continued(steps[at:] or steps[-1:]),
                [n["node_id"] for n in steps],
                checked["node_id"],
                {"trajectory_id": traj["trajectory_id"], "confirmed_node_id": checked["node_id"], "reflect_after": at},
            )
        )
    return out


def explore_drafts(tree: TreeRows) -> list[Draft]:
    """A whole failed branch to a wrong answer, <|reflect|>, a check that refutes the answer (the
    alternative's first code), <|explore|>, then the sibling branch that succeeds."""
    out = []
    for parent_id, kids in sorted(tree.children.items(), key=lambda kv: str(kv[0])):
        failing, success = _wrong_and_right(tree, kids)
        failed = [(k, leaf) for k in failing if (leaf := tree.failed_leaf_below(k)) is not None]
        if not failed or not success:
            continue
        _, bad_leaf = min(failed, key=lambda kl: (kl[0]["q"], kl[0]["node_id"]))
        _, good_leaf = max(success, key=lambda kl: (kl[0]["q"], kl[0]["node_id"]))
        prefix = tree.path(parent_id) if parent_id is not None else []
        branch = tree.path(bad_leaf["node_id"])[len(prefix) :]
        alt = tree.path(good_leaf["node_id"])[len(prefix) :]
        source = _first_code(alt)
        if source is None:
            continue
        out.append(
            Draft(
                "explore",
                _continued(prefix + branch),
                source["code"],
                bad_leaf.get("answer") or _summary(bad_leaf),
                [(EXPLORE, alt[0])] + _continued(alt[1:]),
                [n["node_id"] for n in prefix + branch + alt],
                bad_leaf["node_id"],
                {
                    "failed_leaf_id": bad_leaf["node_id"],
                    "success_leaf_id": good_leaf["node_id"],
                    "check_node_id": source["node_id"],
                },
            )
        )
    return out


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def render(
    draft: Draft, printed: str | None, problem_id: str, cp: CoatParams, fmt: FormatParams
) -> dict[str, Any] | None:
    """The COAT row of a draft once its check has run; None when the check failed, printed nothing, or
    (reflect, explore) printed what the wrong step gave — a check that proves nothing teaches nothing."""
    quoted = _last_line(printed or "")
    agrees = quoted == draft.got.strip()
    if printed is None or not quoted or agrees != (draft.kind == "confirm"):
        return None
    templates = cp.critique_templates[draft.kind]
    template = templates[int(records.content_id(draft.key, length=8), 16) % len(templates)]
    check = (
        code_block(draft.code, fmt)
        + output_block(printed.strip(), fmt)
        + template.format(printed=quoted, got=draft.got.strip())
        + "\n"
    )
    steps = draft.before + [(REFLECT, None)] + draft.after
    text = "".join(a + (check if n is None else step_body(n, fmt)) for a, n in steps)
    return _coat_row(problem_id, draft.kind, text, draft.node_ids, {**draft.meta, "check_printed": quoted})


def build_coat(
    nodes: Sequence[dict[str, Any]],
    trajectories: Sequence[dict[str, Any]],
    cp: CoatParams,
    fmt: FormatParams,
    check: CheckFn,
) -> list[dict[str, Any]]:
    """COAT rows for every tree, at most max_per_problem each, the kinds drawn in `mix` proportions; every
    check runs through `check` (one batch, each distinct cell sequence once)."""
    by_tree: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        by_tree[n["tree_id"]].append(n)
    trajs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trajectories:
        trajs[t["tree_id"]].append(t)
    trees = {tree_id: TreeRows(by_tree[tree_id]) for tree_id in sorted(by_tree)}
    drafts = {
        tree_id: {
            "reflect": reflect_drafts(tree, cp),
            "confirm": confirm_drafts(tree, trajs[tree_id], cp),
            "explore": explore_drafts(tree),
        }
        for tree_id, tree in trees.items()
    }
    jobs = sorted({d.cells() for kinds in drafts.values() for ds in kinds.values() for d in ds})
    printed = dict(zip(jobs, check(jobs))) if jobs else {}
    share = {k: max(1, round(cp.max_per_problem * cp.mix.get(k, 0))) if cp.mix.get(k, 0) else 0 for k in COAT_KINDS}
    pools: dict[str, list[dict[str, Any]]] = {k: [] for k in COAT_KINDS}
    for tree_id, tree in trees.items():
        per_kind = {"plain": plain_traces(tree, trajs[tree_id], fmt)}
        for kind, ds in drafts[tree_id].items():
            rendered = (render(d, printed[d.cells()], tree.problem_id, cp, fmt) for d in ds)
            per_kind[kind] = [r for r in rendered if r is not None]
        for kind, rows in per_kind.items():
            pools[kind].extend(rows[: share[kind]])
    total = sum(cp.mix.values())
    out = []
    for kind in COAT_KINDS:
        quota = int(cp.max_total * cp.mix.get(kind, 0) / total)
        out.extend(pools[kind][:quota])
    return out


def coat_steps(response: str) -> list[str]:
    """A sampled COAT response as its actions, each step opened by its meta-action token (text the model
    wrote before its first token, if any, is a step of its own)."""
    parts = _SPLIT.split(response)
    head = [parts[0]] if parts[0].strip() else []
    return head + [parts[i] + parts[i + 1] for i in range(1, len(parts) - 1, 2)]


# reflect_status of Satori's prompt data: which reflection bonus a restart state can earn.
REFLECT_STATUS = {"bare": 0, "correct": 1, "failed": -1}


def _backup(steps: int, most: int, *key: Any) -> int:
    """How many steps to back up from a trajectory's end: uniform over 0..most (never the whole
    trajectory), drawn from a hash of `key` so a re-run cuts the same place."""
    span = min(most, steps - 1) + 1
    return int(records.content_id("rae-backup", *key, length=8), 16) % span


def _state(
    problem_id: str, outcome: str, prefix: list[str], source: str, q: float, meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "state_id": records.content_id("rae", problem_id, outcome, source, prefix),
        "problem_id": problem_id,
        "prefix_steps": prefix,
        "node_id": source,
        "q": q,
        "outcome": outcome,
        "ends_with_reflect": bool(prefix) and prefix[-1] == REFLECT,
        "metadata": records.to_json(meta),
    }


def bare_states(problem_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The problems themselves as restart states: no prefix, no reflection bonus either way."""
    return [_state(pid, "bare", [], pid, 0.0, {"reflect_status": REFLECT_STATUS["bare"]}) for pid in problem_ids]


def build_rae_states(traces: Sequence[dict[str, Any]], rp: RaeParams, seed: int) -> list[dict[str, Any]]:
    """Algorithm 1 of Satori on the policy's own graded samples (`traces` rows): per problem its first
    correct and its first wrong sample (by sample index), each backed up 0..rp.max_backup_steps steps
    from its end and followed by <|reflect|>, plus the bare problem. A state's `node_id` is the trace it
    was cut from (the problem id for a bare one), its `q` that trace's outcome (1 right, -1 wrong, 0 bare)."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        by_problem[t["problem_id"]].append(t)
    out: list[dict[str, Any]] = []
    for pid in sorted(by_problem):
        samples = sorted(by_problem[pid], key=lambda t: t["sample_index"])
        if rp.bare_problems:
            out.extend(bare_states([pid]))
        for outcome, want in (("correct", True), ("failed", False)):
            picked = next(
                ((t, st) for t in samples if bool(t["correct"]) == want and (st := coat_steps(response_text(t)))), None
            )
            if picked is None:
                continue
            trace, steps = picked
            # drawn from the sample's place, not its trace id (which names the model's folder): the same
            # samples are cut in the same places wherever the model lies
            back = _backup(len(steps), rp.max_backup_steps, seed, pid, trace["sample_index"])
            prefix = steps[: len(steps) - back] + [REFLECT]
            out.append(
                _state(
                    pid,
                    outcome,
                    prefix,
                    trace["trace_id"],
                    1.0 if want else -1.0,
                    {"reflect_status": REFLECT_STATUS[outcome], "backup_steps": back, "trajectory_steps": len(steps)},
                )
            )
    return out


def rae_shard(
    shard: int, problems: list[dict[str, Any]], *, rt: Runtime, rp: RaeParams, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """One shard of the rae_states stage: rp.sample's samples of the policy in `rt`, graded (`traces`,
    stage 'rae_states'), and the restart states built from them."""
    traces = sample_shard(
        shard,
        problems,
        rt=rt,
        gp=rp.sample,
        limits=LoopLimits(max_tool_calls=rp.max_tool_calls),
        seed=seed,
        stage="rae_states",
        style="coat",
    )["traces"]
    return {"traces": traces, "rae_states": build_rae_states(traces, rp, seed)}


def reflect_outcomes(
    rt: Runtime, states: Sequence[dict[str, Any]], problems: dict[str, dict[str, Any]], rp: RLParams, seed: int
) -> list[dict[str, Any]]:
    """How the policy in `rt` continues from each math restart state that ends with <|reflect|>: one greedy
    tool-integrated continuation per state (the RL rollout's token budget and tool limit), graded on the
    state's steps and the continuation together, as the reward grades them. Rows {state_id, problem_id,
    start ('correct' | 'failed'), correct}: `rl.reflection_rates` turns them into the self-correction
    rate (a wrong start ends right) and the break rate (a right start ends wrong)."""
    from tracemill.rl import state_prompt
    from tracemill.tir import Sampling, TraceJob, run_traces

    mine = [
        st for st in states if st["ends_with_reflect"] and problems.get(st["problem_id"], {}).get("domain") == "math"
    ]
    greedy = Sampling(temperature=0.0, top_p=1.0, max_tokens=rp.max_completion_length, seed=seed)
    jobs = [
        TraceJob(
            key=st["state_id"],
            prompt=state_prompt(st, problems[st["problem_id"]], rt.tokenizer, rt.fmt),
            sampling=greedy,
            max_turn_tokens_total=rp.max_completion_length,
            setup_cells=ran_cells("".join(st["prefix_steps"]), rt.fmt),
        )
        for st in mine
    ]
    results = run_traces(rt.backend, rt.sandbox, jobs, rt.fmt, LoopLimits(max_tool_calls=rp.max_tool_calls))
    verdicts = rt.grader.grade_many(
        [(problems[st["problem_id"]], "".join(st["prefix_steps"]) + r.response) for st, r in zip(mine, results)]
    )
    return [
        {"state_id": st["state_id"], "problem_id": st["problem_id"], "start": st["outcome"], "correct": v.correct}
        for st, v in zip(mine, verdicts)
    ]


def orm_pairs(traces: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bradley-Terry pairs for the outcome reward model from graded samples: for each problem, every
    correct response chosen over every wrong one, after the prompt they share (`pairs`-shaped rows
    for train/ppm.py)."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in traces:
        by_problem[t["problem_id"]].append(t)
    out = []
    for pid in sorted(by_problem):
        samples = sorted(by_problem[pid], key=lambda t: t["sample_index"])
        right = [t for t in samples if t["correct"]]
        wrong = [t for t in samples if not t["correct"]]
        for good in right:
            for bad in wrong:
                out.append(
                    {
                        "pair_id": records.content_id("orm", good["trace_id"], bad["trace_id"]),
                        "problem_id": pid,
                        "prefix": good["segments"][0]["text"],
                        "chosen": response_text(good),
                        "rejected": response_text(bad),
                    }
                )
    return out
