import json

import pytest

from tracemill import records, satori
from tracemill.formats import FormatParams

FMT = FormatParams()


def node(nid, parent, step, *, code=None, out=None, q=0.0, terminal=False, correct=None, answer=None, ok=True, depth=1):
    return {
        "node_id": nid, "tree_id": "t1", "parent_id": parent, "problem_id": "p1", "round": 1, "depth": depth,
        "step_text": step, "code": code, "exec_ok": ok, "exec_output": out, "terminal": terminal, "answer": answer,
        "correct": correct, "visits": 1, "q": q, "ppm_score": None, "metadata": None,
    }


NODES = [
    node("root", None, "", depth=0),
    node("a1", "root", "Multiply the boxes by the pens per box.", code="print(6*7)", out="42", q=0.5),
    node("a1t", "a1", "So the total is \\boxed{42}.", q=1.0, terminal=True, correct=True, answer="42", depth=2),
    node("a1w", "a1", "So the total is \\boxed{41}.", q=-1.0, terminal=True, correct=False, answer="41", depth=2),
    node("b1", "root", "Add the boxes and the pens per box.", code="print(6+7)", out="13", q=-1.0),
    node("b1t", "b1", "So the total is \\boxed{13}.", q=-1.0, terminal=True, correct=False, answer="13", depth=2),
    node("c1", "root", "Use a broken formula.", code="print(x)", out="NameError", q=-1.0, ok=False),
]


def traj(tid, ids, correct, avg_q):
    return {"trajectory_id": tid, "tree_id": "t1", "problem_id": "p1", "round": 1, "node_ids": ids, "avg_q": avg_q,
            "correct": correct, "selected": correct, "final_answer": None, "metadata": None}


TRAJS = [traj("ok", ["root", "a1", "a1t"], True, 0.75), traj("w1", ["root", "a1", "a1w"], False, -0.25),
         traj("w2", ["root", "b1", "b1t"], False, -1.0)]
BY_ID = {n["node_id"]: n for n in NODES}


def test_coat_rows_parse_back_into_steps_and_meta_actions():
    rows = satori.build_coat(NODES, TRAJS, satori.CoatParams(), FMT)
    records.validate("coat", rows)
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["explore", "explore", "plain", "reflect", "reflect"]
    plain = next(r for r in rows if r["kind"] == "plain")
    parsed = satori.parse(plain["text"])
    assert [a for a, _ in parsed] == [satori.CONTINUE, satori.CONTINUE]
    assert parsed[0][1] == satori.step_body(BY_ID["a1"], FMT) and "```output\n42\n```" in parsed[0][1]
    assert plain["source_node_ids"] == ["a1", "a1t"]


def test_reflection_fixes_a_wrong_node_with_a_correct_one():
    rows = [r for r in satori.build_coat(NODES, TRAJS, satori.CoatParams(), FMT) if r["kind"] == "reflect"]
    for row in rows:
        parsed = satori.parse(row["text"])
        actions = [a for a, _ in parsed]
        at = actions.index(satori.REFLECT)
        wrong = BY_ID[row["source_node_ids"][at - 1]]
        assert wrong["q"] <= 0 and wrong["node_id"] in {"b1", "a1w"}
        assert "recomputing" in parsed[at][1] or "direct check" in parsed[at][1]
        last = BY_ID[row["source_node_ids"][-1]]
        assert last["terminal"] and last["correct"]
        assert "c1" not in row["source_node_ids"]  # failed code is never part of a trace


def test_exploration_goes_from_a_failed_branch_to_a_successful_one():
    rows = [r for r in satori.build_coat(NODES, TRAJS, satori.CoatParams(), FMT) if r["kind"] == "explore"]
    at_root = next(r for r in rows if r["source_node_ids"][0] == "b1")
    assert at_root["source_node_ids"] == ["b1", "b1t", "a1", "a1t"]
    assert [a for a, _ in satori.parse(at_root["text"])] == [satori.CONTINUE, satori.CONTINUE, satori.EXPLORE, satori.CONTINUE]


C, R = satori.CONTINUE, satori.REFLECT


def sample(pid, index, steps, correct):
    """A graded sample of the format-tuned policy: its prompt and a COAT response of `steps` steps."""
    body = "".join(f"{C}step {i}\n" for i in range(steps))
    return {"trace_id": f"{pid}-{index}", "problem_id": pid, "sample_index": index, "correct": correct,
            "segments": [{"kind": "prompt", "text": f"Q {pid}?"}, {"kind": "model", "text": body}]}


SAMPLES = [sample("p1", 0, 4, False), sample("p1", 1, 5, True), sample("p1", 2, 3, False), sample("p1", 3, 6, True),
           sample("p2", 0, 3, True), sample("p2", 1, 2, True), sample("p3", 0, 1, False)]


def test_rae_states_follow_algorithm_1_on_the_policys_own_samples():
    states = satori.build_rae_states(SAMPLES, satori.RaeParams(), seed=0)
    records.validate("rae_states", states)
    by = {(s["problem_id"], s["outcome"]): s for s in states}
    # every problem bare; one right and one wrong start where the samples hold them (the first of each)
    assert sorted(by) == [("p1", "bare"), ("p1", "correct"), ("p1", "failed"), ("p2", "bare"), ("p2", "correct"),
                          ("p3", "bare"), ("p3", "failed")]
    assert by[("p1", "correct")]["node_id"] == "p1-1" and by[("p1", "failed")]["node_id"] == "p1-0"
    for (pid, outcome), s in by.items():
        if outcome == "bare":
            assert s["prefix_steps"] == [] and not s["ends_with_reflect"]
            continue
        # both right- and wrong-based states end with <|reflect|>, after the sample's own steps minus 0..2 from its end
        assert s["ends_with_reflect"] and s["prefix_steps"][-1] == R
        source = next(t for t in SAMPLES if t["trace_id"] == s["node_id"])
        steps = satori.coat_steps(source["segments"][1]["text"])
        kept = s["prefix_steps"][:-1]
        back = json.loads(s["metadata"])["backup_steps"]
        assert kept == steps[: len(steps) - back] and 0 <= back <= 2 and kept
        assert json.loads(s["metadata"])["reflect_status"] == (1 if outcome == "correct" else -1)
    # a one-step trajectory is never backed up to nothing
    assert by[("p3", "failed")]["prefix_steps"] == [f"{C}step 0\n", R]
    assert satori.build_rae_states(SAMPLES, satori.RaeParams(), seed=0) == states  # same cut on a re-run


def test_rae_backup_depth_is_a_param_and_bare_problems_can_be_left_out():
    deep = [sample(f"p{i}", 0, 6, True) for i in range(40)]
    backs = {json.loads(s["metadata"])["backup_steps"] for s in satori.build_rae_states(deep, satori.RaeParams(), seed=0) if s["ends_with_reflect"]}
    assert backs == {0, 1, 2}  # every depth up to the paper's 2 occurs, none beyond
    none = satori.build_rae_states(deep, satori.RaeParams(max_backup_steps=0, bare_problems=False), seed=0)
    assert all(s["outcome"] == "correct" and len(s["prefix_steps"]) == 7 for s in none)


def test_orm_pairs_put_every_right_sample_over_every_wrong_one_of_its_problem():
    pairs = satori.orm_pairs(SAMPLES)
    assert len(pairs) == 4 and {p["problem_id"] for p in pairs} == {"p1"}  # p2 all right, p3 all wrong
    assert all(p["prefix"] == "Q p1?" and p["chosen"].count(C) in (5, 6) and p["rejected"].count(C) in (3, 4) for p in pairs)
    assert len({p["pair_id"] for p in pairs}) == 4


def test_meta_init_naming_a_token_that_is_no_meta_action_is_turned_away():
    from tracemill import params as P
    from tracemill.errors import ParamsError

    with pytest.raises(ParamsError, match="not a meta-action"):
        P.section(satori.SatoriParams, {"satori": {"coat": {"meta_init": {"<|pause|>": "Hmm"}}}}, "satori")
