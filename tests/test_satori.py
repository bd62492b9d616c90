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


def test_rae_states_include_failed_trajectories_ending_with_reflect():
    states = satori.build_rae_states(NODES, TRAJS, satori.RaeParams(), FMT)
    records.validate("rae_states", states)
    failed = [s for s in states if s["outcome"] == "failed"]
    assert failed and all(s["ends_with_reflect"] and s["prefix_steps"][-1] == satori.REFLECT for s in failed)
    correct = [s for s in states if s["outcome"] == "correct"]
    assert sorted(len(s["prefix_steps"]) for s in correct) == [0, 1]  # intermediate states only
    no_failed = satori.build_rae_states(NODES, TRAJS, satori.RaeParams(include_failed=False), FMT)
    assert {s["outcome"] for s in no_failed} == {"correct"}
