"""Sandbox throughput: short stateful sessions that use sympy, ours versus a fresh interpreter per cell.

    python benchmarks/sandbox.py [--sessions 1000] [--baseline-cells 20]

Ours: `tracemill.sandbox` local backend with every isolation layer this machine allows, sessions
run through `run_many` (pool_size from params). Baseline, in the same run: the naive way, a fresh
`python -c` subprocess per cell (state carried by re-running the earlier cells, as a stateless
runner must); timed on `--baseline-cells` cells and scaled to the same session count.
Goal: >= 100x faster and >= 300 sessions/s on 2 cores.

Floor, in the same run: what forking one child per session costs on this machine before any
isolation or protocol. A fresh interpreter preloads and warms up as the zygote does, then forks a
bare child per session that execs the same cells and exits (`pool` children at once). Ours cannot
beat it: the gap between the two is what isolation and the session protocol add.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import os
import subprocess
import sys
import time

from tracemill.sandbox import SandboxParams, open_sandbox

# Short cells of the kind a tool-integrated trace writes: exact arithmetic with sympy.
SHORT = (
    ["import sympy\nprice = sympy.Rational(3, 4) * 48 + sympy.Rational(1, 6) * 12", "print(price, sympy.sqrt(8))"],
    "38 2*sqrt(2)\n",
)
# --heavy: symbolic solving and expansion in every session.
HEAVY = (
    [
        "import sympy\nx = sympy.symbols('x')\nroots = sympy.solve(x**2 - 5*x + 6, x)",
        "print(sum(roots), sympy.expand((x + 1)**3))",
    ],
    "5 x**3 + 3*x**2 + 3*x + 1\n",
)
CELLS, EXPECTED = SHORT


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has used (user + system), from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def ours(n: int, pool: int, huge_pages: bool) -> tuple[float, float, list[str]]:
    with open_sandbox(SandboxParams(pool_size=pool, huge_pages=huge_pages)) as sb:
        sb.run_many([CELLS] * 8)  # the zygote is started and warm
        cpu, start = busy_cpu_s(), time.perf_counter()
        results = sb.run_many([CELLS] * n)
        elapsed, cpu = time.perf_counter() - start, busy_cpu_s() - cpu
        bad = sum(r[1].stdout != EXPECTED for r in results)
        if bad:
            raise SystemExit(f"{bad} sessions gave a wrong answer")
        return elapsed, cpu, sb.active_layers


def naive(cells: int) -> float:
    """Seconds per session for the naive runner: cell k re-runs cells 1..k in a fresh interpreter."""
    start = time.perf_counter()
    sessions = max(1, cells // len(CELLS))
    for _ in range(sessions):
        for k in range(1, len(CELLS) + 1):
            out = subprocess.run(
                [sys.executable, "-c", "\n".join(CELLS[:k])], capture_output=True, text=True, timeout=60
            )
            if k == len(CELLS) and out.stdout != EXPECTED:
                raise SystemExit(f"baseline gave {out.stdout!r}")
    return (time.perf_counter() - start) / sessions


def floor(n: int, pool: int, huge_pages: bool) -> tuple[float, float]:
    """Sessions/s and CPU ms per session of a bare fork per session; run in a fresh interpreter
    (`--floor`) so it forks from a process shaped like the zygote, not from this one."""
    from tracemill.sandbox.isolation import collapse_heap

    params = SandboxParams()
    for name in params.preload:
        importlib.import_module(name)
    exec(compile(params.warmup, "<warmup>", "exec"), {})
    gc.collect()
    gc.freeze()
    if huge_pages:
        collapse_heap()
    cells = [compile(c, "<cell>", "exec") for c in CELLS]

    def start() -> tuple[int, int]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:  # whatever a cell does, this child never returns into the loop below
                sys.stdout = out = io.StringIO()
                env: dict[str, object] = {"__name__": "__main__"}
                for code in cells:
                    exec(code, env)
                os.write(w, out.getvalue().encode())
            finally:
                os._exit(0)
        os.close(w)
        return pid, r

    cpu, begin = busy_cpu_s(), time.perf_counter()
    running = [start() for _ in range(min(pool, n))]
    done = 0
    while running:
        pid, r = running.pop(0)
        with os.fdopen(r, "rb") as fh:
            out = fh.read().decode()
        os.waitpid(pid, 0)
        if out != EXPECTED:
            raise SystemExit(f"a bare session gave {out!r}")
        done += 1
        if done + len(running) < n:
            running.append(start())
    elapsed, cpu = time.perf_counter() - begin, busy_cpu_s() - cpu
    return n / elapsed, cpu / n * 1000


def floor_in_fresh_interpreter(args: argparse.Namespace) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--floor", "--sessions", str(args.sessions), "--pool", str(args.pool)]
    cmd += ["--heavy"] * args.heavy + ["--no-huge-pages"] * args.no_huge_pages
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rate, ms = json.loads(out.stdout.splitlines()[-1])
    return rate, ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--baseline-cells", type=int, default=20)
    ap.add_argument("--pool", type=int, default=SandboxParams().pool_size)
    ap.add_argument("--heavy", action="store_true", help="sympy.solve + expand in every session")
    ap.add_argument("--no-huge-pages", action="store_true", help="keep the zygote's heap on 4 KiB pages")
    ap.add_argument(
        "--floor", action="store_true", help="only measure the bare fork-per-session floor; print it as JSON"
    )
    ap.add_argument("--ours-only", action="store_true", help="only run ours (benchmarks/sandbox_profile.py samples it)")
    args = ap.parse_args()
    global CELLS, EXPECTED
    CELLS, EXPECTED = HEAVY if args.heavy else SHORT
    if args.floor:
        print(json.dumps(floor(args.sessions, args.pool, not args.no_huge_pages)))
        return
    if args.ours_only:
        elapsed, cpu, _ = ours(args.sessions, args.pool, not args.no_huge_pages)
        print(f"ours: {args.sessions / elapsed:.0f} sessions/s, {cpu / args.sessions * 1000:.1f} ms of CPU per session")
        return
    print(f"workload: {'heavy' if args.heavy else 'short'} sessions of {len(CELLS)} sympy cells")
    elapsed, cpu, layers = ours(args.sessions, args.pool, not args.no_huge_pages)
    floor_rate, floor_ms = floor_in_fresh_interpreter(args)
    per_naive = naive(args.baseline_cells)
    rate = args.sessions / elapsed
    naive_total = per_naive * args.sessions
    print(f"active isolation layers: {', '.join(layers)}")
    print(
        f"ours:     {args.sessions} sessions x {len(CELLS)} cells in {elapsed:.2f} s = {rate:.0f} sessions/s "
        f"(pool {args.pool})"
    )
    cores = os.cpu_count() or 1
    print(
        f"          {cpu / args.sessions * 1000:.1f} ms of CPU per session, "
        "all processes (fork, isolation, cells, exit);"
        f" {cores} cores {cpu / (elapsed * cores):.0%} busy, "
        f"so at most {cores * args.sessions / cpu:.0f} sessions/s here"
    )
    print(
        "floor:    a bare fork per session running the same cells, no isolation or protocol: "
        f"{floor_rate:.0f} sessions/s,"
        f" {floor_ms:.1f} ms of CPU per session; ours runs at {rate / floor_rate:.0%} of it"
    )
    print(
        f"baseline: python -c per cell, {per_naive * 1000:.0f} ms/session, "
        f"{naive_total:.0f} s for {args.sessions} sessions"
        f" (timed on {max(1, args.baseline_cells // len(CELLS))} sessions, scaled)"
    )
    print(
        f"ratio: {naive_total / elapsed:.0f}x faster   "
        f"goals: >= 100x {'ok' if naive_total / elapsed >= 100 else 'MISSED'},"
        f" >= 300 sessions/s {'ok' if rate >= 300 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
