"""Best-of-N by PPM against pass@1, maj@N and pass@N: the selection math on hand-built samples, then the
stage on a real tiny policy and PPM, the real sandbox and grader and the real store."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, stage_cmd, write_problems_and_policy

from tracemill import store
from tracemill.evaluate import EvalParams, MetricError, evaluate_traces
from tracemill.formats import FormatParams
from tracemill.rstar.bestofn import METHODS, Sample, accuracy, curve, sample_groups, solution_text, summary
from tracemill.synthetic import SyntheticParams


def samples(*rows: tuple[Any, bool, float]) -> list[Sample]:
    return [Sample(a, ok, s) for a, ok, s in rows]


def test_pass_at_1_is_the_mean_correct_of_all_samples_at_every_n() -> None:
    groups = [
        samples(("1", True, 0.0), ("2", False, 0.0), ("1", True, 0.0), ("3", False, 0.0)),
        samples(("5", False, 0.0), ("5", False, 0.0), ("5", False, 0.0), ("4", True, 0.0)),
    ]
    assert accuracy(groups, "pass@1", 1) == accuracy(groups, "pass@1", 4) == pytest.approx((2 / 4 + 1 / 4) / 2)


def test_maj_at_n_splits_a_tie_between_a_right_and_a_wrong_answer_and_ignores_no_answer() -> None:
    tie = samples(("7", True, 0.0), ("8", False, 0.0), (None, False, 0.0), (None, False, 0.0))
    assert accuracy([tie], "maj@n", 4) == 0.5
    wrong_majority = samples(("8", False, 0.0), ("7", True, 0.0), ("8", False, 0.0), ("9", False, 0.0))
    assert accuracy([wrong_majority], "maj@n", 4) == 0.0
    assert accuracy([wrong_majority], "maj@n", 2) == 0.5  # the first two: one vote each


def test_ppm_best_of_n_takes_the_highest_scored_sample_even_against_the_majority() -> None:
    group = samples(("8", False, 0.3), ("8", False, 0.2), ("7", True, 0.9), ("8", False, -0.5))
    assert accuracy([group], "ppm_best_of_n", 4) == 1.0
    assert accuracy([group], "maj@n", 4) == 0.0
    assert accuracy([group], "ppm_best_of_n", 2) == 0.0  # the right one is the third sample
    tied = samples(("7", True, 0.9), ("8", False, 0.9), ("9", False, 0.1))
    assert accuracy([tied], "ppm_best_of_n", 3) == 0.5


def test_pass_at_n_is_the_oracle_and_bounds_every_selection() -> None:
    group = samples(("8", False, 0.9), ("7", True, -0.9), ("8", False, 0.5), ("8", False, 0.1))
    assert accuracy([group], "pass@n", 4) == 1.0
    assert accuracy([group], "pass@n", 1) == 0.25
    assert accuracy([group], "pass@n", 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert max(accuracy([group], m, 4) for m in METHODS) == accuracy([group], "pass@n", 4)
    with pytest.raises(MetricError, match="unknown best-of-N method"):
        accuracy([group], "best", 4)


def test_curve_has_every_method_at_powers_of_two_up_to_n_and_summary_names_n() -> None:
    group = samples(*[(str(i % 3), i % 3 == 0, i / 10) for i in range(8)])
    rows = curve([group, group], round_=2)
    assert [(r["n_samples"], r["method"]) for r in rows] == [(k, m) for k in (1, 2, 4, 8) for m in METHODS]
    assert {r["round"] for r in rows} == {2}
    s = summary([group, group])
    assert set(s) == {"problems", "n", "pass@1", "maj@8", "ppm_best_of_8", "pass@8"}
    assert (s["problems"], s["n"], s["ppm_best_of_8"]) == (
        2,
        8,
        0.0,
    )  # the highest score is sample 7, answer "1", wrong


def test_the_best_of_n_knobs_are_a_section_of_their_own_so_changing_them_leaves_the_searches_current() -> None:
    from dataclasses import fields

    from tracemill import params as P
    from tracemill.errors import ParamsError
    from tracemill.rstar import RStarParams
    from tracemill.rstar.bestofn import BestOfNParams

    root = ROOT
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert "rstar_bestofn" in stages["rstar_bestofn"]["do"]["params"]
    assert "rstar_bestofn" not in stages["rstar_search"]["do"]["params"]  # rstar_search@r fingerprints all of `rstar`
    assert "bestofn" not in {f.name for f in fields(RStarParams)}
    with pytest.raises(ParamsError, match="rstar.bestofn"):
        P.parse_section(RStarParams, {"bestofn": {"n": 2}}, "rstar")
    shipped = yaml.safe_load((root / "params.yaml").read_text())["rstar_bestofn"]
    assert P.section(BestOfNParams, P.load(root / "params.yaml"), "rstar_bestofn") == BestOfNParams(**shipped)


# ---- the stage on a real tiny policy and PPM --------------------------------------------------------

SYN = SyntheticParams(
    kinds=["arithmetic"], levels=[1], train_per_level=60, eval_per_level=4, code_train_per_task=0, code_eval_per_task=0
)
N = 4
EVAL = {
    "split": "eval",
    "max_problems": 80,
    "temperature": 0.9,
    "top_p": 1.0,
    "max_tokens_per_turn": 48,
    "max_tokens_total": 96,
    "max_tool_calls": 2,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification

    from tracemill.train import PPMParams, init_ppm

    root = tmp_path_factory.mktemp("bestofn")
    write_problems_and_policy(root, SYN, "models/rstar_policy_r1")
    ppm_dir = init_ppm(root / "models/rstar_policy_r1", root / "models/rstar_ppm_r1", PPMParams(max_length=256))
    # The zero head scores every solution 0 (all tied); a seeded random head gives distinct scores to pick by.
    model = AutoModelForSequenceClassification.from_pretrained(ppm_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)
    model.save_pretrained(ppm_dir)
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "grading": {"math": "exact"},
                "evaluate": EVAL,
                "rstar": {"rounds": 1},
                "rstar_bestofn": {"n": N, "max_problems": 3},
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def ran(workdir: Path) -> dict[str, Any]:
    from stages import rstar_bestofn

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("TRACEMILL_PARAMS", str(workdir / "params.yaml"))
        mp.setattr(sys, "argv", stage_cmd("rstar_bestofn", 1)[2:])  # the paths dvc.yaml's rstar_bestofn@1 passes
        rstar_bestofn.main()
    with open(workdir / "plots/rstar_bestofn_round1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"metrics": json.loads((workdir / "metrics/rstar_bestofn_round1.json").read_text()), "curve": rows}


def test_the_stage_reports_each_method_at_n_and_a_curve_over_powers_of_two(ran: dict[str, Any]) -> None:
    m = ran["metrics"]
    assert (m["round"], m["problems"], m["n"], m["split"]) == (1, 3, N, "eval")
    for key in ("maj@4", "ppm_best_of_4", "pass@1"):
        assert 0.0 <= m[key] <= m["pass@4"] <= 1.0
    at = {(int(r["n_samples"]), r["method"]): float(r["accuracy"]) for r in ran["curve"]}
    assert set(at) == {(k, meth) for k in (1, 2, 4) for meth in METHODS}
    # one sample: the majority and the PPM both take it; the oracle is pass@1
    assert at[(1, "maj@n")] == at[(1, "ppm_best_of_n")] and at[(1, "pass@n")] == at[(1, "pass@1")] == m["pass@1"]
    assert at[(4, "ppm_best_of_n")] == m["ppm_best_of_4"] and at[(4, "maj@n")] == m["maj@4"]


def test_each_sample_is_scored_by_the_ppm_on_its_whole_text_and_the_highest_is_picked(workdir: Path) -> None:
    from tracemill.generate import GenParams, pick_problems
    from tracemill.grading import GradingParams, get_grader
    from tracemill.llm import LLMParams, load_backend
    from tracemill.runtime import Runtime
    from tracemill.sandbox import SandboxParams, open_sandbox
    from tracemill.train import load_ppm

    ep = EvalParams(**EVAL)
    problems = pick_problems(
        store.read_rows(workdir / "data/problems", "problems"), GenParams(split="eval", max_problems=2)
    )
    ppm = load_ppm(workdir / "models/rstar_ppm_r1")
    policy = workdir / "models/rstar_policy_r1"
    with open_sandbox(SandboxParams()) as sandbox, get_grader(GradingParams(math="exact"), sandbox) as grader:
        rt = Runtime(policy, "tiny", load_backend(LLMParams(), policy), sandbox, grader, FormatParams())
        groups = sample_groups(rt, ppm, problems, ep, N, seed=0)
        # the same seeds sample the same solutions: score them here, independently, as prompt + response
        traces = [
            r
            for r in evaluate_traces(rt, problems, EvalParams(**{**EVAL, "k": N, "hint_rounds": 0}), "steps", 0)
            if r["sampling"]["temperature"] > 0
        ]
    assert [len(g) for g in groups] == [N, N]
    for p, g in zip(problems, groups):
        mine = sorted((r for r in traces if r["problem_id"] == p["problem_id"]), key=lambda r: r["sample_index"])
        prompt = mine[0]["segments"][0]["text"]
        expected = ppm.score(prompt, [solution_text(r)[len(prompt) :] for r in mine])
        assert [s.ppm_score for s in g] == pytest.approx(expected, abs=1e-5)
        assert [s.correct for s in g] == [r["correct"] for r in mine]
        assert len({round(s.ppm_score, 6) for s in g}) > 1  # the random head tells the samples apart
        best = max(g, key=lambda s: s.ppm_score)
        assert accuracy([g], "ppm_best_of_n", N) == float(best.correct)
