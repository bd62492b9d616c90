"""The evaluate stage on a real tiny policy, the real sandbox and grader and the real store.

A module fixture trains a tiny policy (a few seconds) on the synthetic corpus and writes the problems
table; the stage then scores two models (the policy under two names) on the held-out split.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import stage_cmd, write_problems_and_policy

from tracemill import store
from tracemill.errors import TracemillError
from tracemill.evaluate import EvalParams, k_points, score
from tracemill.synthetic import SyntheticParams

SYN = SyntheticParams(
    kinds=["arithmetic", "remainder"],
    levels=[1, 2],
    train_per_level=60,
    eval_per_level=3,
    code_train_per_task=0,
    code_eval_per_task=0,
)
K = 3
ROUNDS = 2  # hint rounds at test time: each greedy trace is scored before each hint and at its end


def _params(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seed": 0,
        "policy": {"model": "models/policy"},
        "grading": {"math": "exact"},
        "evaluate": {
            "split": "eval",
            "max_problems": 12,
            "k": K,
            "max_tokens_per_turn": 48,
            "max_tokens_total": 96,
            "max_tool_calls": 2,
            "hint_rounds": ROUNDS,
            "tokens_per_hint_round": 32,
            "models": models,
        },
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    write_problems_and_policy(root, SYN, "models/policy")
    shutil.copytree(root / "models/policy", root / "models/copy")
    return root


def _run(workdir: Path, monkeypatch: pytest.MonkeyPatch, models: list[dict[str, Any]]) -> None:
    from stages import evaluate

    (workdir / "params.yaml").write_text(yaml.safe_dump(_params(models)))
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("TRACEMILL_PARAMS", str(workdir / "params.yaml"))
    monkeypatch.setattr(sys, "argv", stage_cmd("evaluate")[2:])  # the paths dvc.yaml passes
    evaluate.main()


MODELS = [{"name": "base", "path": None}, {"name": "copy", "path": "models/copy"}]


@pytest.fixture(scope="module")
def evaluated(workdir: Path) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        _run(workdir, mp, MODELS)
    return {
        "metrics": __import__("json").loads((workdir / "metrics/evaluate.json").read_text()),
        "traces": store.read_rows(workdir / "data/evaluate", "traces"),
    }


def test_every_model_answers_every_held_out_problem_greedy_per_hint_round_and_k_times_sampled(
    evaluated: dict[str, Any],
) -> None:
    traces = evaluated["traces"]
    held_out = evaluated["metrics"]["problems"]
    assert held_out == 12
    for name in ("base", "copy"):
        rows = [t for t in traces if t["model"] == name]
        assert len(rows) == held_out * (1 + ROUNDS + K)
        greedy = [t for t in rows if t["sampling"]["temperature"] == 0.0]
        assert sorted(t["sample_index"] for t in greedy) == sorted(list(range(1 + ROUNDS)) * held_out)
        assert all((t["hint_id"] is None) == (t["sample_index"] == 0) for t in greedy)  # round 0: no hint
    assert {t["stage"] for t in traces} == {"evaluate"}
    assert len({t["trace_id"] for t in traces}) == len(traces)


def test_the_same_weights_score_the_same(evaluated: dict[str, Any]) -> None:
    base, copy = evaluated["metrics"]["models"]["base"], evaluated["metrics"]["models"]["copy"]
    assert base == copy


def test_metrics_agree_with_the_stored_traces(evaluated: dict[str, Any]) -> None:
    m = evaluated["metrics"]["models"]["base"]
    rows = [t for t in evaluated["traces"] if t["model"] == "base"]
    greedy = [t for t in rows if t["sampling"]["temperature"] == 0.0 and t["hint_id"] is None]
    assert m["pass@1"] == round(sum(t["correct"] for t in greedy) / len(greedy), 4)
    assert m["tool_calls_per_problem"] == round(sum(t["tool_calls"] for t in greedy) / len(greedy), 4)
    curve = [m["pass@k"][str(k)] for k in k_points(K)]
    assert curve == sorted(curve)  # pass@k never falls as k grows
    assert m["pass@k"]["1"] == pytest.approx(m["sampled_accuracy"], abs=1e-3)
    assert set(m["per_level"]) == {"1", "2"}


def test_plots_hold_one_bar_per_model_and_a_curve_per_model(evaluated: dict[str, Any], workdir: Path) -> None:
    bars = (workdir / "plots/eval_pass_at_1.csv").read_text().splitlines()
    assert bars[0] == "model,pass@1" and len(bars) == 3
    curve = (workdir / "plots/eval_pass_at_k.csv").read_text().splitlines()
    assert len(curve) == 1 + 2 * len(k_points(K))


def test_accuracy_and_tokens_per_hint_round_are_in_the_metrics_and_the_plot(
    evaluated: dict[str, Any], workdir: Path
) -> None:
    m = evaluated["metrics"]["models"]["base"]
    rounds = m["hint_rounds"]
    assert list(rounds) == [str(r) for r in range(1 + ROUNDS)]
    assert rounds["0"]["accuracy"] == m["pass@1"]
    tokens = [rounds[str(r)]["tokens"] for r in range(1 + ROUNDS)]
    assert tokens == sorted(tokens)  # a round only adds thinking to the one before
    rows = [t for t in evaluated["traces"] if t["model"] == "base" and t["sampling"]["temperature"] == 0.0]
    assert all(json.loads(t["metadata"])["hint_round"] == t["sample_index"] for t in rows)
    by = {(t["problem_id"], t["sample_index"]): t for t in rows}
    for (pid, r), t in by.items():  # a later round's trace goes on from the earlier round's answer
        if r:
            earlier = "".join(s["text"] for s in by[(pid, r - 1)]["segments"])
            assert "".join(s["text"] for s in t["segments"]).startswith(earlier)
    plot = (workdir / "plots/eval_hint_rounds.csv").read_text().splitlines()
    assert plot[0] == "model,hint_rounds,accuracy,tokens" and len(plot) == 1 + 2 * (1 + ROUNDS)


def test_a_rerun_keeps_scored_models_and_scores_only_the_missing_one(
    evaluated: dict[str, Any], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = workdir / "data/evaluate/_shards/00001.done"
    assert marker.exists(), sorted(p.name for p in (workdir / "data/evaluate/_shards").iterdir())
    marker.unlink()  # as if the stage was killed while scoring the second model
    _run(workdir, monkeypatch, MODELS)
    again = store.read_rows(workdir / "data/evaluate", "traces")
    assert sorted(t["trace_id"] for t in again) == sorted(t["trace_id"] for t in evaluated["traces"])
    assert sorted(map(str, again)) == sorted(map(str, evaluated["traces"]))


def test_a_missing_model_folder_is_one_clear_error_before_any_work(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TracemillError, match="models/nowhere.*config.json"):
        _run(workdir, monkeypatch, [{"name": "gone", "path": "models/nowhere"}])


def test_score_computes_pass_at_k_and_majority_from_rows() -> None:
    problems = [{"problem_id": "a", "difficulty": 1}, {"problem_id": "b", "difficulty": 2}]

    def row(pid: str, temperature: float, i: int, ok: bool, answer: str) -> dict[str, Any]:
        return {
            "problem_id": pid,
            "sampling": {"temperature": temperature},
            "sample_index": i,
            "correct": ok,
            "final_answer": answer,
            "tool_calls": 1,
            "generated_tokens": 10,
        }

    rows = [
        row("a", 0.0, 0, True, "1"),
        row("b", 0.0, 0, False, "9"),
        row("a", 0.6, 0, True, "1"),
        row("a", 0.6, 1, False, "2"),
        row("b", 0.6, 0, False, "8"),
        row("b", 0.6, 1, True, "3"),
    ]
    m = score(rows, problems)
    assert m["pass@1"] == 0.5 and m["per_level"] == {"1": 1.0, "2": 0.0}
    assert m["pass@k"] == {"1": 0.5, "2": 1.0}
    assert m["maj@2"] == 0.5  # each problem's two answers tie; half of the tied answers are right
    assert m["sampled_accuracy"] == 0.5
    assert m["tool_calls_per_problem"] == 1.0 and m["hint_rounds"] == {"0": {"accuracy": 0.5, "tokens": 10.0}}


def test_params_reject_duplicate_model_names() -> None:
    from tracemill import params as P

    with pytest.raises(TracemillError, match="distinct names"):
        P.parse_section(EvalParams, {"models": [{"name": "a"}, {"name": "a"}]}, "evaluate")


def test_dvc_draws_the_pass_at_k_plot_with_one_line_per_model(repo_copy: Path) -> None:
    import json

    from conftest import run

    shown = run(["dvc", "plots", "show", "plots/eval_pass_at_k.csv", "--json"], cwd=repo_copy)
    assert shown.returncode == 0, shown.stderr
    content = json.loads(shown.stdout)["data"]["plots/eval_pass_at_k.csv"][0]["content"]
    assert content["encoding"]["color"]["field"] == "model"
    models = {row["model"] for row in content["data"]["values"]}
    assert {"base", "satori_rl"} <= models and len(models) > 2
