"""A pool of math-verify worker processes with a hard deadline per item.

math-verify times out with SIGALRM, which works only on a main thread and cannot interrupt
C code; some inputs hang it for good. Each worker takes one item at a time; an item past its
deadline gets `timeout` and its worker is killed and replaced, so no input can stall a stage.
Workers are plain `python -m tracemill.grading.worker` processes: unlike multiprocessing's
spawn/forkserver they never re-run the caller's `__main__`, so any script can grade.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import cast

from tracemill.grading.core import GradingError

OUTCOMES = ("equal", "not_equal", "timeout", "verifier_error")
# A worker imports sympy and math-verify before it says it is ready; on a loaded host that takes
# seconds, which must not count against the first pair's `timeout_s`.
_START_S = 120.0


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection


class VerifyPool:
    """`run([(gold, pred, float_rounding), ...])` -> one of OUTCOMES per item, in order."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int) -> None:
        self._slots: list[_Worker | None] = [None] * workers
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb

    def run(self, tasks: Sequence[tuple[str, str, int]]) -> list[str]:
        results: list[str] = ["verifier_error"] * len(tasks)
        queue = deque(range(len(tasks)))
        inflight: dict[int, tuple[int, float]] = {}  # slot -> (task index, deadline)
        while queue or inflight:
            for slot in range(len(self._slots)):
                if slot not in inflight and queue:
                    task = queue.popleft()
                    self._send(slot, tasks[task])
                    inflight[slot] = (task, time.monotonic() + self._timeout_s)
            by_conn = {self._live(slot).conn: slot for slot in inflight}
            wait_s = max(0.0, min(deadline for _, deadline in inflight.values()) - time.monotonic())
            for conn in wait(list(by_conn), timeout=wait_s):
                slot = by_conn[cast(Connection, conn)]  # wait() returns some of the objects it was given
                task, _ = inflight.pop(slot)
                results[task] = self._receive(slot)
            now = time.monotonic()
            for slot, (task, deadline) in list(inflight.items()):
                if now >= deadline:
                    results[task] = "timeout"
                    del inflight[slot]
                    self._kill(slot)
        return results

    def close(self) -> None:
        for slot in range(len(self._slots)):
            self._kill(slot)

    def _start(self, slot: int) -> _Worker:
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "tracemill.grading.worker", str(theirs.fileno()), str(self._memory_mb)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        worker = self._slots[slot] = _Worker(process, Connection(ours.detach()))
        try:
            ready = worker.conn.poll(_START_S) and worker.conn.recv() == "ready"
        except (EOFError, OSError):  # it exited while importing
            ready = False
        if not ready:
            self._kill(slot)
            raise GradingError(
                f"a math-verify worker (python -m tracemill.grading.worker) did not start within "
                f"{_START_S:g} s — run it by hand to see why; `pip install math-verify` if it is missing"
            )
        return worker

    def _live(self, slot: int) -> _Worker:
        """The worker of a slot with an item in flight (dead or not: a dead one reads as EOF)."""
        worker = self._slots[slot]
        assert worker is not None, "an item in flight always has its worker"
        return worker

    def _send(self, slot: int, task: tuple[str, str, int]) -> None:
        worker = self._slots[slot]
        if worker is None or worker.process.poll() is not None:
            self._kill(slot)
            worker = self._start(slot)
        worker.conn.send(task)

    def _receive(self, slot: int) -> str:
        try:
            outcome = self._live(slot).conn.recv()
        except (EOFError, OSError):  # killed by the memory cap or a crash in native code
            self._kill(slot)
            return "verifier_error"
        return "verifier_error" if outcome == "error" else outcome

    def _kill(self, slot: int) -> None:
        worker = self._slots[slot]
        if worker is None:
            return
        worker.conn.close()  # an idle worker sees EOF and exits; a busy one is killed
        try:
            worker.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        self._slots[slot] = None
