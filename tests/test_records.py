import pyarrow as pa
import pytest

from tracemill import records
from tracemill.errors import SchemaError


def problem_row(**over):
    row = {
        "problem_id": records.content_id("problem", "s", "q"),
        "source": "s",
        "source_id": None,
        "split": "test",
        "domain": "math",
        "difficulty": None,
        "question": "What is 1+1?",
        "answer": "2",
        "tests": None,
        "test_format": None,
        "entry_point": None,
        "test_setup": None,
        "license": "MIT",
        "metadata": None,
    }
    row.update(over)
    return row


def test_every_design_table_has_a_schema_and_key():
    expected = {
        "problems",
        "traces",
        "d_seed",
        "d_start",
        "nodes",
        "trajectories",
        "pairs",
        "coat",
        "rae_states",
        "sft",
        "rejected",
    }
    assert set(records.SCHEMAS) == expected
    for table in expected:
        assert set(records.KEYS[table]) <= set(records.SCHEMAS[table].names)
        assert records.SCHEMAS[table].names[-1] == "metadata"
        meta = records.schema(table).metadata
        assert meta[b"tracemill.schema_version"] == str(records.SCHEMA_VERSION).encode()


def test_validate_round_trips_rows():
    table = records.validate("problems", [problem_row()])
    assert table.schema.equals(records.schema("problems"), check_metadata=False)
    assert table.to_pylist()[0]["question"] == "What is 1+1?"


def test_missing_column_names_table_and_column():
    row = problem_row()
    del row["question"]
    with pytest.raises(SchemaError, match=r"table 'problems'.*'question'"):
        records.validate("problems", [row])


def test_mistyped_column_names_table_and_column():
    with pytest.raises(SchemaError, match=r"table 'problems': column 'difficulty'"):
        records.validate("problems", [problem_row(difficulty="hard")])


def test_unknown_column_is_rejected():
    with pytest.raises(SchemaError, match="unknown column 'extra'"):
        records.validate("problems", [problem_row(extra=1)])


def test_null_in_required_column_is_rejected():
    with pytest.raises(SchemaError, match="column 'question' must not be null"):
        records.validate("problems", [problem_row(question=None)])


def test_arrow_table_with_wrong_type_is_rejected():
    good = records.validate("problems", [problem_row()])
    bad = good.set_column(good.schema.get_field_index("difficulty"), "difficulty", pa.array(["x"]))
    with pytest.raises(SchemaError, match="column 'difficulty' is string"):
        records.validate("problems", bad)


def test_content_id_is_deterministic_and_type_sensitive():
    assert records.content_id("a", 1) == records.content_id("a", 1)
    assert records.content_id("a", 1) != records.content_id("a", "1")
    assert len(records.content_id("x")) == 16


def test_segments_carry_loss_flags():
    segs = [records.segment(k, "t") for k in records.SEGMENT_KINDS]
    assert [s["loss"] for s in segs] == [False, True, False, True, False]
    with pytest.raises(SchemaError):
        records.segment("tool", "x")
