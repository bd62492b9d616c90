"""The `tracemill` command line. Kept light: heavy libraries load only inside the command that needs them."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tracemill.errors import TracemillError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tracemill: a versioned dataset factory for LLM reasoning data.")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.callback()
def _root() -> None:
    """tracemill: a versioned dataset factory for LLM reasoning data."""


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def check(params: Annotated[Path, typer.Option(help="params file to check")] = Path("params.yaml")) -> None:
    """Check every section of a params file before any stage runs: unknown keys, types, allowed values."""
    from tracemill import params as P
    from tracemill.errors import TracemillError

    try:
        sections = P.validate(P.load(params))
    except TracemillError as exc:
        fail(str(exc))
    typer.echo(f"{params}: ok ({len(sections)} sections)")


@app.command()
def overlay(
    overrides: Annotated[Path, typer.Argument(help="a YAML file of keys to set, e.g. params.gpu.yaml")],
    params: Annotated[Path, typer.Option(help="params file to update in place")] = Path("params.yaml"),
) -> None:
    """Merge an overrides file into params.yaml (mappings merge key by key, lists and values replace),
    keeping its comments; the merged result is validated before anything is written."""
    from tracemill import params as P
    from tracemill.errors import TracemillError

    try:
        changed = P.overlay(params, overrides)
    except TracemillError as exc:
        fail(str(exc))
    typer.echo(f"{params}: {len(changed)} keys set from {overrides}")
    for key in changed:
        typer.echo(f"  {key}")


@app.command("params-doc")
def params_doc(params: Annotated[Path, typer.Option(help="params file to document")] = Path("params.yaml")) -> None:
    """Print a Markdown table of every key in a params file with its value and comment."""
    from tracemill import params as P

    sys.stdout.write(P.doc_table(params))


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help="SQL over the views; omit to list the tables")] = None,
    data: Annotated[Path, typer.Option(help="data directory the stages write")] = Path("data"),
    format: Annotated[Format, typer.Option("--format", "-f", help="output format")] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write to a file (required for parquet)")] = None,
    max_rows: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
) -> None:
    """Query every table with DuckDB: one view per table over data/**/<table>/part-*.parquet."""
    import duckdb

    from tracemill import sql as sqlmod

    con = sqlmod.connect(data)
    if query is None:
        _print_catalog(sqlmod.catalog(con))
        return
    if format is Format.parquet and output is None:
        fail("--format parquet needs --output FILE")
    try:
        if format is Format.table:
            cur = con.execute(query)
            if cur.description is not None:  # None for a statement with no result (SET, CREATE ...)
                _print_table(cur, max_rows)
            return
        rel = con.sql(query)
        if rel is None:
            return
        arrow = rel.to_arrow_table()
    except duckdb.Error as exc:
        fail(str(exc).splitlines()[0])
    if format is Format.parquet:
        import pyarrow.parquet as pq

        pq.write_table(arrow, output)
        return
    text = _render_text(arrow, format)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def summary(
    data: Annotated[Path, typer.Option(help="data directory the stages write")] = Path("data"),
    metrics: Annotated[Path, typer.Option(help="metrics directory")] = Path("metrics"),
) -> None:
    """Rows per table, accuracy per model, and where the metrics and plots are."""
    import json

    from rich.console import Console

    from tracemill import sql as sqlmod

    console = Console()
    _print_catalog([(t, n, "") for t, n, _ in sqlmod.catalog(sqlmod.connect(data)) if n])
    evaluation = metrics / "evaluate.json"
    if evaluation.exists():
        from rich.table import Table

        report = json.loads(evaluation.read_text())
        scores = report.get("models", {})
        k = report.get("k")
        columns = ["pass@1", "sampled_accuracy", *([f"pass@{k}", f"maj@{k}"] if k else [])]
        table = Table("model", "greedy pass@1", "sampled accuracy", *columns[2:],
                      title=f"held-out accuracy ({report.get('problems')} {report.get('split')} problems)")
        for model, values in scores.items():
            flat = {**{f"pass@{n}": v for n, v in (values.get("pass@k") or {}).items()}, **values}  # pass@1 stays greedy
            table.add_row(model, *(f"{flat[c]:.3f}" if isinstance(flat.get(c), (int, float)) else "-" for c in columns))
        console.print(table)
    console.print(f"tables: tracemill sql    metrics: dvc metrics show ({metrics}/)    plots: dvc plots show (plots/)")


@app.command()
def publish(
    repo_id: Annotated[Optional[str], typer.Option(help="also push to this Hub dataset repo, ORG/NAME (needs HF_TOKEN)")] = None,
    private: Annotated[bool, typer.Option("--private", help="create the repo private (an existing repo keeps its visibility)")] = False,
    revision: Annotated[Optional[str], typer.Option(help="branch to push to, created when missing (default: main)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="which publish.datasets entry (needed when params list several)")] = None,
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Build publish/<dataset>/ (Parquet per config + dataset card), check it loads with datasets, push with --repo-id."""
    from tracemill import params as P
    from tracemill import publish as pub

    token = None
    if repo_id is not None:  # a missing token or bad repo id fails before minutes of building
        pub.check_repo_id(repo_id)
        token = pub.hf_token()
    raw = P.load(params)
    cfg = P.section(pub.PublishParams, raw, "publish")
    report = pub.build(cfg, cfg.dataset(dataset), Path("."), raw)
    for config, rows in report.rows.items():
        typer.echo(f"config '{config}': {rows} rows")
    for config, why in report.skipped.items():
        typer.echo(f"skipped config '{config}': {why}")
    typer.echo(f"built {report.folder} (license: {report.license})")
    if repo_id is None:
        return
    result = pub.push(report.folder, repo_id, token=token, private=private, revision=revision)
    state = f"new commit {result.commit}" if result.changed else f"unchanged, no new commit (head {result.commit})"
    typer.echo(f"pushed to {result.url}: {state}")


def _render_text(arrow, format: Format) -> str:
    import io

    import pyarrow.csv as pacsv

    if format is Format.csv:
        buf = io.BytesIO()
        pacsv.write_csv(arrow, buf)
        return buf.getvalue().decode()
    import json

    return "\n".join(json.dumps(row, ensure_ascii=False, default=str) for row in arrow.to_pylist()) + ("\n" if arrow.num_rows else "")


def _print_table(cur, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    names = [d[0] for d in cur.description]
    rows = cur.fetchmany(max_rows + 1)
    table = Table(*names, show_lines=False)
    for row in rows[:max_rows]:
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"(first {max_rows} rows; use --max-rows or --format csv for more)")


def _cell(value) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _print_catalog(entries) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("table", "rows", "columns")
    for name, rows, cols in entries:
        table.add_row(name, str(rows), cols)
    Console().print(table)


def main() -> None:
    try:
        app()
    except TracemillError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
