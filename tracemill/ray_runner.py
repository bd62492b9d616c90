"""The `ray` runner: Ray Data maps a stage's pending shards across a Ray cluster (or a local Ray).

Each task writes its shard's parts and completion marker into the stage's output directory, which
must be on a filesystem every worker sees (one machine, NFS, or a mounted bucket). The shard
function must be picklable; generation backends load their model once per worker process.
Set RAY_ADDRESS to join an existing cluster; without it a local Ray instance is started.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from tracemill import store
from tracemill.errors import TracemillError


def run_on_ray(out: store.StageOutput, shards: Mapping[int, list[dict[str, Any]]], work) -> None:
    try:
        import ray
    except ImportError as exc:
        raise TracemillError("run.runner = 'ray' needs Ray: pip install 'tracemill[ray]'") from exc
    if not shards:
        return
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        # A local instance's workers import what the driver imports (stage code run from a checkout).
        runtime_env = None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        ray.init(
            address=address,
            runtime_env=runtime_env,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    try:
        root, tables, fingerprint = str(out.root), out.tables, out.fingerprint
        payload = {s: items for s, items in shards.items()}

        def task(row: dict[str, Any]) -> dict[str, Any]:
            shard = int(row["shard"])
            target = store.StageOutput(root, tables, fingerprint)
            counts = target.write_shard(shard, work(shard, payload[shard]))
            return {"shard": shard, "rows": sum(counts.values())}

        ds = ray.data.from_items([{"shard": s} for s in sorted(payload)])
        done = ds.map(task).take_all()
        missing = set(payload) - {r["shard"] for r in done}
        if missing:
            raise TracemillError(f"Ray finished without shard {sorted(missing)[0]} — re-run the stage to resume")
    finally:
        if started:
            ray.shutdown()
