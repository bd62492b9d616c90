"""The viewer's routes: each reads a few rows through `Catalog` and renders one Jinja2 template.

Every list is one SQL page (LIMIT/OFFSET over the views, filtered count beside it); a detail page
fetches one row by id and the rows made from it. A bad id, an unwritten table or a failing query
renders the error page with one line; no stack trace ever reaches the browser.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from tracemill import records
from tracemill.runfiles import leaves
from tracemill.view import charts
from tracemill.view.catalog import Catalog, ViewError
from tracemill.view.tree import layout

PAGE_SIZE = 50
TEMPLATES = Path(__file__).parent / "templates"
META_TOKEN = re.compile(r"(<\|[a-z_]+\|>)")
TRACE_COLUMNS = (
    "trace_id, problem_id, stage, round, model, hint_id, hint_kind, correct, final_answer, tool_calls, generated_tokens"
)


def _int(request: Request, name: str, default: int = 1) -> int:
    try:
        return max(1, int(request.query_params.get(name, default)))
    except ValueError:
        return default


def _arg(request: Request, name: str) -> str:
    return request.query_params.get(name, "").strip()


def create_app(
    data_dir: str | Path = "data",
    metrics_dir: str | Path = "metrics",
    plots_dir: str | Path = "plots",
    threads: int | None = None,
) -> Starlette:
    cat = Catalog(data_dir, threads=threads)
    metrics_dir, plots_dir = Path(metrics_dir), Path(plots_dir)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["num"] = lambda v, d=3: (
        "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    )
    templates.env.filters["short"] = lambda v, n=120: (
        "" if v is None else (str(v) if len(str(v)) <= n else str(v)[: n - 1] + "…")
    )
    templates.env.filters["cell"] = _cell

    @functools.cache
    def facets() -> dict[str, list[str]]:
        """The problems page's filter choices, once: the views' files are fixed when the viewer starts. A table
        with a bad part gives no choices instead of taking the page down."""
        found = {
            col: [
                r["v"]
                for r in cat.section(
                    f"SELECT DISTINCT CAST({col} AS VARCHAR) AS v FROM problems WHERE {col} IS NOT NULL ORDER BY 1"
                )[0]
            ]
            for col in ("source", "split", "difficulty")
        }
        found["solved_by"] = [r["stage"] for r in cat.section("SELECT DISTINCT stage FROM traces ORDER BY 1")[0]] + [
            "rstar_search"
        ]
        return found

    @functools.cache
    def sft_sources() -> list[str]:
        return [r["source"] for r in cat.section("SELECT DISTINCT source FROM sft")[0]]

    def render(request: Request, template: str, **context: Any) -> Response:
        return templates.TemplateResponse(request, template, {"warnings": cat.warnings, **context})

    def problems(request: Request) -> Response:
        f = {k: _arg(request, k) for k in ("q", "source", "split", "difficulty", "solved_by")}
        where, params = [], []
        for col in ("source", "split"):
            if f[col]:
                where.append(f"{col} = ?")
                params.append(f[col])
        if f["difficulty"]:
            where.append("CAST(difficulty AS VARCHAR) = ?")
            params.append(f["difficulty"])
        if f["q"]:
            where.append("(question ILIKE ? OR problem_id = ?)")
            params += [f"%{f['q']}%", f["q"]]
        if f["solved_by"] == "rstar_search":
            where.append("problem_id IN (SELECT problem_id FROM trajectories WHERE correct)")
        elif f["solved_by"]:
            where.append("problem_id IN (SELECT problem_id FROM traces WHERE correct AND stage = ?)")
            params.append(f["solved_by"])
        page = cat.page(
            "SELECT problem_id, source, split, domain, difficulty, question FROM problems",
            where,
            params,
            "ORDER BY problem_id",
            _int(request, "page"),
            PAGE_SIZE,
        )
        solved = _solved_by(cat, [r["problem_id"] for r in page.rows])
        return render(request, "problems.html", page=page, filters=f, facets=facets(), solved=solved)

    def problem(request: Request) -> Response:
        pid = request.path_params["problem_id"]
        row = cat.one("problems", "problem_id", pid, "problem")
        traces = cat.page(
            f"SELECT {TRACE_COLUMNS} FROM traces",
            ["problem_id = ?"],
            [pid],
            "ORDER BY stage, round, sample_index, trace_id",
            _int(request, "page"),
            PAGE_SIZE,
        )
        selected, _ = cat.section(
            "SELECT trace_id, 'd_seed' AS t FROM d_seed WHERE problem_id = ? "
            "UNION ALL SELECT trace_id, 'd_start' FROM d_start WHERE problem_id = ?",
            [pid, pid],
        )
        related = {
            "trees": cat.section(
                "SELECT tree_id, round, count(*) AS nodes, bool_or(terminal AND correct) AS solved FROM nodes "
                "WHERE problem_id = ? GROUP BY ALL ORDER BY round",
                [pid],
            ),
            "pairs": cat.section(
                "SELECT pair_id, round, chosen_q, rejected_q, final_step FROM pairs "
                "WHERE problem_id = ? ORDER BY round, pair_id",
                [pid],
            ),
            "coat": cat.section(
                "SELECT coat_id, kind, correct, length(text) AS chars FROM coat "
                "WHERE problem_id = ? ORDER BY kind, coat_id",
                [pid],
            ),
            "rae": cat.section(
                "SELECT state_id, outcome, q, len(prefix_steps) AS steps FROM rae_states "
                "WHERE problem_id = ? ORDER BY state_id",
                [pid],
            ),
            "sft": cat.section(
                "SELECT example_id, source FROM sft WHERE problem_id = ? ORDER BY source, example_id", [pid]
            ),
        }
        return render(
            request,
            "problem.html",
            p=row,
            traces=traces,
            selected={r["trace_id"]: r["t"] for r in selected},
            related=related,
        )

    def traces(request: Request) -> Response:
        f = {k: _arg(request, k) for k in ("problem_id", "stage")}
        where = [f"{k} = ?" for k, v in f.items() if v]
        page = cat.page(
            f"SELECT {TRACE_COLUMNS} FROM traces",
            where,
            [v for v in f.values() if v],
            "",
            _int(request, "page"),
            PAGE_SIZE,
        )
        return render(request, "traces.html", page=page, filters=f)

    def trace(request: Request) -> Response:
        tid = request.path_params["trace_id"]
        row = cat.one("traces", "trace_id", tid, "trace")
        ids = [records.content_id("sft", s, tid) for s in sft_sources()]  # how the SFT stages name a trace's example
        sft = (
            cat.rows("SELECT example_id, source, segments FROM sft WHERE example_id IN (SELECT unnest(?))", [ids])
            if ids
            else []
        )
        segments = _segments(row["segments"], sft[0]["segments"] if sft else None)
        return render(
            request,
            "trace.html",
            t=row,
            segments=segments,
            sft=sft,
            sampling=row["sampling"],
            metadata=_json(row["metadata"]),
        )

    def tree(request: Request) -> Response:
        tid = request.path_params["tree_id"]
        nodes = cat.rows("SELECT * EXCLUDE (metadata) FROM nodes WHERE tree_id = ? ORDER BY depth, node_id", [tid])
        if not nodes:
            raise ViewError(cat.missing("nodes", f"no search tree with tree_id '{tid}'"), status=404)
        trajectories = cat.rows(
            "SELECT trajectory_id, node_ids, avg_q, correct, selected FROM trajectories WHERE tree_id = ? "
            "ORDER BY selected DESC, avg_q DESC, trajectory_id",
            [tid],
        )
        pairs = cat.rows(
            "SELECT pair_id, chosen_node_id, rejected_node_id, chosen_q, rejected_q, final_step FROM pairs "
            "WHERE tree_id = ? ORDER BY pair_id",
            [tid],
        )
        focus_pair = next((p for p in pairs if p["pair_id"] == _arg(request, "pair")), None)
        top = [t for t in trajectories if t["selected"]]
        top_edges = {(a, b) for t in top for a, b in zip(t["node_ids"], t["node_ids"][1:])}
        chosen = {p["chosen_node_id"] for p in ([focus_pair] if focus_pair else pairs)}
        rejected = {p["rejected_node_id"] for p in ([focus_pair] if focus_pair else pairs)}
        node_id = _arg(request, "node")
        node = next((n for n in nodes if n["node_id"] == node_id), None)
        if node_id and node is None:
            raise ViewError(f"tree '{tid}' has no node '{node_id}'", status=404)
        first = nodes[0]
        rounds = cat.rows(
            "SELECT DISTINCT tree_id, round FROM nodes WHERE problem_id = ? ORDER BY round", [first["problem_id"]]
        )
        return render(
            request,
            "tree.html",
            tree_id=tid,
            first=first,
            drawn=layout(nodes),
            top=top,
            top_edges=top_edges,
            trajectories=trajectories,
            pairs=pairs,
            focus_pair=focus_pair,
            chosen=chosen,
            rejected=rejected,
            node=node,
            rounds=rounds,
        )

    def node(request: Request) -> Response:
        row = cat.one("nodes", "node_id", request.path_params["node_id"], "search-tree node")
        return RedirectResponse(f"/tree/{row['tree_id']}?node={row['node_id']}#node", status_code=302)

    def listing(table: str, columns: str, order: str, template: str, filters: tuple[str, ...] = ()):
        def handler(request: Request) -> Response:
            f = {k: _arg(request, k) for k in filters}
            where = [f"CAST({k} AS VARCHAR) = ?" for k, v in f.items() if v]
            page = cat.page(
                f"SELECT {columns} FROM {table}",
                where,
                [v for v in f.values() if v],
                order,
                _int(request, "page"),
                PAGE_SIZE,
            )
            return render(
                request,
                template,
                page=page,
                filters=f,
                empty=None if page.total or f else cat.missing(table, f"no {table} rows"),
            )

        return handler

    def pair(request: Request) -> Response:
        return render(request, "pair.html", p=cat.one("pairs", "pair_id", request.path_params["pair_id"], "pair"))

    def coat_one(request: Request) -> Response:
        row = cat.one("coat", "coat_id", request.path_params["coat_id"], "COAT trace")
        parts = [(bool(META_TOKEN.fullmatch(s)), s) for s in META_TOKEN.split(row["text"]) if s]
        sources = cat.rows(
            "SELECT node_id, tree_id, depth, q, terminal, correct, step_text FROM nodes "
            "WHERE node_id IN (SELECT unnest(?))",
            [list(row["source_node_ids"])],
        )
        order = {n: i for i, n in enumerate(row["source_node_ids"])}
        return render(
            request, "coat.html", c=row, parts=parts, sources=sorted(sources, key=lambda n: order.get(n["node_id"], 0))
        )

    def rae_one(request: Request) -> Response:
        row = cat.one("rae_states", "state_id", request.path_params["state_id"], "RAE state")
        restart = cat.rows(
            "SELECT node_id, tree_id, depth, q, step_text FROM nodes WHERE node_id = ?", [row["node_id"]]
        )
        return render(request, "rae.html", s=row, restart=restart[0] if restart else None)

    def runs(request: Request) -> Response:
        m = charts.metrics(metrics_dir)
        return render(
            request,
            "runs.html",
            metrics=m,
            evaluation=m.get("evaluate") if isinstance(m.get("evaluate"), dict) else None,
            rounds=charts.rounds(m),
            charts=charts.charts(plots_dir),
            flat=leaves,
            metrics_dir=metrics_dir,
        )

    def sql_box(request: Request) -> Response:
        q, page = _arg(request, "q"), _int(request, "page")
        columns: list[str] = []
        rows: list[tuple] = []
        more, error = False, None
        if q:
            try:
                columns, rows, more = cat.user_query(q, page, PAGE_SIZE)
            except ViewError as exc:
                error = str(exc)
        return render(
            request,
            "sql.html",
            q=q,
            columns=columns,
            rows=rows,
            more=more,
            page=page,
            error=error,
            tables=[(t, records.SCHEMAS[t].names) for t in records.TABLES],
        )

    def tables(request: Request) -> Response:
        counts: list[tuple[str, Any, str | None]] = []
        for t in records.TABLES:
            try:
                counts.append((t, cat.rows(f"SELECT count(*) AS n FROM {t}")[0]["n"], None))
            except ViewError as exc:
                counts.append((t, None, str(exc)))
        return render(request, "tables.html", counts=counts, written=cat.written)

    def table(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in records.TABLES:
            raise ViewError(f"unknown table '{name}'; known tables: {', '.join(records.TABLES)}", status=404)
        page = cat.page(f"SELECT * FROM {name}", [], [], "", _int(request, "page"), PAGE_SIZE)
        return render(
            request,
            "table.html",
            name=name,
            page=page,
            columns=records.SCHEMAS[name].names,
            empty=None if page.total else cat.missing(name, f"no {name} rows"),
        )

    def error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ViewError):
            status, message = exc.status, str(exc)
        elif isinstance(exc, HTTPException):
            status, message = exc.status_code, f"{exc.detail}: {request.url.path}"
        else:  # a bug: say what failed in one line, keep the trace out of the page
            status, message = (
                500,
                "the viewer failed on this page "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            )
        return templates.TemplateResponse(
            request, "error.html", {"message": message, "warnings": cat.warnings}, status_code=status
        )

    routes = [
        Route("/", lambda r: RedirectResponse("/problems")),
        Route("/problems", problems),
        Route("/problem/{problem_id}", problem),
        Route("/traces", traces),
        Route("/trace/{trace_id}", trace),
        Route("/tree/{tree_id}", tree),
        Route("/node/{node_id}", node),
        Route(
            "/pairs",
            listing(
                "pairs",
                "pair_id, problem_id, tree_id, round, chosen_q, rejected_q, final_step, left(chosen, 80) AS chosen",
                "ORDER BY round, problem_id, pair_id",
                "pairs.html",
                ("round", "problem_id"),
            ),
        ),
        Route("/pair/{pair_id}", pair),
        Route(
            "/coat",
            listing(
                "coat",
                "coat_id, problem_id, kind, correct, len(source_node_ids) AS nodes, length(text) AS chars",
                "ORDER BY problem_id, coat_id",
                "coats.html",
                ("kind", "problem_id"),
            ),
        ),
        Route("/coat/{coat_id}", coat_one),
        Route(
            "/rae",
            listing(
                "rae_states",
                "state_id, problem_id, node_id, q, outcome, ends_with_reflect, len(prefix_steps) AS steps",
                "ORDER BY problem_id, state_id",
                "raes.html",
                ("outcome", "problem_id"),
            ),
        ),
        Route("/rae/{state_id}", rae_one),
        Route("/runs", runs),
        Route("/sql", sql_box),
        Route("/tables", tables),
        Route("/table/{name}", table),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: error, HTTPException: error, ViewError: error})
    app.state.catalog = cat
    return app


def _solved_by(cat: Catalog, problem_ids: list[str]) -> dict[str, list[str]]:
    if not problem_ids:
        return {}
    rows, _ = cat.section(
        "SELECT problem_id, list(DISTINCT stage ORDER BY stage) AS stages FROM traces "
        "WHERE correct AND problem_id IN (SELECT unnest(?)) GROUP BY 1",
        [problem_ids],
    )
    out = {r["problem_id"]: r["stages"] for r in rows}
    solved, _ = cat.section(
        "SELECT DISTINCT problem_id FROM trajectories WHERE correct AND problem_id IN (SELECT unnest(?))", [problem_ids]
    )
    for r in solved:
        out.setdefault(r["problem_id"], []).append("rstar_search")
    return out


def _segments(segments: list[dict[str, Any]], sft_segments: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The trace's segments, each with its loss flag (from the SFT row that trained on it where one exists:
    SFT rows drop the prompt, so the rest align in order) and, for a hint, the point it was inserted at."""
    out, generated, trained = [], 0, iter(sft_segments or [])
    for i, seg in enumerate(segments):
        loss, from_sft = seg["loss"], False
        if sft_segments is not None and seg["kind"] != "prompt":
            match = next(trained, None)
            if match is not None and match["kind"] == seg["kind"] and match["text"] == seg["text"]:
                loss, from_sft = match["loss"], True
        out.append({**seg, "index": i, "loss": loss, "from_sft": from_sft, "offset": generated})
        if seg["kind"] != "prompt":
            generated += len(seg["text"])
    return out


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return text


def _cell(value: Any, n: int = 80) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, default=str, ensure_ascii=False)
        if value is not None
        else ""
    )
    return text if len(text) <= n else text[: n - 1] + "…"
