"""`dvc repro problems` in a temporary copy of the repository: real DVC, real Parquet, real DuckDB."""

import json

from conftest import run, stage_cmd

from tracemill import sql


def test_dvc_repro_problems_then_noop(repo_copy):
    first = run(["dvc", "repro", "problems"], cwd=repo_copy)
    assert first.returncode == 0, first.stderr + first.stdout
    con = sql.connect(repo_copy / "data")
    sources = dict(con.execute("SELECT source, count(*) FROM problems GROUP BY 1").fetchall())
    assert {"gsm8k", "math500", "mbpp", "humaneval"} <= set(sources)
    metrics = json.loads((repo_copy / "metrics" / "problems.json").read_text())
    assert metrics["problems"] == sum(sources.values())
    again = run(["dvc", "repro", "problems"], cwd=repo_copy)
    assert again.returncode == 0 and "didn't change" in again.stdout


def test_bad_params_fail_with_one_line_and_nonzero_exit(repo_copy):
    params = repo_copy / "params.yaml"
    params.write_text(
        params.read_text().replace("  kind: gsm8k\n", "  kind: gsm9k\n", 1)
    )  # the gsm8k test source, not gsm8k_train
    out = run(stage_cmd("problems"), cwd=repo_copy)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: params 'problems.sources[1].kind' = 'gsm9k' is not allowed; choose one of: "
        "gsm8k, math500, humaneval, mbpp, jsonl, parquet, hf_disk, synthetic"
    ]
