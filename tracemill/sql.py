"""`tracemill sql`: an in-memory DuckDB with one view per table over `data/**/<table>/part-*.parquet`.

No import step: the views read the Parquet parts where the stages wrote them. A table no stage has
written yet is an empty view with its declared schema, so queries never fail on a missing table. A
table with a part whose Parquet footer does not read (truncated, not Parquet) is reported in one
warning line and becomes a view that fails every query on it with that message; the other tables
are served as usual. Only footers are checked (checksums would cost a full read per query).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import duckdb

from tracemill import records, store
from tracemill.store import PART_GLOB


def table_files(data_dir: Path, table: str) -> list[Path]:
    """The parts of `table` beneath data_dir; hidden folders beneath it (a crashed write's temp folder) are
    skipped, while a data_dir that itself lies under a hidden folder (~/.cache/...) is read as any other."""
    return sorted(
        p
        for p in data_dir.glob(f"**/{table}/{PART_GLOB}")
        if not any(s.startswith(".") for s in p.relative_to(data_dir).parts)
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def one_row(cursor: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The row of an aggregate query without GROUP BY, which always returns exactly one."""
    return cast(tuple[Any, ...], cursor.fetchone())


def connect(
    data_dir: str | Path = "data", threads: int | None = None, warn: Callable[[str], None] = _stderr
) -> duckdb.DuckDBPyConnection:
    data_dir = Path(data_dir)
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in records.TABLES:
        files = table_files(data_dir, table)
        broken = [(f, why) for f in files if (why := store.footer_problem(f))]
        if broken:
            message = f"table '{table}' is unavailable: {store.part_error(*broken[0])}"
            warn(f"warning: {message}" + (f" ({len(broken) - 1} more bad parts)" if len(broken) > 1 else ""))
            _failing_view(con, table, message)
        elif files:
            listing = ", ".join(_quote(str(f)) for f in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name = true)")
        else:
            con.register(table, records.schema(table).empty_table())
    return con


def _failing_view(con: duckdb.DuckDBPyConnection, table: str, message: str) -> None:
    """A view with `table`'s columns that raises `message` in any query that reads a row or a column of
    it: error() sits in the filter (row counts) and in every column (so no projection prunes it away)."""
    con.register(f"_{table}_schema", records.schema(table).empty_table())
    fail = f"error({_quote(message)})"
    columns = ", ".join(
        f'CASE WHEN {fail} IS NULL THEN e."{name}" END AS "{name}"' for name in records.schema(table).names
    )
    con.execute(
        f"CREATE VIEW {table} AS SELECT {columns} FROM range(1) LEFT JOIN _{table}_schema e ON true "
        f"WHERE {fail} IS NULL"
    )


def catalog(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int | None, str]]:
    """(table, rows, columns) for every table, for `tracemill sql` with no query; rows is None for a
    table that cannot be read (connect has said why)."""
    out = []
    for table in records.TABLES:
        try:
            rows = one_row(con.execute(f"SELECT count(*) FROM {table}"))[0]
        except duckdb.Error:
            rows = None
        cols = ", ".join(f.name for f in records.SCHEMAS[table])
        out.append((table, rows, cols))
    return out
