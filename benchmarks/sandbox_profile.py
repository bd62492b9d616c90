"""Where a sandbox session's CPU goes, next to the bare-fork floor's: `perf` samples both runs of
`benchmarks/sandbox.py` and splits each session's CPU by process (the host, the zygote or the floor's
parent, the session children) and, within each, by what ran (Python, libc, a page fault, each system call).

    python benchmarks/sandbox_profile.py [--sessions 1200] [--frequency 2000]

Needs `perf` (linux-tools) with kernel symbols readable (run as root, or kernel.kptr_restrict=0 and
kernel.perf_event_paranoid <= 1). The parents' rows include their start (importing sympy), which the
children's rows do not: compare children with children, and read the parents' rows as upper bounds.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRY = re.compile(r"__(?:x64|do)_sys_(\w+)")


def record(out: Path, cmd: list[str], frequency: int) -> None:
    subprocess.run(
        ["perf", "record", "-q", "-F", str(frequency), "-g", "-o", str(out), "--", *cmd],
        check=True,
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
    )


def samples(data: Path) -> list[tuple[int, list[str]]]:
    """(pid, stack from the leaf out) of every sample."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,tid,sym,dso,ip"], capture_output=True, text=True, check=True
    ).stdout
    found: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):  # a sample's header: " pid/tid"; its stack lines start with a tab
            found.append((int(line.split()[0].split("/")[0]), []))
        elif found:
            parts = line.split(None, 1)
            found[-1][1].append(parts[1] if len(parts) > 1 else parts[0])
    return found


def what_ran(stack: list[str]) -> str:
    """User code by library; kernel time by the system call it serves, else page faults, else 'kernel'."""
    if not stack:
        return "?"
    if "[kernel.kallsyms]" not in stack[0]:
        lib = stack[0].rsplit("(", 1)[-1].rstrip(")").rsplit("/", 1)[-1]
        return "python" if lib.startswith("libpython") else lib
    for frame in stack:
        if m := ENTRY.match(frame):
            return f"syscall {m.group(1)}"
    if any(frame.startswith("asm_exc_page_fault") for frame in stack):
        return "page faults"
    return "kernel, other"


def split(data: Path, parents: int, sessions: int) -> dict[str, collections.Counter[str]]:
    """Samples per session by process kind: the first `parents` pids in start order are the parents."""
    found = samples(data)
    names = ["host", "zygote"] if parents == 2 else ["parent"]
    kind_of = {
        pid: names[rank] if rank < parents else "children" for rank, pid in enumerate(sorted({p for p, _ in found}))
    }
    kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for pid, stack in found:
        kinds[kind_of[pid]][what_ran(stack)] += 1
    return {k: collections.Counter({w: n / sessions for w, n in c.items()}) for k, c in kinds.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1200)
    ap.add_argument("--frequency", type=int, default=2000, help="samples per CPU second")
    ap.add_argument("--rows", type=int, default=12, help="rows per process kind")
    args = ap.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("sandbox_profile: `perf` is not installed (apt install linux-tools-generic or linux-perf)")
    ms = 1000 / args.frequency
    with tempfile.TemporaryDirectory() as tmp:
        floor_data, ours_data = Path(tmp, "floor.data"), Path(tmp, "ours.data")
        bench = [sys.executable, str(HERE / "sandbox.py"), "--sessions", str(args.sessions)]
        record(floor_data, [*bench, "--floor"], args.frequency)
        record(ours_data, [*bench, "--ours-only"], args.frequency)
        floor = split(floor_data, 1, args.sessions)
        ours = split(ours_data, 2, args.sessions + 8)  # and the 8 warm-up sessions
    print(f"CPU ms per session, sampled by perf at {args.frequency} Hz ({args.sessions} sessions)")
    print(f"{'process':10s} {'what ran':28s} {'floor':>7s} {'ours':>7s}")
    for kind, floor_kind in (("children", "children"), ("zygote", "parent"), ("host", None)):
        mine, theirs = ours.get(kind, collections.Counter()), floor.get(floor_kind or "", collections.Counter())
        keys = sorted(set(mine) | set(theirs), key=lambda k: -max(mine[k], theirs[k]))
        for key in keys[: args.rows]:
            print(f"{kind:10s} {key[:28]:28s} {theirs[key] * ms:7.3f} {mine[key] * ms:7.3f}")
        print(f"{kind:10s} {'all':28s} {sum(theirs.values()) * ms:7.3f} {sum(mine.values()) * ms:7.3f}")
    print("the floor's rows beside the zygote's are its parent's, which forks and reads the pipes")


if __name__ == "__main__":
    main()
