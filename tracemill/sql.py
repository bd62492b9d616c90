"""`tracemill sql`: an in-memory DuckDB with one view per table over `data/**/<table>/part-*.parquet`.

No import step: the views read the Parquet parts where the stages wrote them. A table no stage has
written yet is an empty view with its declared schema, so queries never fail on a missing table.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from tracemill import records
from tracemill.store import PART_GLOB


def table_files(data_dir: Path, table: str) -> list[Path]:
    return sorted(p for p in data_dir.glob(f"**/{table}/{PART_GLOB}") if not any(s.startswith(".") for s in p.parts))


def connect(data_dir: str | Path = "data", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    data_dir = Path(data_dir)
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in records.TABLES:
        files = table_files(data_dir, table)
        if files:
            listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name = true)")
        else:
            con.register(table, records.schema(table).empty_table())
    return con


def catalog(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, str]]:
    """(table, rows, columns) for every table, for `tracemill sql` with no query."""
    out = []
    for table in records.TABLES:
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        cols = ", ".join(f.name for f in records.SCHEMAS[table])
        out.append((table, rows, cols))
    return out
