"""Page times of `tracemill view` over 1,000,000 `traces` rows (sql_scan.py's generator).

    python benchmarks/view_pages.py [--rows 1000000] [--threads 2]

Writes the rows through tracemill.store, builds the viewer's app once and times each page in process
(Starlette's TestClient: routing, SQL and template rendering, no network), best of 3, in a fresh process
whose peak RSS is printed (the table is never loaded into memory). Goal: every page under 300 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from sql_scan import traces_shard  # noqa: E402

from tracemill import store  # noqa: E402
from tracemill.view import create_app  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--time-pages", type=Path, help=argparse.SUPPRESS
    )  # the child process: time pages over this data dir
    args = ap.parse_args()
    if args.time_pages:
        return time_pages(args.time_pages, args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        out = store.StageOutput(data / "hint_infer", ["traces"], "bench")
        shards = range((args.rows + args.shard_rows - 1) // args.shard_rows)
        for shard in shards:
            n = min(args.shard_rows, args.rows - shard * args.shard_rows)
            out.write_shard(shard, {"traces": traces_shard(shard * args.shard_rows, n, 20, rng)})
        out.finalize(shards)
        subprocess.run(
            [sys.executable, __file__, "--time-pages", str(data), "--threads", str(args.threads)], check=True
        )


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM; ru_maxrss would carry the parent's over fork and exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def time_pages(data: Path, threads: int) -> None:
    t = time.perf_counter()
    client = TestClient(create_app(data, data / "no-metrics", data / "no-plots", threads=threads))
    total = client.app.state.catalog.rows("SELECT count(*) AS n FROM traces")[0]["n"]
    rss = peak_rss_mb()
    print(f"{total:,} traces rows; app start {time.perf_counter() - t:.2f} s, peak RSS {rss:.0f} MB")
    last = -(-total // 50)
    pages = {
        "traces, first page": ("/traces", f"page 1 of {last}"),
        "traces, middle page": (f"/traces?page={last // 2}", f"page {last // 2} of {last}"),
        "traces, last page": (f"/traces?page={last}", f"page {last} of {last}"),
        "traces of one problem": ("/traces?problem_id=p31337", "20 rows"),
        "traces of one stage, page 100": ("/traces?stage=rft&page=100", "page 100 of"),
        "one trace": ("/trace/t654321", "Trace t654321"),
        "table traces, page 1000": ("/table/traces?page=1000", f"page 1000 of {last}"),
        "tables (row counts)": ("/tables", f">{total}<"),
        "SQL box: group by stage": ("/sql?q=select+stage,+avg(correct::int)+from+traces+group+by+1", "mcts_rollout"),
    }
    print(f"\n{'page':<34}{'best of 3':>10}  goal < 300 ms")
    for name, (url, shown) in pages.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            r = client.get(url)
            best = min(best, time.perf_counter() - t)
        assert r.status_code == 200 and shown in r.text, (url, r.status_code, shown)
        rss = peak_rss_mb()
        print(f"{name:<34}{best * 1000:>8.0f} ms  {'ok' if best < 0.3 else 'MISSED':<6}  peak RSS so far {rss:.0f} MB")
    print(
        f"\nDuckDB threads={threads}; the Parquet parts take "
        f"{sum(p.stat().st_size for p in data.glob('**/*.parquet')) / 1e6:.0f} MB on disk"
    )


if __name__ == "__main__":
    main()
