import json
import subprocess
import sys
import time

from tracemill import records, sql, store


def trace_row(problem: str, i: int, hint: bool, correct: bool) -> dict:
    segs = [records.segment("prompt", "Q"), records.segment("model", "Let me think. Wait,")]
    if hint:
        segs.append(records.segment("hint", "Let me check with Python.", hint_id="h1"))
    segs.append(records.segment("model", "\\boxed{4}"))
    return {
        "trace_id": records.content_id(problem, i), "problem_id": problem, "stage": "hint_infer", "round": 0,
        "model": "m", "sample_index": i, "hint_id": "h1" if hint else None, "hint_kind": None, "correct": correct,
        "final_answer": "4", "grader": "exact", "tool_calls": 0, "prompt_tokens": 10, "cached_prompt_tokens": 5,
        "generated_tokens": 7, "finish_reason": "stop", "sampling": None, "segments": segs, "metadata": None,
    }


def write_traces(data_dir, stage_name="hint_infer"):
    out = store.StageOutput(data_dir / stage_name, ["traces"], "fp")
    out.write_shard(0, {"traces": [trace_row("p1", 0, False, False), trace_row("p1", 1, True, True)]})
    out.write_shard(1, {"traces": [trace_row("p2", 0, True, False)]})
    return out


def test_views_cover_every_table_and_unnest_segments(tmp_path):
    write_traces(tmp_path)
    con = sql.connect(tmp_path)
    for table in records.TABLES:
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == (3 if table == "traces" else 0)
    hints = con.execute(
        "SELECT count(*) FROM (SELECT unnest(segments) AS s FROM traces) WHERE s.kind = 'hint'"
    ).fetchone()[0]
    assert hints == 2
    by_hint = con.execute("SELECT hint_id IS NOT NULL AS hinted, avg(correct::int) FROM traces GROUP BY 1 ORDER BY 1").fetchall()
    assert by_hint == [(False, 0.0), (True, 0.5)]
    cols = [c[0] for c in con.execute("DESCRIBE traces").fetchall()]
    assert cols == records.SCHEMAS["traces"].names


def test_traces_from_several_stages_share_one_view(tmp_path):
    write_traces(tmp_path, "hint_infer")
    write_traces(tmp_path, "rft")
    assert sql.connect(tmp_path).execute("SELECT count(*) FROM traces").fetchone()[0] == 6


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tracemill.cli", "sql", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_formats_and_catalog(tmp_path):
    write_traces(tmp_path / "data")
    out = _cli("select problem_id, count(*) n from traces group by 1 order by 1", "--format", "json", cwd=tmp_path)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [{"problem_id": "p1", "n": 2}, {"problem_id": "p2", "n": 1}]
    csv = _cli("select count(*) AS n from traces", "-f", "csv", cwd=tmp_path)
    assert csv.stdout.splitlines() == ['"n"', "3"]
    listing = _cli(cwd=tmp_path)
    assert "traces" in listing.stdout and "problems" in listing.stdout
    bad = _cli("select * from nope", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: Catalog Error")
    pq_out = _cli("select * from traces", "-f", "parquet", "-o", str(tmp_path / "x.parquet"), cwd=tmp_path)
    assert pq_out.returncode == 0 and (tmp_path / "x.parquet").exists()


def test_sql_path_does_not_import_torch():
    code = "import sys, tracemill.cli, tracemill.sql; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
