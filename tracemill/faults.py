"""Failpoints for crash tests: with TRACEMILL_FAILPOINT="POINT:N" set, the process SIGKILLs itself the
Nth time it reaches POINT, exactly as a kill -9 or an OOM killer would stop it there. Unset (always, in
normal runs) a failpoint costs one environment lookup.

Points: store.tmp_written (a Parquet part written to its temp name, not yet renamed),
store.tables_written (a shard's parts renamed, its completion marker not yet written),
store.shard_done (a shard's marker written), store.json (a metrics file about to be replaced).
"""

from __future__ import annotations

import os
import signal

ENV = "TRACEMILL_FAILPOINT"
_hits: dict[str, int] = {}


def hit(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)  # this process only, as the OOM killer would
