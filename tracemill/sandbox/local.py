"""The `local` sandbox: a pre-started zygote forks an isolated child per session (see zygote.py).

This side owns the zygote, hands each session a Unix socket, enforces the wall-time limit (a cell
past it is killed with its session's whole cgroup, and what it printed so far is read from the
session's output file), kills every process a session started when it is closed, and removes every
temp dir and cgroup.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tracemill.sandbox import cgroup, wire
from tracemill.sandbox.base import RunResult, SandboxError, SandboxParams, run_sessions
from tracemill.sandbox.cell import FD_OUTPUT, drain
from tracemill.sandbox.zygote import remove_workdir

START_TIMEOUT_S = 120.0  # importing sympy and numpy on a busy machine
KILL_GRACE_S = 1.0  # time for the reply of a cell that ends right at the limit

EXPECTED_LAYERS = (
    "tempdir",
    "env-scrub",
    "stdin-closed",
    "rlimits",
    "process-group",
    "netns",
    "landlock",
    "process-limit",
    "tree-kill",
)
_warned: set[str] = set()


def _read_paths() -> list[str]:
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
    }
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    paths.update(("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo"))
    return sorted(p for p in paths if os.path.exists(p))


class LocalSession:
    def __init__(
        self,
        sandbox: LocalSandbox,
        sock: socket.socket,
        pid: int,
        workdir: str,
        cgroup_dir: str | None,
        parent: LocalSession | None = None,
    ) -> None:
        self.sandbox, self.sock, self.pid, self.workdir = sandbox, sock, pid, workdir
        self.cgroup = cgroup_dir  # the pids cgroup that holds every process of this session (None without that layer)
        self.parent = parent
        self.forks: set[LocalSession] = set()  # live forks, closed with this session
        self.dead: str | None = None

    def run(self, code: str) -> RunResult:
        if self.dead:
            return RunResult("killed", "", f"the session ended earlier ({self.dead}); its state is gone", 0.0)
        start = time.perf_counter()
        limit = self.sandbox.params.timeout_s
        try:
            wire.send(self.sock, {"op": "run", "code": code})
            self.sock.settimeout(limit + KILL_GRACE_S)
            reply, _ = wire.recv(self.sock)
            self.sock.settimeout(None)
        except TimeoutError:
            self._kill("timeout")
            stderr = f"the cell ran past the {limit:g} s limit and was killed"
            return RunResult("timeout", self._printed(), stderr, time.perf_counter() - start)
        except (EOFError, OSError):
            self._kill("killed")
            status, stderr = self._how_it_ended()
            return RunResult(status, self._printed(), stderr, time.perf_counter() - start)
        return RunResult(reply["status"], reply["stdout"], reply["stderr"], reply["wall_s"])

    def _printed(self) -> str:
        """What a killed cell printed before it died: the session writes it to its fd-output file as it goes."""
        params = self.sandbox.params
        return drain(f"{self.workdir}/{FD_OUTPUT}", params.max_output_bytes, params.truncation_marker)[0]

    def _how_it_ended(self) -> tuple[str, str]:
        """(status, message) for a session process that died in a cell, from its wait status. Only its parent
        knows that: the zygote for a session; a fork's parent is its session, which is not asked."""
        status = None if self.parent else self.sandbox._exit_status(self.pid)
        if status is None:
            return "killed", "the session process died (a crash, a signal or a memory kill)"
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
            return "error", f"the session process was killed by {name}"
        code = os.WEXITSTATUS(status)
        if code == 0:
            return "ok", "the session process exited with status 0; its state is gone"
        return "error", f"the session process exited with status {code}"

    def fork(self) -> LocalSession:
        """A new session that starts from a snapshot of this one's state (variables, imports, files)."""
        if self.dead:
            raise SandboxError(f"cannot fork a session that ended ({self.dead})")
        mine, theirs = socket.socketpair()
        try:
            wire.send(self.sock, {"op": "fork"}, fds=[theirs.fileno()])
            theirs.close()
            self.sock.settimeout(START_TIMEOUT_S)
            reply, _ = wire.recv(self.sock)
            self.sock.settimeout(None)
        except (EOFError, OSError) as exc:
            mine.close()
            self._kill("killed")
            raise SandboxError(f"cannot fork the session: its process ended ({exc})") from exc
        if reply.get("pid") is None:
            mine.close()
            raise SandboxError(
                f"cannot fork the session: {reply.get('error')} — a session and its live forks share "
                f"sandbox.max_processes ({self.sandbox.params.max_processes}); close forks or raise it"
            )
        mine.settimeout(START_TIMEOUT_S)
        hello, _ = wire.recv(mine)
        mine.settimeout(None)
        child = LocalSession(self.sandbox, mine, hello["pid"], hello["workdir"], None, parent=self)
        if self.cgroup:
            # Nested in this session's cgroup: the fork's processes count against the same pids.max, closing
            # the fork ends only its own tree, and closing this session ends the fork's too. It runs no cell
            # before it is moved there.
            path = f"{self.cgroup}/f-{child.pid}"
            try:
                os.mkdir(path)
                cgroup.write(path, "cgroup.procs", child.pid)
            except OSError as exc:
                child.close()
                cgroup.remove(path)
                raise SandboxError(f"cannot give the forked session a cgroup of its own: {exc}") from exc
            child.cgroup = path
        self.forks.add(child)
        self.sandbox._track(child)
        return child

    def _kill(self, why: str) -> None:
        """SIGKILL every process of this session: its cgroup's (and its forks'), wherever they went
        (setsid, double forks); without that layer, its process group."""
        self.dead = why
        if self.cgroup:
            cgroup.kill(self.cgroup)
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def close(self) -> None:
        """End the session and its forks. With the cgroup layer every process it started is killed before
        this returns, and its files are removed here; without, the session process does both (its
        process group only) when it sees the hang-up."""
        if self.dead == "closed":
            return
        for child in list(self.forks):
            child.close()
        had_died = self.dead
        if self.cgroup:
            self._kill("closed")
        self.sock.close()
        if self.cgroup or had_died:
            remove_workdir(self.workdir)
        self.dead = "closed"
        self.sandbox._untrack(self)
        if self.parent:
            self.parent.forks.discard(self)
        if self.cgroup:
            self.sandbox._release_cgroup(self.cgroup)

    def __enter__(self) -> LocalSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalSandbox:
    def __init__(self, params: SandboxParams) -> None:
        self.params = params
        self.root = tempfile.mkdtemp(prefix="tracemill-sandbox-")
        os.chmod(self.root, 0o1733)  # sessions may create their dirs here, but not list each other's
        self._lock = threading.Lock()
        self._sessions: set[LocalSession] = set()
        self._ended_cgroups: list[str] = []  # cgroups of closed sessions whose processes may still be exiting
        self._ctrl, child = socket.socketpair()
        cfg = {
            "ctrl_fd": child.fileno(),
            "root": self.root,
            "read_paths": _read_paths(),
            "preload": params.preload,
            "warmup": params.warmup,
            "spares": params.spares,
            "huge_pages": params.huge_pages,
            "use_landlock": True,
            "memory_mb": params.memory_mb,
            "max_processes": params.max_processes,
            "max_output_bytes": params.max_output_bytes,
            "truncation_marker": params.truncation_marker,
            "max_open_files": params.max_open_files,
            "max_file_bytes": params.max_file_bytes,
            "echo_last_expression": params.echo_last_expression,
            "uid_base": params.uid_base,
            "uid_range": params.uid_range,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self._log = open(os.path.join(self.root, ".zygote.log"), "wb")
        self._zygote = subprocess.Popen(
            [sys.executable, "-m", "tracemill.sandbox.zygote", json.dumps(cfg)],
            pass_fds=[child.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        child.close()
        self._ctrl.settimeout(START_TIMEOUT_S)
        try:
            hello, _ = wire.recv(self._ctrl)
        except (TimeoutError, EOFError, OSError) as exc:
            log = Path(self.root, ".zygote.log").read_text(errors="replace")[-2000:]
            self.close()
            raise SandboxError(f"the sandbox zygote did not start: {exc}\n{log}") from exc
        self._ctrl.settimeout(None)
        self.cgroup_root = hello.get("cgroup_root")
        self.huge_page_bytes = hello.get("huge_page_bytes", 0)
        layers = hello["layers"]
        layers["process-limit"] = bool(layers.get("cgroup-pids") or layers.get("uid-drop") or os.geteuid() != 0)
        # closing a session ends the processes that left its process group (setsid, double forks) only via its cgroup
        layers["tree-kill"] = bool(layers.get("cgroup-pids"))
        self.layers = layers
        self.active_layers = [name for name, on in layers.items() if on]
        self._report(layers)

    def _report(self, layers: dict[str, bool]) -> None:
        missing = [name for name in EXPECTED_LAYERS if not layers.get(name)]
        if not missing:
            return
        message = (
            f"sandbox: isolation layer(s) unavailable here: {', '.join(missing)}; "
            f"still active: {', '.join(self.active_layers)}"
        )
        if self.params.strict:
            self.close()
            raise SandboxError(message + " — sandbox.strict is true, so nothing runs (set it false to go on)")
        if message not in _warned:  # say it once per process, not once per stage shard
            _warned.add(message)
            print(message, file=sys.stderr)

    def session(self) -> LocalSession:
        mine, theirs = socket.socketpair()
        with self._lock:
            wire.send(self._ctrl, {"op": "fork"}, fds=[theirs.fileno()])
        theirs.close()
        mine.settimeout(START_TIMEOUT_S)
        hello, _ = wire.recv(mine)
        mine.settimeout(None)
        cgroup_dir = (
            os.path.join(self.cgroup_root, f"s-{hello['pid']}") if self.cgroup_root else None
        )  # zygote.join_cgroup's name
        session = LocalSession(self, mine, hello["pid"], hello["workdir"], cgroup_dir)
        self._track(session)
        return session

    def run_many(self, jobs: Sequence[Sequence[str]]) -> list[list[RunResult]]:
        return run_sessions(self, jobs, self.params.pool_size)

    def _track(self, s: LocalSession) -> None:
        with self._lock:
            self._sessions.add(s)

    def _untrack(self, s: LocalSession) -> None:
        with self._lock:
            self._sessions.discard(s)

    def _exit_status(self, pid: int) -> int | None:
        """How session process `pid` ended (its wait status), asked of the zygote, its parent."""
        with self._lock:
            try:
                wire.send(self._ctrl, {"op": "status", "pid": pid})
                reply, _ = wire.recv(self._ctrl)
            except (EOFError, OSError):
                return None
        return reply["status"]

    def _release_cgroup(self, path: str) -> None:
        """Remove the pids cgroups of closed sessions once their processes are gone, so a stage that
        runs millions of sessions does not keep millions of empty cgroups until it ends. The one just
        closed is usually still exiting; it stays on the list and is removed on a later close."""
        with self._lock:
            self._ended_cgroups = [p for p in self._ended_cgroups + [path] if not cgroup.remove(p)]

    def close(self) -> None:
        for s in list(self._sessions):
            s.close()
        try:
            self._ctrl.close()
        except OSError:
            pass
        if getattr(self, "_zygote", None) is not None:
            self._zygote.kill()
            self._zygote.wait()
        self._log.close() if getattr(self, "_log", None) else None
        self._remove_cgroups()
        shutil.rmtree(self.root, ignore_errors=True)

    def _remove_cgroups(self) -> None:
        root = getattr(self, "cgroup_root", None)
        if not root:
            return
        for _ in range(50):  # killed processes leave their cgroup a moment later
            cgroup.kill(root)
            if cgroup.remove(root):
                return
            time.sleep(0.02)
