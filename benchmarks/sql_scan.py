"""Inspection queries over 1,000,000 `traces` rows written through the store.

    python benchmarks/sql_scan.py [--rows 1000000] [--threads 2]

Writes the rows as key-sorted Parquet parts with tracemill.store, then times three queries through
`tracemill.sql.connect` (each on a fresh connection, as `tracemill sql` runs them; best of 3):
one problem's traces, correctness by stage, and UNNEST of segments counting hint segments.
Baseline, in the same run: the same questions answered the way a pile of JSONL scripts does it
(json.loads over every line), on a sample, extrapolated to the full row count. Goal: each query
under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from tracemill import records, sql, store

STAGES = np.array(["hint_infer", "rft", "mcts_rollout"])
KINDS = np.array(["prompt", "model", "hint", "code", "output", "model"])
TEXTS = np.array(
    [
        "Let me compute the total.",
        "Wait, let me check with Python.",
        "print(48 // 2)",
        "24",
        "So the answer is \\boxed{72}.",
    ]
)


def traces_shard(start: int, n: int, per_problem: int, rng: np.random.Generator) -> pa.Table:
    idx = np.arange(start, start + n)
    problem = np.char.add("p", (idx // per_problem).astype(str))
    nseg = rng.integers(3, 7, size=n)
    offsets = np.concatenate([[0], np.cumsum(nseg)]).astype(np.int32)
    total = int(offsets[-1])
    pos = np.arange(total) - np.repeat(offsets[:-1], nseg)
    kind = KINDS[np.minimum(pos, len(KINDS) - 1)]
    has_hint = kind == "hint"
    segment = pa.StructArray.from_arrays(
        [
            pa.array(kind),
            # unique text per segment, so compression does not flatter the scan
            pa.array(
                np.char.add(
                    np.char.add(TEXTS[rng.integers(0, len(TEXTS), size=total)], " #"),
                    rng.integers(0, 10**9, size=total).astype(str),
                )
            ),
            pa.array(np.where(has_hint, "h-verify", None)),
            pa.array(np.isin(kind, ["model", "code"])),
        ],
        fields=list(records.SEGMENT),
    )
    correct = rng.random(n) < 0.4
    columns = {
        "trace_id": pa.array(np.char.add("t", idx.astype(str))),
        "problem_id": pa.array(problem),
        "stage": pa.array(STAGES[idx % len(STAGES)]),
        "round": pa.array(np.zeros(n, dtype=np.int32)),
        "model": pa.array(np.full(n, "bootstrap")),
        "sample_index": pa.array((idx % per_problem).astype(np.int32)),
        "hint_id": pa.array(np.where(nseg > 2, "h-verify", None)),
        "hint_kind": pa.array(np.full(n, None), type=pa.string()),
        "correct": pa.array(correct),
        "final_answer": pa.array(np.full(n, "72")),
        "grader": pa.array(np.full(n, "math-verify")),
        "tool_calls": pa.array(rng.integers(0, 4, size=n).astype(np.int32)),
        "prompt_tokens": pa.array(rng.integers(50, 400, size=n)),
        "cached_prompt_tokens": pa.array(rng.integers(0, 50, size=n)),
        "generated_tokens": pa.array(rng.integers(20, 800, size=n)),
        "finish_reason": pa.array(np.full(n, "stop")),
        "sampling": pa.nulls(n, type=records.SAMPLING),
        "segments": pa.ListArray.from_arrays(pa.array(offsets), segment, type=records.SEGMENTS),
        "metadata": pa.nulls(n, type=pa.string()),
    }
    return pa.table(columns)


QUERIES = {
    "one problem's traces": "SELECT trace_id, stage, correct FROM traces WHERE problem_id = 'p31337'",
    "correctness by stage": (
        "SELECT stage, count(*) AS n, avg(correct::INT) AS acc FROM traces GROUP BY stage ORDER BY stage"
    ),
    "hint segments (UNNEST)": "SELECT count(*) FROM (SELECT unnest(segments) AS s FROM traces) WHERE s.kind = 'hint'",
}


def jsonl_baseline(table: pa.Table, path: Path) -> dict[str, float]:
    """The same three questions answered by scanning JSON lines, as hand-written scripts do."""
    with open(path, "w") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row) + "\n")

    def scan(fn):
        t = time.perf_counter()
        with open(path) as fh:
            fn(json.loads(line) for line in fh)
        return time.perf_counter() - t

    def by_stage(rows):
        acc: dict[str, list[int]] = {}
        for r in rows:
            acc.setdefault(r["stage"], []).append(int(r["correct"]))

    return {
        "one problem's traces": scan(lambda rows: [r for r in rows if r["problem_id"] == "p31337"]),
        "correctness by stage": scan(by_stage),
        "hint segments (UNNEST)": scan(lambda rows: sum(s["kind"] == "hint" for r in rows for s in r["segments"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--per-problem", type=int, default=20)
    ap.add_argument("--baseline-rows", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        out = store.StageOutput(data / "hint_infer", ["traces"], "bench")
        t = time.perf_counter()
        shards = range((args.rows + args.shard_rows - 1) // args.shard_rows)
        sample = None
        for shard in shards:
            n = min(args.shard_rows, args.rows - shard * args.shard_rows)
            table = traces_shard(shard * args.shard_rows, n, args.per_problem, rng)
            if sample is None:
                sample = table.slice(0, args.baseline_rows)
            out.write_shard(shard, {"traces": table})
        total = out.finalize(shards)["traces"]
        write_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (data / "hint_infer" / "traces").glob("*.parquet"))
        print(f"wrote {total:,} traces rows through the store in {write_s:.1f} s ({size / 1e6:.0f} MB Parquet)")

        ours = {}
        for name, query in QUERIES.items():
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                con = sql.connect(data, threads=args.threads)
                con.execute(query).fetchall()
                best = min(best, time.perf_counter() - t)
            ours[name] = best
        base = jsonl_baseline(sample, Path(tmp) / "sample.jsonl")
        scale = total / sample.num_rows
        print(f"\n{'query':<26}{'tracemill sql':>15}{'JSONL scan*':>14}{'ratio':>9}  goal < 1 s")
        for name in QUERIES:
            b = base[name] * scale
            print(
                f"{name:<26}{ours[name]:>13.3f} s{b:>12.1f} s{b / ours[name]:>8.0f}x  "
                f"{'ok' if ours[name] < 1 else 'MISSED'}"
            )
        print(
            f"\n* JSONL scan timed on {sample.num_rows:,} rows and scaled x{scale:.0f}; DuckDB threads={args.threads}"
        )


if __name__ == "__main__":
    main()
