"""`tracemill view`: a local, read-only web browser over the same DuckDB views as `tracemill sql`.

Server-rendered pages (Starlette + Jinja2, served by uvicorn): problems, traces, search trees, pairs,
COAT, RAE states, the last run's metrics and plots, and a read-only SQL box. Every list is paginated in
SQL (LIMIT/OFFSET over the views), so a million-row table is never loaded into memory. No stage
imports this package.
"""

from tracemill.view.app import create_app

__all__ = ["create_app"]
