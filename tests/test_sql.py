import json
import subprocess
import sys

import duckdb
import pytest

from tracemill import records, sql, store


def trace_row(problem: str, i: int, hint: bool, correct: bool) -> dict:
    segs = [records.segment("prompt", "Q"), records.segment("model", "Let me think. Wait,")]
    if hint:
        segs.append(records.segment("hint", "Let me check with Python.", hint_id="h1"))
    segs.append(records.segment("model", "\\boxed{4}"))
    return {
        "trace_id": records.content_id(problem, i),
        "problem_id": problem,
        "stage": "hint_infer",
        "round": 0,
        "model": "m",
        "sample_index": i,
        "hint_id": "h1" if hint else None,
        "hint_kind": None,
        "correct": correct,
        "final_answer": "4",
        "grader": "exact",
        "tool_calls": 0,
        "prompt_tokens": 10,
        "cached_prompt_tokens": 5,
        "generated_tokens": 7,
        "finish_reason": "stop",
        "sampling": None,
        "segments": segs,
        "metadata": None,
    }


def write_traces(data_dir, stage_name="hint_infer"):
    out = store.StageOutput(data_dir / stage_name, ["traces"], "fp")
    out.write_shard(0, {"traces": [trace_row("p1", 0, False, False), trace_row("p1", 1, True, True)]})
    out.write_shard(1, {"traces": [trace_row("p2", 0, True, False)]})
    return out


def test_a_data_dir_under_a_hidden_folder_is_read_and_hidden_folders_beneath_it_are_not(tmp_path):
    data = tmp_path / ".cache" / "project" / "data"
    write_traces(data)
    stale = store.StageOutput(data / "hint_infer" / ".tmp-write", ["traces"], "fp")  # a temp folder beneath
    stale.write_shard(0, {"traces": [trace_row("p9", 0, False, True)]})
    con = sql.connect(data)
    assert con.execute("SELECT count(*), count(DISTINCT problem_id) FROM traces").fetchone() == (3, 2)


def test_views_cover_every_table_and_unnest_segments(tmp_path):
    write_traces(tmp_path)
    con = sql.connect(tmp_path)
    for table in records.TABLES:
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == (3 if table == "traces" else 0)
    hints = con.execute(
        "SELECT count(*) FROM (SELECT unnest(segments) AS s FROM traces) WHERE s.kind = 'hint'"
    ).fetchone()[0]
    assert hints == 2
    by_hint = con.execute(
        "SELECT hint_id IS NOT NULL AS hinted, avg(correct::int) FROM traces GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert by_hint == [(False, 0.0), (True, 0.5)]
    cols = [c[0] for c in con.execute("DESCRIBE traces").fetchall()]
    assert cols == records.SCHEMAS["traces"].names


def test_traces_from_several_stages_share_one_view(tmp_path):
    write_traces(tmp_path, "hint_infer")
    write_traces(tmp_path, "rft")
    assert sql.connect(tmp_path).execute("SELECT count(*) FROM traces").fetchone()[0] == 6


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tracemill.cli", "sql", *args], cwd=cwd, capture_output=True, text=True
    )


def test_cli_formats_and_catalog(tmp_path):
    write_traces(tmp_path / "data")
    out = _cli("select problem_id, count(*) n from traces group by 1 order by 1", "--format", "json", cwd=tmp_path)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"problem_id": "p1", "n": 2},
        {"problem_id": "p2", "n": 1},
    ]
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


def write_rejected(data_dir):
    rows = [
        {
            "rejected_id": records.content_id("r", i),
            "stage": "problems",
            "table": "problems",
            "reason": "no_answer",
            "detail": None,
            "source": "gsm8k",
            "raw": "{}",
            "metadata": None,
        }
        for i in range(4)
    ]
    store.StageOutput(data_dir / "problems", ["rejected"], "fp").write_shard(0, {"rejected": rows})


def test_cli_serves_the_other_tables_when_one_table_has_a_truncated_part(tmp_path):
    write_traces(tmp_path / "data")
    write_rejected(tmp_path / "data")
    part = tmp_path / "data" / "hint_infer" / "traces" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:100])
    shown = f"'{part.relative_to(tmp_path)}'"

    listing = _cli(cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    warning = listing.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: table 'traces' is unavailable"), warning
    assert shown in warning[0] and "dvc repro" in warning[0]
    assert "rejected" in listing.stdout and "unreadable" in listing.stdout

    other = _cli("select count(*) AS n from rejected", "-f", "csv", cwd=tmp_path)
    assert other.returncode == 0 and other.stdout.splitlines() == ['"n"', "4"]
    assert len(other.stderr.strip().splitlines()) == 1  # the warning

    for fmt in ("table", "csv"):
        broken = _cli("select problem_id from traces where correct", "-f", fmt, cwd=tmp_path)
        lines = broken.stderr.strip().splitlines()
        assert broken.returncode == 2 and "Traceback" not in broken.stderr, broken.stderr
        assert lines[-1].startswith("error: ") and shown in lines[-1] and "dvc repro" in lines[-1], lines


def test_a_table_with_a_bad_part_fails_every_query_that_reads_it(tmp_path):
    write_traces(tmp_path)
    (tmp_path / "hint_infer" / "traces" / "part-00000.parquet").write_bytes(b"not parquet")
    warnings = []
    con = sql.connect(tmp_path, warn=warnings.append)
    assert len(warnings) == 1 and "part-00000.parquet" in warnings[0]
    assert [c[0] for c in con.execute("DESCRIBE traces").fetchall()] == records.SCHEMAS["traces"].names
    for query in (
        "SELECT count(*) FROM traces",
        "SELECT trace_id FROM traces WHERE round > 1",
        "SELECT count(*) FROM (SELECT unnest(segments) FROM traces)",
    ):
        with pytest.raises(duckdb.Error, match="table 'traces' is unavailable"):
            con.execute(query).fetchall()
    assert con.execute("SELECT count(*) FROM problems").fetchone()[0] == 0
    assert dict((t, n) for t, n, _ in sql.catalog(con))["traces"] is None
