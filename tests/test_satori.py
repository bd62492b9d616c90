import dataclasses
import json

import pytest

from tracemill import records, satori
from tracemill.formats import FormatParams

FMT = FormatParams()


def node(nid, parent, step, *, code=None, out=None, q=0.0, terminal=False, correct=None, answer=None, ok=True, depth=1):
    return {
        "node_id": nid,
        "tree_id": "t1",
        "parent_id": parent,
        "problem_id": "p1",
        "round": 1,
        "depth": depth,
        "step_text": step,
        "code": code,
        "exec_ok": ok,
        "exec_output": out,
        "terminal": terminal,
        "answer": answer,
        "correct": correct,
        "visits": 1,
        "q": q,
        "ppm_score": None,
        "metadata": None,
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
    return {
        "trajectory_id": tid,
        "tree_id": "t1",
        "problem_id": "p1",
        "round": 1,
        "node_ids": ids,
        "avg_q": avg_q,
        "correct": correct,
        "selected": correct,
        "final_answer": None,
        "metadata": None,
    }


TRAJS = [
    traj("ok", ["root", "a1", "a1t"], True, 0.75),
    traj("w1", ["root", "a1", "a1w"], False, -0.25),
    traj("w2", ["root", "b1", "b1t"], False, -1.0),
]
BY_ID = {n["node_id"]: n for n in NODES}


# One sentence per checked kind that shows both values plainly, so a test can read them back.
CP = satori.CoatParams(
    critique_templates={
        "reflect": ["REFLECT {printed} vs {got}."],
        "confirm": ["CONFIRM {printed}."],
        "explore": ["EXPLORE {printed} vs {got}."],
    }
)


@pytest.fixture(scope="module")
def check():
    from tracemill.sandbox import SandboxParams, open_sandbox

    with open_sandbox(SandboxParams(pool_size=2, spares=1)) as sandbox:
        yield satori.sandbox_check(sandbox)


def checked_step(row):
    """The body opened by the row's <|reflect|>: the check's code, its output and the critique."""
    parsed = satori.parse(row["text"])
    return [a for a, _ in parsed], parsed[[a for a, _ in parsed].index(satori.REFLECT)][1]


def test_coat_has_all_four_kinds_and_parses_back_into_steps_and_meta_actions(check):
    rows = satori.build_coat(NODES, TRAJS, CP, FMT, check)
    records.validate("coat", rows)
    assert sorted(r["kind"] for r in rows) == ["confirm", "explore", "plain", "reflect"]
    plain = next(r for r in rows if r["kind"] == "plain")
    parsed = satori.parse(plain["text"])
    assert [a for a, _ in parsed] == [satori.CONTINUE, satori.CONTINUE]
    assert parsed[0][1] == satori.step_body(BY_ID["a1"], FMT) and "```output\n42\n```" in parsed[0][1]
    assert plain["source_node_ids"] == ["a1", "a1t"]
    for row in rows:
        assert "c1" not in row["source_node_ids"]  # failed code is never part of a trace
        last = BY_ID[row["source_node_ids"][-1]]
        assert last["terminal"] and last["correct"]


def test_reflection_on_a_wrong_step_quotes_a_check_run_in_the_sandbox(check):
    [row] = [r for r in satori.build_coat(NODES, TRAJS, CP, FMT, check) if r["kind"] == "reflect"]
    actions, body = checked_step(row)
    # a1w answered 41 after a1 computed 6*7; a1's code, run again, prints 42
    assert row["source_node_ids"] == ["a1", "a1w", "a1t"] and actions == [
        satori.CONTINUE,
        satori.CONTINUE,
        satori.REFLECT,
        satori.CONTINUE,
    ]
    assert body == "```python\nprint(6*7)\n```\n```output\n42\n```\nREFLECT 42 vs 41.\n"
    assert json.loads(row["metadata"])["check_printed"] == "42"


def test_confirmation_after_the_answer_reruns_the_last_code_agrees_and_gives_the_answer_again(check):
    cp = dataclasses.replace(CP, confirm_backup_steps=0)  # a restart state cut at its very end reflects here
    [row] = [r for r in satori.build_coat(NODES, TRAJS, cp, FMT, check) if r["kind"] == "confirm"]
    actions, body = checked_step(row)
    assert actions == [satori.CONTINUE, satori.CONTINUE, satori.REFLECT, satori.CONTINUE]
    assert row["source_node_ids"] == ["a1", "a1t"]
    assert body == "```python\nprint(6*7)\n```\n```output\n42\n```\nCONFIRM 42.\n"
    assert satori.parse(row["text"])[-1][1] == satori.step_body(BY_ID["a1t"], FMT)  # the answer again, last


def test_confirmations_reflect_where_restart_states_are_cut_and_check_the_last_code_before(check):
    # one path of three code steps and an answer, found by 30 trajectories: each draws its own cut
    path = [node("root", None, "", depth=0)] + [
        node(f"s{i}", "root" if i == 1 else f"s{i - 1}", f"Step {i}.", code=f"print({i}*10)", out=f"{i}0", depth=i)
        for i in (1, 2, 3)
    ]
    path.append(node("t", "s3", "So \\boxed{30}.", q=1.0, terminal=True, correct=True, answer="30", depth=4))
    tree = satori.TreeRows(path)
    trajs = [traj(f"p{i}", [n["node_id"] for n in path], True, 1.0) for i in range(30)]
    drafts = satori.confirm_drafts(tree, trajs, CP)  # confirm_backup_steps 2: rae_states' max_backup_steps
    cuts = {len(d.before) for d in drafts}
    assert cuts == {2, 3, 4}  # after s2, s3 or the answer: never further back
    for d in drafts:
        last_code = [n for _, n in d.before if n.get("code")][-1]
        assert d.code == last_code["code"] and d.got == last_code["exec_output"]
        assert [n["node_id"] for _, n in d.after] == ["s3", "t"][len(d.before) - 2 :] or (
            len(d.before) == 4 and [n["node_id"] for _, n in d.after] == ["t"]
        )


def test_exploration_refutes_a_wrong_answer_then_takes_the_other_branch(check):
    [row] = [r for r in satori.build_coat(NODES, TRAJS, CP, FMT, check) if r["kind"] == "explore"]
    actions, body = checked_step(row)
    assert row["source_node_ids"] == ["b1", "b1t", "a1", "a1t"]
    assert actions == [satori.CONTINUE, satori.CONTINUE, satori.REFLECT, satori.EXPLORE, satori.CONTINUE]
    assert body.endswith("EXPLORE 42 vs 13.\n")


def test_a_check_runs_after_every_earlier_step_and_one_that_fails_or_proves_nothing_is_dropped(check):
    # s2's check needs n from s1: it prints 42 only when the earlier steps ran first in the same session
    def tree(good_code, bad_out):
        return [
            node("r", None, "", depth=0) | {"tree_id": "t2", "problem_id": "p2"},
            *(
                n | {"tree_id": "t2", "problem_id": "p2"}
                for n in (
                    node("s1", "r", "Set n.", code="n = 6", out="", q=0.5),
                    node("s2", "s1", "Multiply.", code=good_code, out="42", q=0.8, depth=2),
                    node("s2t", "s2", "\\boxed{42}", q=1.0, terminal=True, correct=True, answer="42", depth=3),
                    node("s3", "s1", "Add.", code="print(n + 7)", out=bad_out, q=-1.0, depth=2),
                    node("s3t", "s3", "\\boxed{13}", q=-1.0, terminal=True, correct=False, answer="13", depth=3),
                )
            ),
        ]

    only_reflect = satori.CoatParams(mix={"reflect": 1.0}, critique_templates=CP.critique_templates)
    [row] = satori.build_coat(tree("print(n * 7)", "13"), [], only_reflect, FMT, check)
    assert checked_step(row)[1].endswith("REFLECT 42 vs 13.\n")
    assert satori.build_coat(tree("print(m * 7)", "13"), [], only_reflect, FMT, check) == []  # NameError: no check
    assert (
        satori.build_coat(tree("print(n * 7)", "42"), [], only_reflect, FMT, check) == []
    )  # agrees with the wrong step


def test_coat_templates_are_required_for_every_checked_kind_in_the_mix():
    from tracemill import params as P
    from tracemill.errors import ParamsError

    with pytest.raises(ParamsError, match="critique_templates.confirm"):
        P.section(
            satori.SatoriParams,
            {"satori": {"coat": {"critique_templates": {"reflect": ["{printed}"], "explore": ["{printed}"]}}}},
            "satori",
        )
    P.section(satori.SatoriParams, {"satori": {"coat": {"mix": {"plain": 1.0}, "critique_templates": {}}}}, "satori")


C, R = satori.CONTINUE, satori.REFLECT


def sample(pid, index, steps, correct):
    """A graded sample of the format-tuned policy: its prompt and a COAT response of `steps` steps."""
    body = "".join(f"{C}step {i}\n" for i in range(steps))
    return {
        "trace_id": f"{pid}-{index}",
        "problem_id": pid,
        "sample_index": index,
        "correct": correct,
        "segments": [{"kind": "prompt", "text": f"Q {pid}?"}, {"kind": "model", "text": body}],
    }


SAMPLES = [
    sample("p1", 0, 4, False),
    sample("p1", 1, 5, True),
    sample("p1", 2, 3, False),
    sample("p1", 3, 6, True),
    sample("p2", 0, 3, True),
    sample("p2", 1, 2, True),
    sample("p3", 0, 1, False),
]


def test_rae_states_follow_algorithm_1_on_the_policys_own_samples():
    states = satori.build_rae_states(SAMPLES, satori.RaeParams(), seed=0)
    records.validate("rae_states", states)
    by = {(s["problem_id"], s["outcome"]): s for s in states}
    # every problem bare; one right and one wrong start where the samples hold them (the first of each)
    assert sorted(by) == [
        ("p1", "bare"),
        ("p1", "correct"),
        ("p1", "failed"),
        ("p2", "bare"),
        ("p2", "correct"),
        ("p3", "bare"),
        ("p3", "failed"),
    ]
    assert by[("p1", "correct")]["node_id"] == "p1-1" and by[("p1", "failed")]["node_id"] == "p1-0"
    for (_pid, outcome), s in by.items():
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
    # the same samples from a model in another folder (other trace ids) are cut in the same places
    renamed = [{**t, "trace_id": "elsewhere-" + t["trace_id"]} for t in SAMPLES]
    again = satori.build_rae_states(renamed, satori.RaeParams(), seed=0)
    assert [s["prefix_steps"] for s in again] == [s["prefix_steps"] for s in states]


def test_rae_backup_depth_is_a_param_and_bare_problems_can_be_left_out():
    deep = [sample(f"p{i}", 0, 6, True) for i in range(40)]
    backs = {
        json.loads(s["metadata"])["backup_steps"]
        for s in satori.build_rae_states(deep, satori.RaeParams(), seed=0)
        if s["ends_with_reflect"]
    }
    assert backs == {0, 1, 2}  # every depth up to the paper's 2 occurs, none beyond
    none = satori.build_rae_states(deep, satori.RaeParams(max_backup_steps=0, bare_problems=False), seed=0)
    assert all(s["outcome"] == "correct" and len(s["prefix_steps"]) == 7 for s in none)


def test_orm_pairs_put_every_right_sample_over_every_wrong_one_of_its_problem():
    pairs = satori.orm_pairs(SAMPLES)
    assert len(pairs) == 4 and {p["problem_id"] for p in pairs} == {"p1"}  # p2 all right, p3 all wrong
    assert all(
        p["prefix"] == "Q p1?" and p["chosen"].count(C) in (5, 6) and p["rejected"].count(C) in (3, 4) for p in pairs
    )
    assert len({p["pair_id"] for p in pairs}) == 4


def test_meta_init_naming_a_token_that_is_no_meta_action_is_turned_away():
    from tracemill import params as P
    from tracemill.errors import ParamsError

    with pytest.raises(ParamsError, match="not a meta-action"):
        P.section(satori.SatoriParams, {"satori": {"coat": {"meta_init": {"<|pause|>": "Hmm"}}}}, "satori")
