"""The sandbox zygote: a pre-started process that has already imported the libraries model code
uses (sympy, numpy, math, fractions) and forks one isolated child per session.

Run as `python -m tracemill.sandbox.zygote CONFIG_JSON` by `tracemill.sandbox.local`; on its control
socket it serves fork requests and says how an ended session process ended (its wait status: an exit
code or a signal), which only its parent can know. The zygote enters an empty network namespace once at start, so
every session child inherits "no network" at no per-session cost.

Layers applied in each session child, in order: its own process group (setsid), a pids cgroup of its
own as root (which the host kills whole when the session ends), a private temp
dir, a scrubbed environment, stdin from /dev/null, Landlock (reads only beneath the Python
installation, writes only beneath the sandbox root, no TCP, no signals to processes outside the
session), rlimits, and an unprivileged per-session uid when the zygote runs as root (so the
process limit binds and host files keep their owner's protection). The kernel layers are set up in
isolation.py; a session runs each cell through cell.py.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import importlib
import io
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import sys
from typing import Any

from tracemill.sandbox import wire
from tracemill.sandbox.cell import FD_OUTPUT, run_cell
from tracemill.sandbox.isolation import (
    cgroup_root,
    collapse_heap,
    drop_bounding_set,
    drop_capabilities,
    join_cgroup,
    landlock_abi,
    landlock_ruleset,
    restrict_self,
    user_processes,
    world_readable,
)

CLONE_NEWNET = 0x40000000
# Exit statuses of ended sessions the zygote keeps for the host, which asks for one right after that
# session's socket closes; older ones (sessions nobody asked about) are dropped past this many.
ENDED_KEPT = 4096

_libc = ctypes.CDLL(None, use_errno=True)


# ---- the session child ---------------------------------------------------------------------------


def _capture_fds(workdir: str, uid: int | None) -> None:
    """Point file descriptors 1 and 2 at the session's fd-output file. O_APPEND: once a cell's output
    is drained (the file cut to zero), the next write lands at its start, not at the old offset
    behind a run of NUL bytes."""
    out = os.open(f"{workdir}/{FD_OUTPUT}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    if uid is not None:
        os.fchown(out, uid, uid)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)


def _isolate(cfg: dict[str, Any], workdir: str, uid: int | None) -> None:
    if cfg["layers"].get("cgroup-pids"):
        join_cgroup(cfg)
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = io.StringIO("")
    _capture_fds(workdir, uid)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir  # the rest was scrubbed once, in the zygote
    # RLIMIT_NPROC counts every process of the real uid: a per-session uid starts at zero, a shared
    # one (a non-root user) already has its own processes, and uid 0 is never limited by it (the
    # pids cgroup is). Counted before Landlock hides /proc.
    if uid is not None or os.getuid() == 0:
        nproc = cfg["max_processes"]
    else:
        nproc = user_processes() + cfg["max_processes"]
    if cfg["landlock_fd"] is not None:
        restrict_self(cfg["landlock_fd"])
        os.close(cfg["landlock_fd"])
    mem = cfg["base_vm_bytes"] + cfg["memory_mb"] * 1024 * 1024
    for limit, value in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_NOFILE, cfg["max_open_files"]),
        (resource.RLIMIT_FSIZE, cfg["max_file_bytes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    elif os.geteuid() == 0 and cfg["layers"].get("caps-drop"):
        drop_capabilities()


def _new_workdir(cfg: dict[str, Any], uid: int | None, copy_from: str | None = None) -> str:
    # An unguessable name, as mkdtemp gives, without mkdtemp's cost in a fresh fork (it re-seeds a
    # Mersenne Twister there, and that writes to a hundred inherited pages).
    workdir = f"{cfg['root']}/s-{os.urandom(12).hex()}"
    os.mkdir(workdir, 0o700)
    if copy_from:
        shutil.copytree(copy_from, workdir, dirs_exist_ok=True)
    if uid is not None:
        os.chown(workdir, uid, uid)
    return workdir


def serve_session(sock: socket.socket, cfg: dict[str, Any], env: dict[str, Any], workdir: str) -> None:
    fd_out = f"{workdir}/{FD_OUTPUT}"
    forks: set[int] = set()
    while True:
        try:
            msg, fds = wire.recv(sock, with_fds=True)
        except (EOFError, OSError):
            _end_session(workdir)
        if msg["op"] == "run":
            wire.send(sock, run_cell(msg["code"], env, cfg, fd_out))
        elif msg["op"] == "fork":
            child_sock = socket.socket(fileno=fds[0])
            _reap(forks)
            try:
                pid = os.fork()
            except OSError as exc:  # the session's process limit: this session goes on, the fork does not
                child_sock.close()
                wire.send(sock, {"pid": None, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if pid == 0:
                sock.close()
                os.setsid()
                new_dir = _new_workdir(cfg, None, copy_from=workdir)
                os.chdir(new_dir)
                _capture_fds(new_dir, None)  # its raw output is its own, not its parent's
                wire.send(child_sock, {"pid": os.getpid(), "workdir": new_dir})
                serve_session(child_sock, cfg, env, new_dir)
            child_sock.close()
            forks.add(pid)
            wire.send(sock, {"pid": pid})
        else:
            _end_session(workdir)


def _reap(forks: set[int]) -> None:
    """Collect forks of this session that have ended: a zombie still holds a slot of the pids
    cgroup and RLIMIT_NPROC, so unreaped forks would use up the session's process limit."""
    for pid in list(forks):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            forks.discard(pid)


def remove_workdir(workdir: str) -> None:
    try:  # the usual session leaves only its fd-output file; anything more takes the full walk
        os.unlink(f"{workdir}/{FD_OUTPUT}")
        os.rmdir(workdir)
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)


def _end_session(workdir: str) -> None:
    """The parent hung up (the host went away, or a session without the cgroup layer was closed):
    remove this session's files, then end its whole process group."""
    remove_workdir(workdir)
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)


def spare_main(link: socket.socket, cfg: dict[str, Any], uid: int | None) -> None:
    """A session child made ahead of demand: isolated first, then it waits for its parent's socket."""
    os.setsid()
    workdir = _new_workdir(cfg, uid)
    _isolate(cfg, workdir, uid)
    try:
        _, fds = wire.recv(link, with_fds=True)
    except (EOFError, OSError):
        _end_session(workdir)
    link.close()
    sock = socket.socket(fileno=fds[0])
    wire.send(sock, {"pid": os.getpid(), "workdir": workdir})
    env: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    serve_session(sock, cfg, env, workdir)


# ---- the zygote ----------------------------------------------------------------------------------


def _layers(cfg: dict[str, Any]) -> dict[str, Any]:
    """Enter the network namespace and probe the other layers; report what holds."""
    layers = {"tempdir": True, "env-scrub": True, "stdin-closed": True, "rlimits": True, "process-group": True}
    layers["netns"] = _libc.unshare(CLONE_NEWNET) == 0
    layers["landlock"] = cfg["landlock_abi"] > 0
    root = os.geteuid() == 0
    layers["uid-drop"] = root and all(world_readable(p) for p in cfg["read_paths"] if os.path.exists(p))
    layers["caps-drop"] = root and not layers["uid-drop"]
    cfg["cgroup_root"] = cgroup_root() if root else None
    layers["cgroup-pids"] = cfg["cgroup_root"] is not None
    return layers


def scrub_environment(home: str) -> None:
    """The environment every session starts from: no tokens, keys or home of the host. A session
    child then points HOME and TMPDIR at its own directory."""
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})


def raw_fork_is_sound() -> bool:
    """May the zygote call fork(2) straight from libc? os.fork also runs CPython's at-fork work in the
    child (thread, lock and signal state), and a fresh fork copies every page that work writes. None of
    it is needed while the zygote has one thread: no lock can be held by a thread the child lacks, and
    the one thread keeps its identity. Only on CPython 3.11, whose fork path this was checked against;
    elsewhere os.fork."""
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] == (3, 11)
        and len(os.listdir("/proc/self/task")) == 1
    )


def fork(raw: bool) -> int:
    if not raw:
        return os.fork()
    pid = _libc.fork()  # ctypes lets go of the GIL around the call; each process takes it back
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork")
    if pid == 0 and "random" in sys.modules:
        sys.modules["random"].seed()  # CPython's own at-fork hook does this: sessions never share a random stream
    return pid


def _prime(cfg: dict[str, Any]) -> None:
    """Run the warm-up code the way a session runs a cell (compile_cell, exec, echo, the writers, the
    drain, the JSON reply), so whatever that path builds lazily is built once here. A child inherits it
    instead of building it anew, which in a fresh fork means copying every page it writes."""
    scratch = f"{cfg['root']}/.prime-{os.getpid()}"
    os.mkdir(scratch, 0o700)
    try:
        fd_out = f"{scratch}/{FD_OUTPUT}"
        open(fd_out, "w").close()
        env: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        for code in (cfg.get("warmup") or "", "_ = None\n_"):
            reply = run_cell(code, env, cfg, fd_out)
            if reply["status"] != "ok":
                raise SystemExit(f"the sandbox warm-up failed: {reply['stderr']}")
            json.loads(json.dumps(reply))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _collect(ended: dict[int, int]) -> None:
    """Reap the session children that have ended and keep their wait status (how each ended) for the
    host to ask about; a zombie would hold its pid and its slot of the pids cgroup."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        ended[pid] = status
        if len(ended) > ENDED_KEPT:
            del ended[next(iter(ended))]


def _exit_status(pid: int, ended: dict[int, int]) -> int | None:
    """The wait status of session child `pid`, which the host has killed or seen die: it is exiting if
    not yet reaped. None when it is not (or no longer) this zygote's child."""
    if pid in ended:
        return ended.pop(pid)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def main() -> None:
    cfg = json.loads(sys.argv[1])
    ctrl = socket.socket(fileno=cfg["ctrl_fd"])
    for name in cfg["preload"]:
        importlib.import_module(name)
    _prime(cfg)
    # Move everything imported so far out of the collector's reach: a child's GC pass would touch
    # (and so copy) every page of the inherited heap.
    gc.collect()
    gc.freeze()
    huge = collapse_heap() if cfg["huge_pages"] else 0
    cfg["landlock_abi"] = landlock_abi() if cfg["use_landlock"] else 0
    layers = _layers(cfg)
    cfg["layers"] = layers
    cfg["base_vm_bytes"] = _vm_bytes()
    # What is the same for every session is set up here once; a session child only enforces it.
    abi = cfg["landlock_abi"]
    cfg["landlock_fd"] = landlock_ruleset(abi, cfg["read_paths"], [cfg["root"], os.devnull]) if abi else None
    if layers["caps-drop"]:
        drop_bounding_set()
    scrub_environment(cfg["root"])
    raw = raw_fork_is_sound()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an ended session stays a zombie until _collect reads how it ended
    spares: collections.deque[tuple[socket.socket, int]] = collections.deque()
    ended: dict[int, int] = {}
    counter = itertools.count(1)

    def spawn() -> None:
        link, theirs = socket.socketpair()
        uid = cfg["uid_base"] + next(counter) % cfg["uid_range"] if layers["uid-drop"] else None
        pid = fork(raw)
        if pid == 0:
            ctrl.close()
            link.close()
            for other, _ in spares:  # links to the other spares are not this child's to hold
                other.close()
            spare_main(theirs, cfg, uid)
            os._exit(0)
        theirs.close()
        spares.append((link, pid))

    for _ in range(cfg["spares"]):
        spawn()
    wire.send(ctrl, {"ready": True, "layers": layers, "cgroup_root": cfg["cgroup_root"], "huge_page_bytes": huge})
    while True:
        try:
            msg, fds = wire.recv(ctrl, with_fds=True)
        except (EOFError, OSError):
            return
        _collect(ended)
        if msg.get("op") == "status":
            pid = msg["pid"]
            spare = any(pid == p for _, p in spares)  # a reused pid: never wait on a live spare
            wire.send(ctrl, {"status": None if spare else _exit_status(pid, ended)})
            continue
        if msg.get("op") != "fork" or not fds:
            return
        if not spares:
            spawn()
        link, _ = spares.popleft()
        wire.send(link, {"op": "adopt"}, fds=[fds[0]])
        link.close()
        os.close(fds[0])
        spawn()  # refill while the parent talks to the session


if __name__ == "__main__":
    main()
