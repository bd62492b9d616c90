"""The viewer's DuckDB: `tracemill.sql.connect`'s views, locked so no query can write or reach outside.

`connect` builds an in-memory catalog (DuckDB cannot open an in-memory database READ_ONLY), so the lock
is DuckDB's own: file access only under the data directory, no extension loading, and
`lock_configuration` so no query can undo it; the SQL box also runs nothing but one SELECT
(COPY, ATTACH, CREATE, SET, PRAGMA, INSTALL are refused by the statement's parsed type).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tracemill import records, sql
from tracemill.errors import TracemillError

SQL_TIMEOUT_S = 10.0
READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class ViewError(TracemillError):
    """Something a page cannot show: an unknown id, an unreadable table, a query that fails."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


class Catalog:
    def __init__(self, data_dir: str | Path, threads: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.warnings: list[str] = []
        self.con = sql.connect(self.data_dir, threads=threads, warn=self.warnings.append)
        self.written = {t for t in records.TABLES if sql.table_files(self.data_dir, t)}
        _share(self.con)
        _lock(self.con, self.data_dir)

    def rows(self, query: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cur = self.con.cursor()  # one cursor per call: requests run in threads
        try:
            cur.execute(query, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        except duckdb.Error as exc:
            raise ViewError(_first_line(exc)) from None
        finally:
            cur.close()

    def section(self, query: str, params: tuple | list = ()) -> tuple[list[dict[str, Any]], str | None]:
        """(rows, None), or ([], why) when a table it reads is unreadable: one part of a page fails alone."""
        try:
            return self.rows(query, params), None
        except ViewError as exc:
            return [], str(exc)

    def one(self, table: str, key: str, value: str, what: str | None = None) -> dict[str, Any]:
        found = self.rows(f"SELECT * FROM {table} WHERE {key} = ? LIMIT 1", [value])
        if not found:
            raise ViewError(self.missing(table, f"no {what or table} with {key} '{value}'"), status=404)
        return found[0]

    def missing(self, table: str, message: str) -> str:
        if table in self.written:
            return message
        return (
            f"{message}: table '{table}' has not been written yet (run `dvc repro`; its stage writes data/**/{table}/)"
        )

    def page(self, select: str, where: list[str], params: list, order: str, page: int, size: int) -> Page:
        """One page of `select` (a query with no WHERE) under the filters `where`, and the filtered count."""
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.rows(f"SELECT count(*) AS n FROM ({select}{clause})", params)[0]["n"]
        page = max(1, min(page, max(1, -(-total // size))))
        rows = self.rows(f"{select}{clause} {order} LIMIT {int(size)} OFFSET {int((page - 1) * size)}", params)
        return Page(rows, total, page, size)

    def user_query(self, text: str, page: int, size: int) -> tuple[list[str], list[tuple], bool]:
        """(columns, rows, more) of one page of a read-only query typed into the SQL box."""
        try:
            statements = self.con.extract_statements(text)
        except duckdb.Error as exc:
            raise ViewError(_first_line(exc)) from None
        if len(statements) != 1:
            raise ViewError(f"the SQL box runs one statement at a time, got {len(statements)}")
        statement = statements[0]
        if statement.type not in READ_ONLY_STATEMENTS:
            raise ViewError(f"read-only: only SELECT queries run here, not {statement.type.name}")
        query = statement.query.strip().rstrip(";")
        if statement.type is duckdb.StatementType.SELECT:
            # the newline ends a trailing `-- comment`, which would otherwise swallow the closing parenthesis
            query = f"SELECT * FROM ({query}\n) LIMIT {int(size) + 1} OFFSET {int((page - 1) * size)}"
        cur = self.con.cursor()
        timer = threading.Timer(SQL_TIMEOUT_S, cur.interrupt)
        timer.start()
        try:
            cur.execute(query)
            names = [d[0] for d in cur.description]
            result = cur.fetchmany(size + 1)
        except duckdb.InterruptException:
            raise ViewError(f"the query ran longer than {SQL_TIMEOUT_S:.0f} s and was stopped") from None
        except duckdb.Error as exc:
            raise ViewError(_first_line(exc)) from None
        finally:
            timer.cancel()
            cur.close()
        return names, result[:size], len(result) > size


def _share(con: duckdb.DuckDBPyConnection) -> None:
    """Turn the Arrow tables `connect` registers (empty tables, failing views' schemas) into catalog tables:
    a registered table lives on one connection, and each request queries through its own cursor."""
    registered = [
        r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall()
    ]
    for name in registered:
        con.execute(f'CREATE TABLE main."__{name}" AS SELECT * FROM "{name}"')
        con.unregister(name)
        con.execute(f'ALTER TABLE main."__{name}" RENAME TO "{name}"')


def _lock(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    con.execute("SET allowed_directories = [?]", [f"{data_dir}/"])
    for setting in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions"):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
