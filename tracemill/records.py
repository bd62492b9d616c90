"""Every table tracemill writes: one explicit pyarrow schema each, checked on every write.

Queryable columns come first (ids, problem_id, stage, round, correct, q, token counts); free-form
metadata is a JSON string at the end. Segments are a list of structs so DuckDB can UNNEST them.
Ids are content hashes (`content_id`) of what defines a row, so a re-run writes the same ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from tracemill.errors import SchemaError

SCHEMA_VERSION = 2  # 2: traces' hint_at, sft's hint_loss

# Segment kinds of a generated text. In a generated trace the flag says who wrote the text: the
# model's text and code carry loss, an inserted hint and the tool output do not. An `sft` row says
# what trains: START's sft stage turns the hint's loss on (`start.hint_loss`), so the model learns
# to produce the hint itself; tool output always stays visible context without loss.
SEGMENT_KINDS = ("prompt", "model", "hint", "code", "output")
LOSS_KINDS = frozenset({"model", "code"})
HINT_POSITIONS = ("marker", "stop")  # where a hint was inserted: after a "Wait"/"Alternatively", or at the stop

SEGMENT = pa.struct(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("hint_id", pa.string()),
        pa.field("loss", pa.bool_(), nullable=False),
    ]
)
SEGMENTS = pa.list_(SEGMENT)

SAMPLING = pa.struct(
    [
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("max_tokens", pa.int64()),
        pa.field("seed", pa.int64()),
    ]
)


def _f(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _id(name: str) -> pa.Field:
    return pa.field(name, pa.string(), nullable=False)


METADATA = _f("metadata", pa.string())  # JSON object, free-form, always last

_TRACE_FIELDS = [
    _id("trace_id"),
    _id("problem_id"),
    _f("stage", pa.string(), False),
    _f("round", pa.int32(), False),
    _f("model", pa.string(), False),
    _f("sample_index", pa.int32(), False),
    _f("hint_id", pa.string()),
    _f("hint_kind", pa.string()),
    _f("correct", pa.bool_()),
    _f("final_answer", pa.string()),
    _f("grader", pa.string()),
    _f("tool_calls", pa.int32(), False),
    _f("prompt_tokens", pa.int64(), False),
    _f("cached_prompt_tokens", pa.int64(), False),
    _f("generated_tokens", pa.int64(), False),
    _f("finish_reason", pa.string(), False),
    _f("sampling", SAMPLING),
    _f("segments", SEGMENTS, False),
    _f("hint_at", pa.list_(pa.string())),  # one entry per inserted hint, in order: HINT_POSITIONS
]

_SELECTED_FIELDS = [
    _f("reason_kept", pa.string(), False),
    _f("dedup_cluster", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    "problems": pa.schema(
        [
            _id("problem_id"),
            _f("source", pa.string(), False),
            _f("source_id", pa.string()),
            _f("split", pa.string(), False),  # train | eval | test
            _f("domain", pa.string(), False),  # math | code
            _f("difficulty", pa.int32()),
            _f("question", pa.string(), False),
            _f("answer", pa.string()),  # math: final answer; code: reference solution if known
            _f("tests", pa.list_(pa.string())),  # code: assert lines or a check(candidate) body
            _f("test_format", pa.string()),  # humaneval | mbpp
            _f("entry_point", pa.string()),
            _f("test_setup", pa.string()),
            _f("license", pa.string()),
            METADATA,
        ]
    ),
    "traces": pa.schema(_TRACE_FIELDS + [METADATA]),
    "d_seed": pa.schema(_TRACE_FIELDS + _SELECTED_FIELDS + [METADATA]),
    "d_start": pa.schema(_TRACE_FIELDS + _SELECTED_FIELDS + [METADATA]),
    "nodes": pa.schema(
        [
            _id("node_id"),
            _id("tree_id"),
            _f("parent_id", pa.string()),
            _id("problem_id"),
            _f("round", pa.int32(), False),
            _f("depth", pa.int32(), False),
            _f("step_text", pa.string(), False),
            _f("code", pa.string()),
            _f("exec_ok", pa.bool_(), False),
            _f("exec_output", pa.string()),
            _f("terminal", pa.bool_(), False),
            _f("answer", pa.string()),
            _f("correct", pa.bool_()),
            _f("visits", pa.int32(), False),
            _f("q", pa.float64(), False),
            _f("ppm_score", pa.float64()),
            METADATA,
        ]
    ),
    "trajectories": pa.schema(
        [
            _id("trajectory_id"),
            _id("tree_id"),
            _id("problem_id"),
            _f("round", pa.int32(), False),
            _f("node_ids", pa.list_(pa.string()), False),
            _f("avg_q", pa.float64(), False),
            _f("correct", pa.bool_(), False),
            _f("selected", pa.bool_(), False),
            _f("final_answer", pa.string()),
            METADATA,
        ]
    ),
    "pairs": pa.schema(
        [
            _id("pair_id"),
            _id("problem_id"),
            _id("tree_id"),
            _f("round", pa.int32(), False),
            _f("prefix", pa.string(), False),
            _f("chosen", pa.string(), False),
            _f("rejected", pa.string(), False),
            _f("chosen_q", pa.float64(), False),
            _f("rejected_q", pa.float64(), False),
            _f("final_step", pa.bool_(), False),
            _f("chosen_node_id", pa.string()),
            _f("rejected_node_id", pa.string()),
            METADATA,
        ]
    ),
    "coat": pa.schema(
        [
            _id("coat_id"),
            _id("problem_id"),
            _f("kind", pa.string(), False),  # plain | reflect | explore
            _f("text", pa.string(), False),
            _f("correct", pa.bool_(), False),
            _f("source_node_ids", pa.list_(pa.string()), False),
            METADATA,
        ]
    ),
    "rae_states": pa.schema(
        [
            _id("state_id"),
            _id("problem_id"),
            _f("prefix_steps", pa.list_(pa.string()), False),
            _f("node_id", pa.string(), False),
            _f("q", pa.float64(), False),
            _f("outcome", pa.string(), False),  # correct | failed
            _f("ends_with_reflect", pa.bool_(), False),
            METADATA,
        ]
    ),
    "sft": pa.schema(
        [
            _id("example_id"),
            _f("source", pa.string(), False),  # the table or stage it came from
            _f("problem_id", pa.string()),
            _f("prompt", pa.string(), False),
            _f("segments", SEGMENTS, False),
            _f(
                "hint_loss", pa.bool_()
            ),  # START rows: whether hint segments were trained on; null where a source has no hints
            METADATA,
        ]
    ),
    "rejected": pa.schema(
        [
            _id("rejected_id"),
            _f("stage", pa.string(), False),
            _f("table", pa.string(), False),
            _f("reason", pa.string(), False),
            _f("detail", pa.string()),
            _f("source", pa.string()),
            _f("raw", pa.string(), False),  # the row as JSON (or its repr when not JSON-able)
            METADATA,
        ]
    ),
}

# Sort key of each table: Parquet is written sorted by it so row-group statistics prune lookups.
KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "traces": ("problem_id", "trace_id"),
    "d_seed": ("problem_id", "trace_id"),
    "d_start": ("problem_id", "trace_id"),
    "nodes": ("tree_id", "node_id"),
    "trajectories": ("tree_id", "trajectory_id"),
    "pairs": ("problem_id", "pair_id"),
    "coat": ("problem_id", "coat_id"),
    "rae_states": ("problem_id", "state_id"),
    "sft": ("example_id",),
    "rejected": ("stage", "rejected_id"),
}

TABLES = tuple(SCHEMAS)


def schema(table: str) -> pa.Schema:
    try:
        base = SCHEMAS[table]
    except KeyError:
        raise SchemaError(f"unknown table '{table}'; known tables: {', '.join(TABLES)}") from None
    return base.with_metadata(
        {b"tracemill.table": table.encode(), b"tracemill.schema_version": str(SCHEMA_VERSION).encode()}
    )


def content_id(*parts: Any, length: int = 16) -> str:
    """A stable hex id from the parts that define a row (JSON-encoded, so 1 and "1" differ)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def segment(kind: str, text: str, hint_id: str | None = None) -> dict[str, Any]:
    if kind not in SEGMENT_KINDS:
        raise SchemaError(f"segment kind '{kind}' is not one of {', '.join(SEGMENT_KINDS)}")
    return {"kind": kind, "text": text, "hint_id": hint_id, "loss": kind in LOSS_KINDS}


def to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def validate(table: str, data: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Return `data` as a pyarrow Table of `table`'s schema, or raise naming the table and column."""
    target = schema(table)
    if isinstance(data, pa.Table):
        return _validate_arrow(table, target, data)
    rows = list(data)
    names = set(target.names)
    for i, row in enumerate(rows):
        keys = set(row)
        missing = [n for n in target.names if n not in keys and not target.field(n).nullable]
        if missing:
            raise SchemaError(f"table '{table}': row {i} is missing column '{missing[0]}'")
        extra = sorted(keys - names)
        if extra:
            raise SchemaError(f"table '{table}': row {i} has unknown column '{extra[0]}'")
    columns = {}
    for field in target:
        values = [row.get(field.name) for row in rows]
        try:
            columns[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"table '{table}': column '{field.name}' expects {field.type}: {exc}") from None
        if not field.nullable and columns[field.name].null_count:
            raise SchemaError(f"table '{table}': column '{field.name}' must not be null")
    return pa.Table.from_pydict(columns, schema=target)


def _validate_arrow(table: str, target: pa.Schema, data: pa.Table) -> pa.Table:
    for field in target:
        if field.name not in data.column_names:
            raise SchemaError(f"table '{table}': missing column '{field.name}'")
        got = data.schema.field(field.name).type
        if not got.equals(field.type):
            raise SchemaError(f"table '{table}': column '{field.name}' is {got}, expected {field.type}")
        if not field.nullable and data.column(field.name).null_count:
            raise SchemaError(f"table '{table}': column '{field.name}' must not be null")
    extra = [n for n in data.column_names if n not in target.names]
    if extra:
        raise SchemaError(f"table '{table}': unknown column '{extra[0]}'")
    return data.select(target.names).cast(target)
