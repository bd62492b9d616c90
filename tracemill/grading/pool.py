"""math-verify in worker processes with a hard per-item timeout.

math-verify's own timeouts use SIGALRM, which works only on a main thread and cannot stop every
hostile parse. Here each worker is a subprocess (`python -m tracemill.grading.pool`) running
math-verify on its main thread, one JSON line in, one out; the parent gives each item a deadline
and kills a worker that passes it (the item is `timeout`, a new worker takes its place), so one
bad answer never stalls a stage. Plain subprocesses, not multiprocessing: nothing of the calling
program is re-imported in a worker.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence


class _Worker:
    def __init__(self, memory_mb: int, float_rounding: int, timeout_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracemill.grading.pool", str(memory_mb), str(float_rounding), str(timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        self.buffer = b""

    def send(self, gold: str, pred: str) -> bool:
        try:
            self.proc.stdin.write((json.dumps([gold, pred]) + "\n").encode())
            return True
        except OSError:
            return False

    def read_line(self) -> str | None:
        """The reply if a whole line has arrived; '' when the worker died; None when incomplete."""
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return ""
        self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


class VerifyPool:
    def __init__(self, workers: int, timeout_s: float, memory_mb: int, float_rounding: int) -> None:
        self.args = (memory_mb, float_rounding, timeout_s)
        self.timeout_s = timeout_s
        self._workers = [_Worker(*self.args) for _ in range(workers)]

    def verify_many(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """A reason per pair: equal | not_equal | unparsed | timeout | verifier_crashed."""
        out: list[str] = ["verifier_crashed"] * len(pairs)
        todo = deque(range(len(pairs)))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (item, deadline)
        sel = selectors.DefaultSelector()
        try:
            while todo or busy:
                for slot, worker in enumerate(self._workers):
                    if slot not in busy and todo:
                        item = todo.popleft()
                        if not worker.send(*pairs[item]):
                            self._replace(slot)
                            todo.appendleft(item)
                            continue
                        busy[slot] = (item, time.monotonic() + self.timeout_s)
                        sel.register(worker.proc.stdout, selectors.EVENT_READ, slot)
                if not busy:
                    continue
                nearest = min(deadline for _, deadline in busy.values())
                for key, _ in sel.select(timeout=max(0.0, nearest - time.monotonic())):
                    slot = key.data
                    reply = self._workers[slot].read_line()
                    if reply is None:
                        continue
                    item, _ = busy.pop(slot)
                    sel.unregister(key.fileobj)
                    if reply == "":
                        self._replace(slot)  # died: memory limit or a crash
                    else:
                        out[item] = reply
                now = time.monotonic()
                for slot, (item, deadline) in list(busy.items()):
                    if now >= deadline:
                        out[item] = "timeout"
                        busy.pop(slot)
                        sel.unregister(self._workers[slot].proc.stdout)
                        self._replace(slot)
        finally:
            sel.close()
        return out

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker(*self.args)

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()


def _serve(memory_mb: int, float_rounding: int, timeout_s: float) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from math_verify import parse, verify

    seconds = max(1, int(timeout_s))
    for line in sys.stdin:
        gold, pred = json.loads(line)
        try:
            g = parse(f"${gold}$", parsing_timeout=seconds)
            p = parse(f"${pred}$", parsing_timeout=seconds)
            if not g or not p:
                reason = "unparsed"
            else:
                reason = "equal" if verify(g, p, float_rounding=float_rounding, timeout_seconds=seconds) else "not_equal"
        except Exception:  # math-verify raises many types on hostile input; MemoryError included
            reason = "verifier_crashed"
        sys.stdout.write(json.dumps(reason) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
