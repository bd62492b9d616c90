import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracemill import records
from tracemill.errors import ParamsError, TracemillError
from tracemill.params import parse_section
from tracemill.problems import ProblemsParams, build_problems
from tracemill.store import Quarantine

SEEDS = Path(__file__).resolve().parent.parent / "data" / "seeds"


def build(sources, **kw):
    cfg = parse_section(ProblemsParams, {"sources": sources, **kw}, "problems")
    q = Quarantine("problems")
    rows, reports = build_problems(cfg, q)
    records.validate("problems", rows)
    return rows, reports, q.take()


def test_gsm8k_answer_is_the_number_after_hashes_without_separators():
    rows, _, _ = build([{"name": "gsm8k", "kind": "gsm8k", "path": str(SEEDS / "gsm8k_test.jsonl"), "limit": 1319}])
    assert len(rows) == 1319
    assert all(r["answer"] and "," not in r["answer"] and "####" not in r["answer"] for r in rows)
    first = json.loads((SEEDS / "gsm8k_test.jsonl").open().readline())
    assert rows[0]["answer"] == first["answer"].split("####")[-1].strip()


def test_math500_keeps_latex_answer_and_level():
    rows, _, _ = build([{"name": "math500", "kind": "math500", "path": str(SEEDS / "math500_test.jsonl")}])
    assert len(rows) == 500
    assert {r["difficulty"] for r in rows} == {1, 2, 3, 4, 5}
    assert any("\\frac" in r["answer"] for r in rows)


def test_code_sources_carry_tests_and_entry_points():
    rows, _, _ = build(
        [
            {"name": "mbpp", "kind": "mbpp", "path": str(SEEDS / "mbpp.jsonl"), "split": "auto", "domain": "code"},
            {"name": "humaneval", "kind": "humaneval", "path": str(SEEDS / "humaneval_test.jsonl"), "domain": "code"},
        ]
    )
    mbpp = [r for r in rows if r["source"] == "mbpp"]
    assert len(mbpp) == 974 and sum(r["split"] == "test" for r in mbpp) == 500
    assert all(r["entry_point"] and len(r["tests"]) >= 3 and r["test_format"] == "mbpp" for r in mbpp)
    he = [r for r in rows if r["source"] == "humaneval"]
    assert len(he) == 164 and all("def check(candidate)" in r["tests"][0] for r in he)


def test_malformed_rows_are_quarantined_with_reasons(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"q": "What is 2+2?", "a": "4", "id": "1"}
    lines = [
        json.dumps(good).encode(),
        b'{"q": "broken json"',
        b'{"q": "caf\xe9 latin-1", "a": "1"}',
        json.dumps({"q": "", "a": "3"}).encode(),
        json.dumps({"q": "no answer here"}).encode(),
        json.dumps({"q": "x" * 500, "a": "1"}).encode(),
        json.dumps({"q": "What is 2+2?", "a": "4", "id": "1"}).encode(),
        json.dumps([1, 2]).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = {
        "name": "mine",
        "kind": "jsonl",
        "path": str(path),
        "columns": {"question": "q", "answer": "a", "source_id": "id"},
    }
    rows, reports, rejected = build([source], max_question_chars=200)
    assert len(rows) == 1 and rows[0]["source_id"] == "1"
    assert reports["mine"].rejected == {
        "bad_json": 2,
        "bad_utf8": 1,
        "no_question": 1,
        "no_answer": 1,
        "too_long": 1,
        "duplicate_id": 1,
    }
    assert {r["reason"] for r in rejected} == set(reports["mine"].rejected)
    assert all(r["raw"] and r["source"] == "mine" for r in rejected)


def test_parquet_source_with_column_mapping(tmp_path):
    pq.write_table(
        pa.table({"prompt": ["What is 3*3?", "What is 5-1?"], "target": ["9", "4"], "lvl": [1, 2]}),
        tmp_path / "p.parquet",
    )
    source = {
        "name": "pq",
        "kind": "parquet",
        "path": str(tmp_path / "p.parquet"),
        "split": "train",
        "columns": {"question": "prompt", "answer": "target", "difficulty": "lvl"},
    }
    rows, _, _ = build([source])
    assert [(r["answer"], r["difficulty"], r["split"]) for r in rows] == [("9", 1, "train"), ("4", 2, "train")]


def test_datasets_folder_on_disk(tmp_path):
    import datasets

    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"question": ["What is 7+1?"], "answer": ["8"]})})
    ds.save_to_disk(str(tmp_path / "ds"))
    rows, _, _ = build([{"name": "hf", "kind": "hf_disk", "path": str(tmp_path / "ds"), "hf_split": "train"}])
    assert rows[0]["answer"] == "8"
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.jsonl").write_text(json.dumps({"question": "What is 1+2?", "answer": "3"}) + "\n")
    rows, _, _ = build([{"name": "hfraw", "kind": "hf_disk", "path": str(tmp_path / "raw")}])
    assert rows[0]["answer"] == "3"


def test_ids_are_deterministic_across_runs():
    src = [{"name": "math500", "kind": "math500", "path": str(SEEDS / "math500_test.jsonl"), "limit": 20}]
    assert [r["problem_id"] for r in build(src)[0]] == [r["problem_id"] for r in build(src)[0]]


def test_missing_source_file_is_one_clear_error(tmp_path):
    with pytest.raises(TracemillError, match=r"'.*missing.jsonl' not found — fix problems.sources\[x\].path"):
        build([{"name": "x", "kind": "jsonl", "path": str(tmp_path / "missing.jsonl")}])


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"sources": [{"name": "x", "kind": "csv", "path": "a"}]},
            r"'problems.sources\[0\].kind' = 'csv' is not allowed; choose one of: gsm8k",
        ),
        ({"sources": [{"name": "x", "kind": "jsonl"}]}, "path' is required"),
        (
            {"sources": [{"name": "x", "kind": "jsonl", "path": "a", "colums": {}}]},
            r"'problems.sources\[0\].colums' is not a known key",
        ),
        ({"sources": []}, "is empty"),
        (
            {"sources": [{"name": "x", "kind": "jsonl", "path": "a"}], "max_question_chars": "big"},
            "must be of type int",
        ),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_section(ProblemsParams, raw, "problems")
