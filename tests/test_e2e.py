"""The whole graph end to end: `dvc repro` in a copy of the repository with tests/data/e2e.params.yaml
overlaid (a tiny policy, a handful of problems), every table checked with SQL against the stage metrics,
then a no-op `dvc repro` that runs nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_repo, run, stage_cmd

from tracemill import sql

STAGES = [
    "problems",
    "bootstrap",
    "hint_infer",
    "d_seed",
    "sft_start0",
    "rft",
    "d_start",
    "sft_start",
    "rstar_search@1",
    "rstar_search@2",
    "rstar_policy@1",
    "rstar_policy@2",
    "rstar_ppm@1",
    "rstar_ppm@2",
    "rstar_bestofn@1",
    "rstar_bestofn@2",
    "coat",
    "format_tune",
    "rae_states",
    "orm",
    "rl",
    "rl_sft",
    "rl_r2",
    "distill",
    "evaluate",
    "publish",
]
MODELS = [
    "bootstrap",
    "start0",
    "start",
    "rstar_policy_r1",
    "rstar_policy_r2",
    "rstar_ppm_r1",
    "rstar_ppm_r2",
    "format_tune",
    "rl",
    "rl_sft",
    "rl_r2",
    "distill",
]


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    overlay = run(["tracemill", "overlay", str(ROOT / "tests/data/e2e.params.yaml")], cwd=repo)
    assert overlay.returncode == 0, overlay.stderr
    done = run(["dvc", "repro"], cwd=repo, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for stage in STAGES:
        assert f"Running stage '{stage}'" in done.stdout, stage
    return repo


def test_every_stage_ran_and_every_model_loads(graph: Path) -> None:
    from transformers import AutoModelForCausalLM

    for name in MODELS:
        folder = graph / "models" / name
        assert (folder / "config.json").exists() and not folder.with_name(name + ".partial").exists(), name
    assert AutoModelForCausalLM.from_pretrained(graph / "models/distill").config.num_hidden_layers == 1
    assert (graph / "publish/tracemill-reasoning/README.md").exists()


def test_every_table_agrees_with_its_stage_metrics(graph: Path) -> None:
    con = sql.connect(graph / "data")
    q = lambda query: con.execute(query).fetchall()  # noqa: E731
    by_source = dict(q("SELECT source, count(*) FROM problems GROUP BY 1"))
    assert by_source["gsm8k"] == 5 and by_source["synthetic"] > 0
    assert sum(by_source.values()) == metrics(graph, "problems")["problems"]
    stages = dict(q("SELECT stage, count(*) FROM traces GROUP BY 1"))
    assert stages["hint_infer"] == 4 * 2  # greedy + one hint per problem
    assert stages["rft"] == 4 * 2 and stages["distill"] == 2 * 2
    evaluated = {m["name"] for m in yaml.safe_load((graph / "params.yaml").read_text())["evaluate"]["models"]}
    assert stages["evaluate"] == len(evaluated) * 4 * (1 + 1 + 2)  # greedy, greedy after one hint round, 2 samples
    assert q("SELECT count(*) FROM d_seed")[0][0] == metrics(graph, "d_seed")["size"]
    assert q("SELECT count(*) FROM d_start")[0][0] == metrics(graph, "d_start")["size"]
    for r in (1, 2):
        m = metrics(graph, f"rstar_search_round{r}")
        assert q(f"SELECT count(DISTINCT tree_id) FROM nodes WHERE round = {r}")[0][0] == m["problems"] == 3
        assert q(f"SELECT count(*) FROM pairs WHERE round = {r}")[0][0] == m["pairs"]
        assert (
            q(f"SELECT count(*) FILTER (WHERE selected) FROM trajectories WHERE round = {r}")[0][0]
            == metrics(graph, f"rstar_policy_round{r}")["examples"]
        )
        # PPM 1 scores every open node of round 2 as its first visit; answers keep their rule-based value
        scored = q(
            f"SELECT count(*) FILTER (WHERE ppm_score IS NOT NULL), count(*) FILTER (WHERE NOT terminal), "
            "count(*) FILTER (WHERE terminal AND ppm_score IS NOT NULL) "
            f"FROM nodes WHERE round = {r} AND depth > 0 AND exec_ok"
        )[0]
        assert (scored[0] == scored[1] and scored[2] == 0) if r == 2 else scored[0] == 0
        # failed code is never expanded
        assert (
            q(
                "SELECT count(*) FROM nodes c JOIN nodes p ON c.parent_id = p.node_id "
                f"WHERE NOT p.exec_ok AND c.round = {r}"
            )[0][0]
            == 0
        )
    assert (
        q("SELECT count(*) FROM coat")[0][0]
        == metrics(graph, "coat")["rows"]
        == metrics(graph, "format_tune")["examples"]
    )
    assert q("SELECT count(*) FROM rae_states")[0][0] == metrics(graph, "rae_states")["states"]
    assert q("SELECT count(*) FROM rae_states WHERE ends_with_reflect <> (outcome <> 'bare')")[0][0] == 0
    assert q("SELECT count(*) FROM sft WHERE source = 'distill'")[0][0] == metrics(graph, "distill")["examples"]
    evaluation = metrics(graph, "evaluate")
    assert (
        set(evaluation["models"])
        == evaluated
        >= {"base", "start0", "start", "rstar_r1", "rstar_r2", "satori_ft", "satori_rl", "satori_distill"}
    )
    for model, score in evaluation["models"].items():
        greedy = q(
            f"SELECT avg(correct::INT) FROM traces WHERE stage = 'evaluate' AND model = '{model}' "
            "AND sampling.temperature = 0 "
            "AND sample_index = 0"
        )[0][0]
        assert score["pass@1"] == pytest.approx(greedy), model
    rl = metrics(graph, "rl")  # a tiny policy that never reached an answer leaves RL nothing to start from
    assert rl["steps"] == (1 if metrics(graph, "rae_states")["states"] else 0) and rl["trained"] == bool(rl["steps"])
    assert (graph / "plots/rl_reward.csv").read_text().startswith("step,reward")
    r2 = metrics(graph, "rl_r2")  # round 2 starts from bare training problems, so it always has prompts
    assert r2["round"] == 2 and r2["steps"] == 1 and r2["trained"] is True
    assert (graph / "plots/rl_r2_reward.csv").read_text().startswith("step,reward")


def test_summary_and_a_noop_repro(graph: Path) -> None:
    summary = run(["tracemill", "summary"], cwd=graph)
    assert summary.returncode == 0 and "held-out accuracy" in summary.stdout and "satori_rl" in summary.stdout
    start = time.perf_counter()
    again = run(["dvc", "repro"], cwd=graph)
    elapsed = time.perf_counter() - start
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
    print(f"no-op dvc repro: {elapsed:.2f} s")


# ---- crash safety: each heavy stage SIGKILLed at several points, then re-run ------------------------

HEAVY = {  # dvc.yaml stage -> (its foreach key, its output folder)
    "hint_infer": (None, "data/hint_infer"),
    "rft": (None, "data/rft"),
    "rstar_search": ("1", "data/rstar_search/round=1"),
    "distill": (None, "data/distill"),
    "evaluate": (None, "data/evaluate"),
}
# A shard's parts written but not its marker; a part half-written (temp name, not renamed) in the
# re-run; the final metrics write after every shard is done.
KILL_POINTS = ["store.tables_written:1", "store.tmp_written:2", "store.json:1"]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every table under a stage folder, over its rows in a canonical order."""
    import hashlib

    from tracemill import store

    out = {}
    for table_dir in sorted(p for p in folder.rglob("*") if p.is_dir() and any(p.glob("part-*.parquet"))):
        rows = sorted(
            json.dumps(r, sort_keys=True, default=str) for r in store.read_rows(table_dir.parent, table_dir.name)
        )
        out[str(table_dir.relative_to(folder))] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_a_stage_killed_at_any_point_resumes_to_the_same_tables(graph: Path, name: str) -> None:
    import shutil

    key, folder = HEAVY[name]
    item = yaml.safe_load((graph / "params.yaml").read_text())["rstar"]["round_inputs"][key] if key else None
    cmd = stage_cmd(name, key, item, root=graph)  # what `dvc repro` ran
    uninterrupted = digest(graph / folder)
    assert uninterrupted, f"{folder} holds no table"
    shutil.rmtree(graph / folder)
    for point in KILL_POINTS:
        killed = run(cmd, cwd=graph, extra_env={"TRACEMILL_FAILPOINT": point})
        assert killed.returncode == -9, f"{name} at {point}: rc {killed.returncode}\n{killed.stderr[-2000:]}"
    again = run(cmd, cwd=graph)
    assert again.returncode == 0, again.stderr[-3000:]
    assert digest(graph / folder) == uninterrupted
    assert not list((graph / folder).rglob(".part-*.tmp-*"))  # no half-written part survives a re-run
