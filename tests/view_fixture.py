"""A small run for the viewer's tests, written with the project's own store: two problems, START traces
with a hint and their SFT row, one search tree per round (2 rounds) with trajectories and pairs, COAT,
an RAE state, and metrics/plots as `dvc repro` leaves them."""

from __future__ import annotations

import json
from pathlib import Path

from tracemill import records, store

P1, P2 = "p-apples", "p-train"
HINT_TRACE = records.content_id("trace", P1, "hint")
GREEDY_TRACE = records.content_id("trace", P1, "greedy")
TREE_R1, TREE_R2 = "tree-r1", "tree-r2"
NODE_GOOD, NODE_BAD, NODE_WIN, NODE_MISS = "n-good", "n-bad", "n-win", "n-miss"
PAIR_STEP, PAIR_FINAL = "pair-step", "pair-final"
COAT_ID, STATE_ID = "coat-1", "rae-1"
HINT_TEXT = "Wait, maybe using Python here is a good idea."


def _write(data: Path, stage_dir: str, tables: dict[str, list[dict]]) -> None:
    out = store.StageOutput(data / stage_dir, list(tables), fingerprint="view-test")
    out.write_shard(0, tables)
    out.finalize([0])


def _trace(trace_id: str, segments: list[dict], correct: bool, answer: str, hint: str | None) -> dict:
    return {
        "trace_id": trace_id,
        "problem_id": P1,
        "stage": "hint_infer",
        "round": 0,
        "model": "bootstrap",
        "sample_index": 0,
        "hint_id": hint,
        "hint_kind": "python_check" if hint else None,
        "correct": correct,
        "final_answer": answer,
        "grader": "math-verify",
        "tool_calls": sum(s["kind"] == "code" for s in segments),
        "prompt_tokens": 40,
        "cached_prompt_tokens": 32 if hint else 0,
        "generated_tokens": 61,
        "finish_reason": "stop",
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "seed": 0},
        "segments": segments,
        "metadata": None,
    }


def _node(node_id: str, tree: str, parent: str | None, depth: int, text: str, q: float, visits: int, **kw) -> dict:
    rnd = 1 if tree == TREE_R1 else 2
    return {
        "node_id": node_id if rnd == 1 else f"{node_id}-r2",
        "tree_id": tree,
        "parent_id": None if parent is None else (parent if rnd == 1 else f"{parent}-r2"),
        "problem_id": P1,
        "round": rnd,
        "depth": depth,
        "step_text": text,
        "code": kw.get("code"),
        "exec_ok": kw.get("exec_ok", True),
        "exec_output": kw.get("out"),
        "terminal": kw.get("terminal", False),
        "answer": kw.get("answer"),
        "correct": kw.get("correct"),
        "visits": visits,
        "q": q,
        "ppm_score": kw.get("ppm") if rnd == 2 else None,
        "metadata": None,
    }


def _tree(tree: str) -> list[dict]:
    return [
        _node("root", tree, None, 0, "", 0.0, 8),
        _node(
            NODE_GOOD,
            tree,
            "root",
            1,
            "Tom starts with 3 apples and buys 4 more.",
            0.75,
            5,
            code="print(3 + 4)",
            out="7",
            ppm=0.8,
        ),
        _node(
            NODE_BAD,
            tree,
            "root",
            1,
            "Tom gives away 4 apples.",
            -0.6,
            3,
            code="print(3 - 4",
            exec_ok=False,
            out="SyntaxError",
            ppm=-0.4,
        ),
        _node(
            NODE_WIN,
            tree,
            NODE_GOOD,
            2,
            "So Tom has \\boxed{7} apples.",
            1.0,
            3,
            terminal=True,
            answer="7",
            correct=True,
            ppm=0.95,
        ),
        _node(
            NODE_MISS,
            tree,
            NODE_GOOD,
            2,
            "So Tom has \\boxed{12} apples.",
            -1.0,
            2,
            terminal=True,
            answer="12",
            correct=False,
            ppm=-0.9,
        ),
    ]


def write_run(root: Path) -> Path:
    """Write the run under root/data, root/metrics, root/plots; returns root."""
    data = root / "data"
    question = "Tom has 3 apples and buys 4 more. How many apples does Tom have?"
    _write(
        data,
        "problems",
        {
            "problems": [
                {
                    "problem_id": P1,
                    "source": "gsm8k",
                    "source_id": "1",
                    "split": "eval",
                    "domain": "math",
                    "difficulty": 1,
                    "question": question,
                    "answer": "7",
                    "tests": None,
                    "test_format": None,
                    "entry_point": None,
                    "test_setup": None,
                    "license": "MIT",
                    "metadata": None,
                },
                {
                    "problem_id": P2,
                    "source": "math500",
                    "source_id": "2",
                    "split": "train",
                    "domain": "math",
                    "difficulty": 3,
                    "question": "What is 6 times 7?",
                    "answer": "42",
                    "tests": None,
                    "test_format": None,
                    "entry_point": None,
                    "test_setup": None,
                    "license": "MIT",
                    "metadata": None,
                },
            ]
        },
    )
    greedy = [records.segment("prompt", question), records.segment("model", "Tom has 3 + 4 = 12 apples. \\boxed{12}")]
    hinted = [
        records.segment("prompt", question),
        records.segment("model", "Tom has 3 apples and buys 4."),
        records.segment("hint", HINT_TEXT, hint_id="h-python"),
        records.segment("code", "print(3 + 4)"),
        records.segment("output", "7"),
        records.segment("model", "So Tom has \\boxed{7} apples."),
    ]
    hint_row = _trace(HINT_TRACE, hinted, True, "7", "h-python")
    _write(data, "hint_infer", {"traces": [_trace(GREEDY_TRACE, greedy, False, "12", None), hint_row]})
    _write(data, "d_seed", {"d_seed": [{**hint_row, "reason_kept": "greedy_wrong_hint_right", "dedup_cluster": None}]})
    trained = [
        {**s, "loss": s["kind"] in ("model", "code", "hint")} for s in hinted if s["kind"] != "prompt"
    ]  # START: hint in the loss
    _write(
        data,
        "sft_start0",
        {
            "sft": [
                {
                    "example_id": records.content_id("sft", "d_seed", HINT_TRACE),
                    "source": "d_seed",
                    "problem_id": P1,
                    "prompt": question,
                    "segments": trained,
                    "metadata": None,
                }
            ]
        },
    )
    for tree, rnd in ((TREE_R1, 1), (TREE_R2, 2)):
        nodes = _tree(tree)
        ids = {n["node_id"].removesuffix("-r2"): n["node_id"] for n in nodes}
        path = [ids["root"], ids[NODE_GOOD], ids[NODE_WIN]]
        _write(
            data,
            f"rstar_search/round={rnd}",
            {
                "nodes": nodes,
                "trajectories": [
                    {
                        "trajectory_id": f"traj-win-{rnd}",
                        "tree_id": tree,
                        "problem_id": P1,
                        "round": rnd,
                        "node_ids": path,
                        "avg_q": 0.875,
                        "correct": True,
                        "selected": True,
                        "final_answer": "7",
                        "metadata": None,
                    },
                    {
                        "trajectory_id": f"traj-miss-{rnd}",
                        "tree_id": tree,
                        "problem_id": P1,
                        "round": rnd,
                        "node_ids": [ids["root"], ids[NODE_GOOD], ids[NODE_MISS]],
                        "avg_q": -0.125,
                        "correct": False,
                        "selected": False,
                        "final_answer": "12",
                        "metadata": None,
                    },
                ],
                "pairs": [
                    {
                        "pair_id": f"{PAIR_STEP}-{rnd}" if rnd == 2 else PAIR_STEP,
                        "problem_id": P1,
                        "tree_id": tree,
                        "round": rnd,
                        "prefix": question,
                        "chosen": "Tom starts with 3 apples and buys 4 more.",
                        "rejected": "Tom gives away 4 apples.",
                        "chosen_q": 0.75,
                        "rejected_q": -0.6,
                        "final_step": False,
                        "chosen_node_id": ids[NODE_GOOD],
                        "rejected_node_id": ids[NODE_BAD],
                        "metadata": None,
                    },
                    {
                        "pair_id": f"{PAIR_FINAL}-{rnd}" if rnd == 2 else PAIR_FINAL,
                        "problem_id": P1,
                        "tree_id": tree,
                        "round": rnd,
                        "prefix": question + "\nTom starts with 3 apples and buys 4 more.",
                        "chosen": "So Tom has \\boxed{7} apples.",
                        "rejected": "So Tom has \\boxed{12} apples.",
                        "chosen_q": 1.0,
                        "rejected_q": -1.0,
                        "final_step": True,
                        "chosen_node_id": ids[NODE_WIN],
                        "rejected_node_id": ids[NODE_MISS],
                        "metadata": None,
                    },
                ],
            },
        )
    coat_text = (
        "Tom starts with 3 apples and buys 4 more.<|continue|>So Tom has \\boxed{12} apples.<|reflect|>"
        "Wait, 3 + 4 is not 12.<|explore|>So Tom has \\boxed{7} apples."
    )
    _write(
        data,
        "coat",
        {
            "coat": [
                {
                    "coat_id": COAT_ID,
                    "problem_id": P1,
                    "kind": "reflect",
                    "text": coat_text,
                    "correct": True,
                    "source_node_ids": [NODE_GOOD, NODE_MISS, NODE_WIN],
                    "metadata": None,
                }
            ]
        },
    )
    _write(
        data,
        "rae_states",
        {
            "rae_states": [
                {
                    "state_id": STATE_ID,
                    "problem_id": P1,
                    "prefix_steps": ["Tom starts with 3 apples and buys 4 more.", "<|reflect|>"],
                    "node_id": NODE_GOOD,
                    "q": 0.75,
                    "outcome": "failed",
                    "ends_with_reflect": True,
                    "metadata": None,
                }
            ]
        },
    )
    metrics, plots = root / "metrics", root / "plots"
    metrics.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    evaluation = {
        "k": 2,
        "problems": 2,
        "split": "eval",
        "models": {
            "base": {
                "pass@1": 0.5,
                "sampled_accuracy": 0.5,
                "pass@k": {"1": 0.5, "2": 0.75},
                "maj@2": 0.5,
                "per_level": {"1": 1.0, "3": 0.0},
            },
            "rstar_r2": {
                "pass@1": 1.0,
                "sampled_accuracy": 0.9,
                "pass@k": {"1": 0.9, "2": 1.0},
                "maj@2": 1.0,
                "per_level": {"1": 1.0, "3": 1.0},
            },
        },
    }
    (metrics / "evaluate.json").write_text(json.dumps(evaluation))
    for rnd in (1, 2):
        (metrics / f"rstar_search_round{rnd}.json").write_text(
            json.dumps({"round": rnd, "trees": 1, "solve_rate": 1.0, "pairs": 2, "nodes": 5})
        )
    (plots / "eval_pass_at_1.csv").write_text("model,pass@1\nbase,0.5\nrstar_r2,1.0\n")
    (plots / "bootstrap_loss.csv").write_text(
        "step,loss\n" + "".join(f"{s},{3.0 / (1 + s / 10):.3f}\n" for s in range(0, 200, 10))
    )
    return root
