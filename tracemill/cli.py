"""The `tracemill` command line. Kept light: heavy libraries load only inside the command that needs them."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tracemill.errors import TracemillError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="tracemill: a versioned dataset factory for LLM reasoning data."
)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.callback()
def _root() -> None:
    """tracemill: a versioned dataset factory for LLM reasoning data."""


def fail(message: str | TracemillError) -> None:
    for line in getattr(message, "problems", [message]):  # a ParamsError: one line per bad key
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code=2)


@app.command()
def check(
    params: Annotated[Path, typer.Option(help="params file to check")] = Path("params.yaml"),
    overlay: Annotated[
        Path | None,
        typer.Option(
            help="an overrides file (params.gpu.yaml): check params merged with it, "
            "as `tracemill overlay` would write it"
        ),
    ] = None,
) -> None:
    """Check a params file before any stage runs: unknown keys, types, allowed values and ranges of every
    knob, and the files it names. Prints every problem, one per line, and exits 2 when there is one."""
    from tracemill import params as P
    from tracemill.errors import ParamsError, TracemillError

    try:
        raw = P.merged(params, overlay) if overlay else P.load(params)
    except TracemillError as exc:
        fail(str(exc))
    problems, warnings = P.missing_files(raw)
    try:
        P.validate(raw)
    except ParamsError as exc:
        problems = exc.problems + problems
    for line in warnings:
        typer.echo(f"warning: {line}", err=True)
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    lacking = [name for name in P.SECTIONS if name not in raw]
    if problems and lacking and not overlay:
        typer.echo(
            f"note: {params} has no {', '.join(lacking)} section; an overrides file is checked merged: "
            f"tracemill check --overlay {params}",
            err=True,
        )
    if problems:
        raise typer.Exit(code=2)
    typer.echo(f"{params}{f' + {overlay}' if overlay else ''}: ok ({len(P.SECTIONS)} sections)")


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
        fail(exc)
    typer.echo(f"{params}: {len(changed)} keys set from {overrides}")
    for key in changed:
        typer.echo(f"  {key}")
    dvc_yaml = params.resolve().parent / "dvc.yaml"
    if dvc_yaml.is_file():  # model, seed and DeepSpeed paths in params are deps of the stages that read them
        from tracemill import pipeline_deps as D

        if D.check(dvc_yaml.parent, dvc_yaml, params)[2]:
            typer.echo(f"{dvc_yaml.name}: deps no longer match these params — run 'tracemill deps --write'")


@app.command("params-doc")
def params_doc(params: Annotated[Path, typer.Option(help="params file to document")] = Path("params.yaml")) -> None:
    """Print a Markdown table of every key in a params file with its value and comment."""
    from tracemill import params as P

    sys.stdout.write(P.doc_table(params))


@app.command()
def deps(
    write: Annotated[bool, typer.Option("--write", help="rewrite the generated deps of dvc.yaml in place")] = False,
    dvc_yaml: Annotated[Path, typer.Option(help="the pipeline file")] = Path("dvc.yaml"),
    params: Annotated[Path, typer.Option(help="params file whose input paths become deps")] = Path("params.yaml"),
) -> None:
    """Compare each stage's deps in dvc.yaml with the code it imports and the input paths its params name
    (+ missing, - no longer read); exit 1 on a difference, or fix it with --write."""
    from tracemill import pipeline_deps as D

    text, computed, drift = D.check(dvc_yaml.resolve().parent, dvc_yaml, params)
    for stage_drift in drift:
        for line in stage_drift.lines():
            typer.echo(line)
    if not drift:
        typer.echo(f"{dvc_yaml}: deps of {len(computed)} stages match their code")
    elif write:
        dvc_yaml.write_text(D.rewrite(text, computed), encoding="utf-8")
        typer.echo(f"{dvc_yaml}: rewrote the deps of {len(drift)} stages")
        if any(d.undeclared for d in drift):  # --write fixes code and params deps, not these
            raise typer.Exit(code=1)
    else:
        typer.echo(
            f"{dvc_yaml}: deps of {len(drift)} stages differ from their code — run 'tracemill deps --write'", err=True
        )
        raise typer.Exit(code=1)


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="SQL over the views; omit to list the tables")] = None,
    data: Annotated[Path, typer.Option(help="data directory the stages write")] = Path("data"),
    format: Annotated[Format, typer.Option("--format", "-f", help="output format")] = Format.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to a file (required for parquet)")
    ] = None,
    max_rows: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
) -> None:
    """Query every table with DuckDB: one view per table over data/**/<table>/part-*.parquet. A table with
    an unreadable part is named in a warning and fails only the queries that read it."""
    import duckdb

    from tracemill import sql as sqlmod

    try:
        con = sqlmod.connect(data)
    except duckdb.Error as exc:
        fail(str(exc).splitlines()[0])
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
        table = Table(
            "model",
            "greedy pass@1",
            "sampled accuracy",
            *columns[2:],
            title=f"held-out accuracy ({report.get('problems')} {report.get('split')} problems)",
        )
        for model, values in scores.items():
            flat = {
                **{f"pass@{n}": v for n, v in (values.get("pass@k") or {}).items()},
                **values,
            }  # pass@1 stays greedy
            table.add_row(model, *(f"{flat[c]:.3f}" if isinstance(flat.get(c), (int, float)) else "-" for c in columns))
        console.print(table)
    console.print(f"tables: tracemill sql    metrics: dvc metrics show ({metrics}/)    plots: dvc plots show (plots/)")


@app.command()
def view(
    port: Annotated[int, typer.Option(help="port to serve on")] = 8765,
    host: Annotated[str, typer.Option(help="interface to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    data: Annotated[Path, typer.Option(help="data directory the stages write")] = Path("data"),
    metrics: Annotated[Path, typer.Option(help="metrics directory")] = Path("metrics"),
    plots: Annotated[Path, typer.Option(help="plots directory")] = Path("plots"),
    threads: Annotated[int | None, typer.Option(help="DuckDB threads (default: all cores)")] = None,
) -> None:
    """Browse the tables in a web page over the same DuckDB views as `tracemill sql` (read-only, no import
    step): problems, traces, search trees, pairs, COAT, RAE states, the run's metrics and plots, a SQL box."""
    import uvicorn

    from tracemill.view import create_app

    typer.echo(
        f"tracemill view: http://{host}:{port}/  (data {data}/, metrics {metrics}/, plots {plots}/; Ctrl-C stops)"
    )
    uvicorn.run(create_app(data, metrics, plots, threads=threads), host=host, port=port, log_level="warning")


@app.command()
def readme(
    write: Annotated[bool, typer.Option("--write", help="rewrite the generated blocks in place")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 when a generated block differs from what the run gives")
    ] = False,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--readme",
            help="a markdown file holding blocks (repeatable); "
            "default: README.md and the docs pages of tracemill.report.DOC_FILES under --root",
        ),
    ] = None,
    root: Annotated[Path, typer.Option(help="folder holding metrics/, plots/ and dvc.lock")] = Path("."),
) -> None:
    """The run figures of the README and the docs pages from metrics/*.json, dvc.lock and plots/: the blocks
    between <!-- tracemill:begin NAME --> and <!-- tracemill:end NAME -->. Without an option, print them."""
    from tracemill import report

    blocks = report.render(report.load_run(root))
    if not (write or check):
        for name, content in blocks.items():
            typer.echo(f"{report.BEGIN.format(name)}\n{content}\n{report.END.format(name)}\n")
        return
    try:
        paths = files or report.doc_files(root)
        texts = {path: path.read_text() for path in paths}
        stale = {path: report.stale_blocks(text, blocks, str(path)) for path, text in texts.items()}
        unplaced = [] if files else report.unplaced_blocks(texts)
    except (TracemillError, OSError) as exc:
        fail(str(exc))
    if unplaced:  # only the default set of files must hold every block
        fail(
            f"generated block(s) {', '.join(unplaced)} sit in none of {', '.join(map(str, paths))} — "
            f"add {report.BEGIN.format(unplaced[0])} and its end marker where the figures belong"
        )
    for path, names in stale.items():
        if write:
            path.write_text(report.rewrite(texts[path], blocks))
            typer.echo(f"{path}: {len(names)} generated block(s) rewritten{': ' + ', '.join(names) if names else ''}")
        elif names:
            differ = f"generated block(s) differ from {root / 'metrics'}: {', '.join(names)}"
            typer.echo(f"{path}: {differ} — run 'tracemill readme --write'", err=True)
    if write:
        return
    if any(stale.values()):
        raise typer.Exit(code=1)
    typer.echo(f"every generated block of {len(paths)} file(s) matches the run")


seeds_app = typer.Typer(
    no_args_is_help=True,
    help="Spread over seeds (`make seeds`): the pipeline once per seed as a DVC experiment, then metrics/seeds.json.",
)
app.add_typer(seeds_app, name="seeds")


@seeds_app.command("overrides")
def seeds_overrides(seed: Annotated[int, typer.Argument(help="the seed")]) -> None:
    """Print the `dvc exp run` arguments of one seed: -S ++KEY=SEED for every seed knob of the pipeline."""
    from tracemill import report

    typer.echo(" ".join(report.seed_overrides(seed)))


@seeds_app.command("collect")
def seeds_collect(
    seeds: Annotated[list[int], typer.Argument(help="the seeds, e.g. 0 1 2")],
    exp_show: Annotated[Path | None, typer.Option(help="saved `dvc exp show --json` output; default: run it")] = None,
    output: Annotated[Path, typer.Option(help="where the aggregate goes")] = Path("metrics/seeds.json"),
) -> None:
    """Each seed's newest experiment of this commit (from `dvc exp show --json`), its metrics/evaluate.json,
    and per model and metric the mean, standard deviation, min and max over the seeds."""
    import json
    import subprocess

    from tracemill import report, store

    if exp_show is None:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if shown.returncode != 0:
            fail(f"'dvc exp show --json' failed: {(shown.stderr or shown.stdout).strip()}")
        text = shown.stdout
    else:
        text = exp_show.read_text()
    try:
        runs = report.seed_runs(json.loads(text), seeds)
    except TracemillError as exc:
        fail(str(exc))
    store.write_json(output, report.aggregate_seeds(runs))  # atomic, like every metrics file
    for r in runs:
        typer.echo(f"seed {r.seed}: experiment {r.name} ({r.rev[:7]})")
    typer.echo(f"wrote {output}; 'tracemill readme --write' puts it in docs/evaluation.md")


@app.command()
def publish(
    repo_id: Annotated[
        str | None, typer.Option(help="also push to this Hub dataset repo, ORG/NAME (needs HF_TOKEN)")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="create the repo private (an existing repo keeps its visibility)")
    ] = False,
    revision: Annotated[
        str | None, typer.Option(help="branch to push to, created when missing (default: main)")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="which publish.datasets entry (needed when params list several)")
    ] = None,
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Build publish/<dataset>/ (Parquet per config + dataset card), check it loads with datasets,
    push with --repo-id."""
    from tracemill import params as P
    from tracemill import publish as pub

    token: str | None = None
    if repo_id is not None:  # a missing token or bad repo id fails before minutes of building
        pub.check_repo_id(repo_id)
        token = pub.hf_token()
    raw = P.load(params)
    cfg = P.section(pub.PublishParams, raw, "publish")
    report = pub.build(cfg, cfg.dataset(dataset), Path("."), raw)
    for config, splits in report.rows.items():
        typer.echo(f"config '{config}': " + ", ".join(f"{split} {rows}" for split, rows in splits.items()) + " rows")
    for config, reasons in report.held_back.items():
        typer.echo(
            f"config '{config}': held back from train: " + ", ".join(f"{why} {rows}" for why, rows in reasons.items())
        )
    for config, why in report.skipped.items():
        typer.echo(f"skipped config '{config}': {why}")
    typer.echo(f"built {report.folder} (license: {report.license})")
    if repo_id is None or token is None:  # token is set whenever repo_id is
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

    return "\n".join(json.dumps(row, ensure_ascii=False, default=str) for row in arrow.to_pylist()) + (
        "\n" if arrow.num_rows else ""
    )


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
        table.add_row(name, "unreadable" if rows is None else str(rows), cols)
    Console().print(table)


def main() -> None:
    try:
        app()
    except TracemillError as exc:
        for problem in getattr(exc, "problems", [exc]):
            typer.echo(f"error: {problem}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
