"""The run figures of the README and the docs pages come from the run: generated blocks equal what
tracemill.report renders from metrics/, dvc.lock and plots/; the renderer on a small metrics folder; the
spread over seeds."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run
from typer.testing import CliRunner

from tracemill import params as P
from tracemill import report
from tracemill.cli import app


def test_generated_blocks_of_readme_and_docs_match_the_committed_metrics():
    blocks = report.render(report.load_run(ROOT))
    texts = {path: path.read_text() for path in report.doc_files(ROOT)}
    assert report.unplaced_blocks(texts) == [], "every block tracemill renders sits in README.md or a docs page"
    for path, text in texts.items():
        stale = report.stale_blocks(text, blocks, str(path))
        assert stale == [], f"{path} drifted from metrics/ — run 'tracemill readme --write'"


def test_every_markdown_file_with_a_block_is_one_the_check_reads():
    """A block put on a page outside DOC_FILES would never be rewritten or checked."""
    listed = {ROOT / name for name in report.DOC_FILES}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if report.blocks_in(path.read_text(), str(path)):
            assert path in listed, f"{path} holds generated blocks — add it to tracemill.report.DOC_FILES"


# --- the renderer on a small run written here -----------------------------------------------------

EVAL_MODELS = [
    {"name": "base", "path": None},
    {"name": "start0", "path": "models/start0"},
    {"name": "rstar_r1", "path": "models/rstar_policy_r1", "style": "steps"},
]


def _model(pass1: float, sampled: float, pass2: float, levels: tuple[float, float]) -> dict:
    return {
        "pass@1": pass1,
        "sampled_accuracy": sampled,
        "maj@2": sampled,
        "pass@k": {"1": sampled, "2": pass2},
        "per_level": {"1": levels[0], "2": levels[1]},
        "problems": 20,
    }


def _write_run(root: Path, metrics: dict[str, dict], params: dict | None = None) -> Path:
    (root / "metrics").mkdir(parents=True)
    for name, content in metrics.items():
        (root / "metrics" / f"{name}.json").write_text(json.dumps(content))
    if params is not None:
        lock = {
            "schema": "2.0",
            "stages": {"evaluate": {"cmd": "python -m stages.evaluate", "params": {"params.yaml": params}}},
        }
        (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


def test_evaluation_table_in_params_order_with_best_bold_and_not_run_cells(tmp_path):
    start0 = _model(0.35, 0.5625, 0.8375, (0.5, 0.25))
    del start0["maj@2"]
    root = _write_run(
        tmp_path,
        {
            "evaluate": {
                "k": 2,
                "problems": 20,
                "split": "eval",
                "models": {"start0": start0, "base": _model(0.8125, 0.55, 0.825, (1.0, 0.625))},
            },
            "d_seed": {"size": 11},
        },
        params={"evaluate": {"models": EVAL_MODELS, "temperature": 0.6}},
    )
    text = report.evaluation_block(report.load_run(root))
    assert text.splitlines()[0].startswith("*not run: `metrics/hint_infer.json` is missing")
    assert text.splitlines()[2:] == [
        "| model | greedy pass@1 | level 1 / 2 | sampled accuracy (T=0.6) | pass@2 | maj@2 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| base (bootstrap) | **0.813** | 1.00 / 0.63 | 0.550 | 0.825 | **0.550** |",
        "| START-0 (D_seed, 11 rows) | 0.350 | 0.50 / 0.25 | **0.563** | **0.838** | not run |",
        "| rStar-Math round-1 policy | not run | not run | not run | not run | not run |",
    ]


def test_every_block_renders_not_run_from_an_empty_metrics_folder(tmp_path):
    (tmp_path / "metrics").mkdir()
    blocks = report.render(report.load_run(tmp_path))
    assert set(blocks) == set(report.BLOCKS)
    for name, content in blocks.items():
        assert content.startswith(f"*{report.NOT_RUN}: `"), name
    assert "`metrics/evaluate.json` is missing" in blocks["findings"]
    assert "`metrics/seeds.json` is missing — `make seeds`" in blocks["seeds"]


def test_bootstrap_block_from_its_metrics_and_the_locked_steps(tmp_path):
    root = _write_run(
        tmp_path,
        {
            "bootstrap": {
                "eval_problems": 100,
                "parameters": 491136,
                "model_bytes": 2007059,
                "train_seconds": 282.4,
                "train_tokens_per_s": 22351,
                "no_tools": {"pass@1": 0.23, "per_level": {"1": 0.381, "2": 0.0}},
                "tools": {"pass@1": 0.79, "per_level": {"1": 0.8571}},
            }
        },
        params={"bootstrap": {"max_steps": 2700}},
    )
    assert report.bootstrap_block(report.load_run(root)).splitlines() == [
        "`metrics/bootstrap.json`: 2,700 steps, 491k parameters, 2.0 MB folder; training took 282 s (22.4k tokens/s) "
        "on the machine that ran it.",
        "",
        "| held-out, greedy (100 problems) | level 1 | level 2 | all |",
        "| --- | --- | --- | --- |",
        "| pass@1 without tools | 0.38 | 0.00 | **0.23** |",
        "| pass@1 with tools (sandbox runs its code) | 0.86 | not run | **0.79** |",
    ]


def test_grading_block_renders_the_per_kind_counts_the_check_wrote(tmp_path):
    from tracemill.grading import GradingParams
    from tracemill.grading.labelled import Pair, check

    pairs = [
        Pair(r"\frac{1}{2^{99}}", r"\boxed{\frac{1}{2^{98}}}", False, "unsafe", "t"),  # math-verify says yes
        Pair(r"\sqrt{8}", r"\boxed{2\sqrt{2}}", True, "plain", "t"),
        Pair("1500", r"\boxed{1.5e3}", True, "plain", "t"),
    ]  # math-verify reads e as Euler's number
    root = _write_run(tmp_path, {"grading": check(GradingParams(math="exact"), pairs)})
    text = report.grading_block(report.load_run(root))
    assert text.startswith("The labelled set graded by tracemill (`grading.math: exact`, grader version ")
    assert text.splitlines()[2:] == [
        "| kind | pairs | tracemill right | tracemill FP | math-verify right | math-verify FP |",
        "| --- | --- | --- | --- | --- | --- |",
        "| plain | 2 | 2/2 (100.0 %) | 0 | 1/2 (50.0 %) | 0 |",
        "| unsafe | 1 | 1/1 (100.0 %) | 0 | 0/1 (0.0 %) | 1 |",
        "| **all** | 3 | 3/3 (100.0 %) | 0 | 1/3 (33.3 %) | 1 |",
    ]


def test_start_block_counts_hint_positions_and_tabulates_accuracy_per_hint_round(tmp_path):
    rounds = {"0": {"accuracy": 0.5, "tokens": 40.0}, "1": {"accuracy": 0.625, "tokens": 71.5}}
    root = _write_run(
        tmp_path,
        {
            "hint_infer": {"hint_at": {"stop": 30, "marker": 6}},
            "d_seed": {
                "size": 4,
                "hinted_problems": 12,
                "kept_hint_at": {"marker": 1, "stop": 3},
                "modify": "unbox",
                "rows_per_hinted_problem": 4 / 12,
                "rows_per_hinted_problem_by_domain": {"math": 0.4, "code": 0.0},
            },
            "d_start": {"size": 9},
            "evaluate": {
                "models": {
                    "base": {"tool_calls_per_problem": 0.25, "hint_rounds": rounds},
                    "start": {"tool_calls_per_problem": 1.5, "hint_rounds": {"0": rounds["0"]}},
                }
            },
        },
    )
    first, *rest = report.start_block(report.load_run(root)).splitlines()
    assert first == (
        "- Hint-infer's hints landed marker 6, stop 30 (after a Wait/Alternatively marker or at the stop) on 12 "
        "problems; D_seed kept 4 rows (marker 1, stop 3), 0.333 per hinted problem (code 0.000, math 0.400); "
        "D_start 9 rows. Modify step: `unbox`."
    )
    assert rest[-2:] == [
        "| base (bootstrap) | 0.25 | 0.500 (40 tok) | 0.625 (72 tok) |",
        "| START | 1.50 | 0.500 (40 tok) | not run |",
    ]


def test_rstar_block_has_a_row_per_round_and_the_guidance_comparison(tmp_path):
    side = {"trees": 3, "solve_rate": 0.5, "trajectories_per_tree": 2.0, "correct_trajectories_per_solved_tree": 1.5}
    root = _write_run(
        tmp_path,
        {
            "rstar_search_round1": {
                "solve_rate": 0.5,
                "nodes_per_tree": 9.25,
                "rewalked_rollout_share": 0.0,
                "trajectories_per_tree": 4.0,
                "correct_trajectories_per_solved_tree": 2.0,
                "solved_trees_with_2_correct": 3,
                "pairs": 7,
                "ppm": None,
                "dropped_steps": {"after_answer": 2, "length": 5},
            },
            "rstar_search_round2": {
                "solve_rate": 0.75,
                "nodes_per_tree": 12.0,
                "rewalked_rollout_share": 0.05,
                "trajectories_per_tree": 5.0,
                "correct_trajectories_per_solved_tree": None,
                "solved_trees_with_2_correct": 1,
                "pairs": 2,
                "ppm": "models/rstar_ppm_r1",
                "guidance_on_same_problems": {"ppm_guided": side, "terminal_guided": {**side, "solve_rate": 0.25}},
            },
            "rstar_ppm_round1": {"heldout_pairwise_accuracy": 0.8},
            "rstar_bestofn_round1": {"n": 4, "pass@1": 0.5, "maj@4": 0.6, "ppm_best_of_4": 0.7},
        },
    )
    lines = report.rstar_block(report.load_run(root)).splitlines()
    assert lines[4] == "| 1 | no | 0.500 | 9.250 | 0% | 4.000 | 2.000 | 3 | 7 | 0.800 | 0.500 / 0.600 / 0.700 (N=4) |"
    assert lines[5] == "| 2 | yes | 0.750 | 12.000 | 5% | 5.000 | not run | 1 | 2 | not run | not run |"
    assert lines[6] == (
        "- On the same 3 problems of round 2: PPM-guided solve rate 0.500, 2.000 trajectories per tree, 1.500 "
        "correct per solved tree; terminal-guided solve rate 0.250, 2.000 trajectories per tree, 1.500 correct per "
        "solved tree."
    )
    assert lines[7] == (  # round 2 wrote none: it is left out, not shown as zero
        "- Sampled steps that were dead ends before any code ran (`dropped_steps`): round 1: 2 after_answer, 5 length."
    )


def test_satori_measures_block_has_a_row_per_rl_round(tmp_path):
    rl = {
        "steps": 4,
        "reward_first": -0.5,
        "reward_last": 0.25,
        "self_correction_rate": 0.3,
        "break_rate": 0.1,
        "in_rollout_self_correction_rate": None,
        "in_rollout_break_rate": 0.0,
    }
    root = _write_run(tmp_path, {"rae_states": {"states": 10, "sampled_accuracy": 0.4}, "rl": rl})
    lines = report.satori_measures_block(report.load_run(root)).splitlines()
    assert lines[0] == "- Restart states: 10 from the format-tuned policy's samples (sampled accuracy 0.400)."
    assert lines[-1] == "| 1 (restart states) | 4 | -0.500 | 0.250 | 0.300 | 0.100 | not run | 0.000 |"


def test_readme_check_fails_on_drift_and_write_fixes_it(tmp_path):
    root = _write_run(
        tmp_path / "run", {"evaluate": {"k": 2, "problems": 20, "models": {"base": _model(0.8, 0.55, 0.825, (1, 0.6))}}}
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\nprose 0.42 stays\n\n<!-- tracemill:begin evaluation -->\n| stale | 0.1 |\n"
        "<!-- tracemill:end evaluation -->\n\ntail\n"
    )
    cli = CliRunner()
    args = ["readme", "--readme", str(readme), "--root", str(root)]
    stale = cli.invoke(app, [*args, "--check"])
    assert stale.exit_code == 1 and "evaluation" in stale.output
    assert cli.invoke(app, [*args, "--write"]).exit_code == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nprose 0.42 stays\n\n<!-- tracemill:begin evaluation -->\n")
    assert text.endswith("<!-- tracemill:end evaluation -->\n\ntail\n")
    assert "| base (bootstrap) | **0.800** |" in text and "stale" not in text
    assert cli.invoke(app, [*args, "--check"]).exit_code == 0


def _docs_run(tmp_path: Path) -> Path:
    """A run folder whose README and docs pages hold every block, the evaluation block twice."""
    evaluate = {"k": 2, "problems": 20, "models": {"base": _model(0.8, 0.55, 0.825, (1, 0.6))}}
    root = _write_run(tmp_path / "run", {"evaluate": evaluate})
    placed = {name: "docs/evaluation.md" for name in report.BLOCKS}
    placed["rstar"] = "docs/rstar.md"
    for name in report.DOC_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\n")
    for name, page in [*placed.items(), ("evaluation", "README.md")]:
        path = root / page
        path.write_text(path.read_text() + f"\n{report.BEGIN.format(name)}\nold\n{report.END.format(name)}\n")
    return root


def test_readme_write_fills_blocks_in_every_doc_file_and_check_reads_them_all(tmp_path):
    root = _docs_run(tmp_path)
    cli = CliRunner()
    stale = cli.invoke(app, ["readme", "--check", "--root", str(root)])
    assert stale.exit_code == 1 and "docs/rstar.md" in stale.output
    assert "README.md: generated block(s) differ" in stale.output
    assert cli.invoke(app, ["readme", "--write", "--root", str(root)]).exit_code == 0
    assert "| base (bootstrap) | **0.800** |" in (root / "README.md").read_text()
    rstar = (root / "docs/rstar.md").read_text()
    assert "not run" in rstar and "old" not in rstar
    assert cli.invoke(app, ["readme", "--check", "--root", str(root)]).exit_code == 0


def test_readme_check_fails_naming_a_block_that_sits_in_no_doc_file(tmp_path):
    root = _docs_run(tmp_path)
    page = root / "docs/rstar.md"
    page.write_text("# rStar-Math, its block removed\n")
    out = CliRunner().invoke(app, ["readme", "--check", "--root", str(root)])
    assert out.exit_code == 2 and "rstar sit in none of" in out.output


def test_readme_check_names_a_missing_doc_file(tmp_path):
    root = _docs_run(tmp_path)
    (root / "docs/grading.md").unlink()
    out = CliRunner().invoke(app, ["readme", "--check", "--root", str(root)])
    assert out.exit_code == 2 and "docs/grading.md is missing" in out.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- tracemill:begin evaluation -->\n", "block 'evaluation' has no end marker"),
        ("<!-- tracemill:end evaluation -->\n", "end marker 'evaluation' closes no open block"),
        (
            "<!-- tracemill:begin results -->\n<!-- tracemill:end results -->\n",
            "block 'results' is not one tracemill renders",
        ),
    ],
)
def test_broken_markers_name_the_block(tmp_path, text, message):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    (tmp_path / "metrics").mkdir()
    out = CliRunner().invoke(app, ["readme", "--check", "--readme", str(readme), "--root", str(tmp_path)])
    assert out.exit_code == 2 and message in out.output


# --- spread over seeds ----------------------------------------------------------------------------


def _evaluate_of_seed(shift: float) -> dict:
    """The committed metrics/evaluate.json with every score moved by `shift` (a seed's run)."""
    committed = json.loads((ROOT / "metrics" / "evaluate.json").read_text())
    for m in committed["models"].values():
        m["pass@1"] = round(m["pass@1"] + shift, 4)
        m["sampled_accuracy"] = round(m["sampled_accuracy"] + shift, 4)
    return committed


def _exp_show(runs: dict[str, tuple[int, str, dict]]) -> list[dict]:
    """`dvc exp show --json` as DVC 3 prints it: the workspace, then the baseline with its experiments."""

    def data(rev: str, seed: int, timestamp: str, evaluate: dict) -> dict:
        params = {
            "seed": seed,
            "satori": {"rl": {"seed": seed}},
            "train": {
                s: {"seed": seed}
                for s in ("sft_start0", "sft_start", "rstar_policy", "format_tune", "distill", "rstar_ppm")
            },
        }
        return {
            "rev": rev,
            "timestamp": timestamp,
            "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/evaluate.json": {"data": evaluate}},
            "deps": {},
            "outs": {},
            "meta": {},
        }

    experiments = [
        {
            "name": name,
            "executor": None,
            "revs": [
                {
                    "rev": f"{name}-rev",
                    "name": name,
                    "data": data(f"{name}-rev", seed, ts, ev),
                    "error": None,
                    "experiments": None,
                }
            ],
        }
        for name, (seed, ts, ev) in runs.items()
    ]
    return [
        {"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
        {"rev": "abc", "name": "main", "data": {}, "error": None, "experiments": experiments},
    ]


def test_seed_runs_take_each_seeds_newest_experiment_and_aggregate_mean_std_min_max():
    shown = _exp_show(
        {
            "seed0": (0, "2026-01-01T10:00:00", _evaluate_of_seed(0.0)),
            "seed1-old": (1, "2026-01-01T09:00:00", _evaluate_of_seed(-0.5)),
            "seed1": (1, "2026-01-01T11:00:00", _evaluate_of_seed(-0.0125)),
            "seed2": (2, "2026-01-01T12:00:00", _evaluate_of_seed(0.025)),
        }
    )
    runs = report.seed_runs(shown, [0, 1, 2])
    assert [r.name for r in runs] == ["seed0", "seed1", "seed2"]
    seeds = report.aggregate_seeds(runs)
    base = seeds["models"]["base"]["pass@1"]
    committed = _evaluate_of_seed(0.0)["models"]
    values = [round(committed["base"]["pass@1"] + shift, 4) for shift in (0.0, -0.0125, 0.025)]
    assert base["values"] == values and base["n"] == 3 and (base["min"], base["max"]) == (min(values), max(values))
    assert base["mean"] == round(statistics.fmean(values), 4) and base["std"] == round(statistics.stdev(values), 4)
    assert seeds["models"]["start"]["pass@k.2"]["std"] == 0.0  # untouched by the shift: equal over seeds
    assert seeds["models"]["rstar_r1"]["per_level.4"]["mean"] == committed["rstar_r1"]["per_level"]["4"]
    assert (seeds["seeds"], seeds["k"], seeds["problems"]) == ([0, 1, 2], 2, 80)
    assert seeds["experiments"]["1"] == {"name": "seed1", "rev": "seed1-rev"}
    assert "bootstrap.seed" in seeds["fixed"] and "train.rstar_ppm.seed" in seeds["varied"]

    block = report.seeds_block(report.Run({"seeds": seeds}))
    assert "Seeds 0, 1, 2 (n=3; 80 held-out problems, k=2)" in block
    b = committed["base"]
    sampled = statistics.fmean(round(b["sampled_accuracy"] + s, 4) for s in (0.0, -0.0125, 0.025))
    std = report.fixed(base["std"])
    assert (
        f"| base (bootstrap) | {statistics.fmean(values):.3f} ± {std} | {sampled:.3f} ± {std} | "
        f"{b['pass@k']['2']:.3f} ± 0.000 | {b['maj@2']:.3f} ± 0.000 | "
        f"{report.fixed(min(values))}–{report.fixed(max(values))} |"
    ) in block


def test_seed_runs_carry_the_method_measures_in_their_order_and_skip_a_seed_without_one():
    shown = _exp_show({f"seed{i}": (i, f"t{i}", _evaluate_of_seed(0.0)) for i in range(3)})
    rates = {0: (0.25, 0.5), 1: (0.5, 0.25), 2: None}  # seed 2's run wrote no reflect-state outcomes
    for exp in shown[1]["experiments"]:
        seed = int(exp["name"][-1])
        if rates[seed]:
            fixed_, broke = rates[seed]
            after = {"self_correction_rate": fixed_, "break_rate": broke}
            exp["revs"][0]["data"]["metrics"]["metrics/rl.json"] = {"data": {"reflect_states": {"after_rl": after}}}
    seeds = report.aggregate_seeds(report.seed_runs(shown, [0, 1, 2]))
    fixed_ = seeds["measures"]["metrics/rl.json:reflect_states.after_rl.self_correction_rate"]
    assert fixed_["values"] == [0.25, 0.5] and fixed_["n"] == 2 and fixed_["mean"] == 0.375
    assert not any("rstar_search" in key for key in seeds["measures"])  # no seed has it: no row
    block = report.seeds_block(report.Run({"seeds": seeds}))
    rows = [line for line in block.splitlines() if line.startswith("| Satori reflect states")]
    assert rows == [
        "| Satori reflect states, after RL: self-correction | 0.375 ± 0.177 | 0.250–0.500 | 0.250 / 0.500 |",
        "| Satori reflect states, after RL: break | 0.375 ± 0.177 | 0.250–0.500 | 0.500 / 0.250 |",
    ]


def test_seed_runs_fail_naming_the_seed_without_an_experiment():
    shown = _exp_show({"seed0": (0, "t", _evaluate_of_seed(0.0))})
    with pytest.raises(report.ReportError, match="seed 1 .* run 'make seeds'"):
        report.seed_runs(shown, [0, 1])


def test_seed_overrides_set_every_seed_knob_and_keep_params_valid(tmp_path):
    from dvc.utils.hydra import apply_overrides

    args = report.seed_overrides(3)
    assert args[::2] == ["-S"] * (len(args) // 2)
    keys = {a.removeprefix("++").split("=")[0] for a in args[1::2]}
    assert {"seed", "satori.rl.seed", "train.sft_start0.seed", "train.rstar_ppm.seed"} <= keys
    assert not keys & set(report.FIXED_SEEDS)
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_overrides(params, args[1::2])  # what `dvc exp run -S` does to the experiment's params.yaml
    raw = P.load(params)
    P.validate(raw)
    assert raw["seed"] == 3 and raw["satori"]["rl"]["seed"] == 3 and raw["train"]["distill"]["seed"] == 3
    assert raw["bootstrap"]["seed"] == yaml.safe_load((ROOT / "params.yaml").read_text())["bootstrap"]["seed"]


def test_seeds_collect_from_real_dvc_experiments(tmp_path):
    """`dvc exp run --temp` per seed in a small DVC repo, then `tracemill seeds collect` reads them back."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("seed: 0\nsatori:\n  rl:\n    seed: 0\n")
    (repo / "evaluate.py").write_text(
        "import json, os, yaml\np = yaml.safe_load(open('params.yaml'))\nos.makedirs('metrics', exist_ok=True)\n"
        "acc = 0.5 + p['seed'] / 10 + p['train']['rstar_ppm']['seed'] / 100\n"
        "json.dump({'k': 2, 'problems': 10, 'split': 'eval', 'models': {'base': {'pass@1': acc}}},"
        " open('metrics/evaluate.json', 'w'))\n"
    )
    (repo / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python evaluate.py\n    deps: [evaluate.py]\n"
        "    params: [seed, satori.rl, train]\n"
        "    metrics:\n      - metrics/evaluate.json:\n          cache: false\n"
    )
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"],
    ):
        assert run(cmd, cwd=repo).returncode == 0
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for seed in (0, 1):
        done = run(["dvc", "exp", "run", "--temp", *report.seed_overrides(seed)], cwd=repo, extra_env=env)
        assert done.returncode == 0, done.stderr + done.stdout
    assert "seed: 0\n" in (repo / "params.yaml").read_text(), "the workspace stays as it was"
    collected = run(["tracemill", "seeds", "collect", "0", "1"], cwd=repo)
    assert collected.returncode == 0, collected.stderr + collected.stdout
    seeds = json.loads((repo / "metrics" / "seeds.json").read_text())
    assert seeds["models"]["base"]["pass@1"]["values"] == [0.5, 0.61]
    missing = run(["tracemill", "seeds", "collect", "0", "2"], cwd=repo)
    assert missing.returncode == 2 and "seed 2" in missing.stderr


def test_seeds_block_warns_when_the_committed_seed_does_not_reproduce_the_committed_evaluation(tmp_path):
    seeds = {
        "seeds": [0, 1],
        "k": 2,
        "problems": 4,
        "models": {"base": {"pass@1": {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "values": [0.5, 0.5]}}},
    }
    same = _write_run(
        tmp_path / "same", {"seeds": seeds, "evaluate": {"models": {"base": {"pass@1": 0.5}}}}, {"seed": 0}
    )
    assert report.seeds_block(report.load_run(same)).startswith("Seeds 0, 1 (n=2")
    moved = _write_run(
        tmp_path / "moved",
        {"seeds": seeds, "evaluate": {"models": {"base": {"pass@1": 0.75}, "start": {"pass@1": 0.5}}}},
        {"seed": 0},
    )
    assert report.seeds_block(report.load_run(moved)).startswith(
        "*Stale: seed 0 of these runs does not reproduce the committed evaluation (base, start not in the seed runs)"
    )
