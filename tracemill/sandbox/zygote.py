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
process limit binds and host files keep their owner's protection).
"""

from __future__ import annotations

import ast
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
import time
import traceback
from types import CodeType
from typing import Any, cast

from tracemill.sandbox import cgroup, wire

CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_FS_ALL_V1 = (1 << 13) - 1
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_ALL = (1 << 0) | (1 << 1)  # bind and connect TCP
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
HUGE_PAGE = 2 << 20
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals
CGROUP_V2, CGROUP_V1_PIDS = "/sys/fs/cgroup", "/sys/fs/cgroup/pids"
# Exit statuses of ended sessions the zygote keeps for the host, which asks for one right after that
# session's socket closes; older ones (sessions nobody asked about) are dropped past this many.
ENDED_KEPT = 4096
FD_OUTPUT = ".fd-output"  # a session's file descriptors 1 and 2, drained after each cell

_libc = ctypes.CDLL(None, use_errno=True)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return abi if abi > 0 else 0


def _fs_mask(abi: int) -> int:
    mask = _FS_ALL_V1
    if abi >= 2:
        mask |= _FS_REFER
    if abi >= 3:
        mask |= _FS_TRUNCATE
    if abi >= 5:
        mask |= _FS_IOCTL_DEV
    return mask


def landlock_ruleset(abi: int, read_paths: list[str], write_paths: list[str]) -> int:
    """A Landlock ruleset (a close-on-exec descriptor): reads only beneath read_paths, writes only
    beneath write_paths, no TCP, and on ABI 6+ no signals or abstract sockets outside the domain.
    The zygote builds it once; each session child only enforces it (restrict_self)."""
    fs_all = _fs_mask(abi)
    attr = _RulesetAttr(fs_all, _NET_ALL if abi >= 4 else 0, _SCOPE_ALL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    fd = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for paths, access in ((read_paths, _FS_READ), (write_paths, fs_all)):
            for path in paths:
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                rule = _PathBeneath(
                    access if os.path.isdir(path) else access & ((1 << 0) | (1 << 1) | (1 << 2) | _FS_TRUNCATE), pfd
                )
                res = _libc.syscall(
                    SYS_LANDLOCK_ADD_RULE,
                    fd,
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
                os.close(pfd)
                if res < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict_self(ruleset_fd: int) -> None:
    """Enforce a ruleset on this process and all it starts, for good."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(no_new_privs)")
    if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")


# ---- the session child ---------------------------------------------------------------------------


class BoundedWriter(io.TextIOBase):
    """sys.stdout/stderr of a cell: keeps the first `limit` characters, counts the rest. With `fd`, the
    kept characters go straight to that file descriptor (stdout: the session's fd-output file), so what
    a cell printed is on disk even when the cell is killed before it returns; without, in memory."""

    def __init__(self, limit: int, fd: int | None = None) -> None:
        self.limit, self.fd = limit, fd
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, s: str) -> int:
        room = self.limit - self.size
        if room > 0 and s:
            if self.fd is None:
                self.parts.append(s[:room])
            else:
                data = memoryview(s[:room].encode(errors="backslashreplace"))
                while data:
                    data = data[os.write(self.fd, data) :]
        if len(s) > room:
            self.truncated = True
        self.size += len(s)
        return len(s)

    def getvalue(self) -> str:
        return "".join(self.parts)


def compile_cell(code: str, echo: bool) -> tuple[CodeType, CodeType | None]:
    """(body, last): the cell's code, and -- with echo -- its last statement apart when that is an
    expression, whose value a notebook shows. Compiled from the source by CPython's own parser where
    possible: turning a cell into an ast of Python objects writes to hundreds of pages, and in a fresh
    fork each one is copied. The source is split before its last line that starts a statement at column
    0; that split is sound when the part before compiles on its own and the part after has no `;` and
    does not start with `*` (`*a, b` is a statement but no eval expression). Anything else (a statement
    spread over lines, a syntax error) goes through the ast, as it always did."""
    if not echo:
        return compile(code, "<cell>", "exec"), None
    lines = code.splitlines(keepends=True)
    i = next((k for k in range(len(lines) - 1, -1, -1) if lines[k][:1].strip() and lines[k][0] != "#"), None)
    if i is not None and ";" not in "".join(lines[i:]) and lines[i][0] != "*":
        tail = "\n" * i + "".join(lines[i:])  # the same line numbers as in the cell
        try:
            body = compile("".join(lines[:i]), "<cell>", "exec")
            try:
                return body, compile(tail, "<cell>", "eval")
            except SyntaxError:
                compile(tail, "<cell>", "exec")  # one statement that is not an expression: nothing to echo
                return compile(code, "<cell>", "exec"), None
        except SyntaxError:
            pass
    tree = ast.parse(code, "<cell>", "exec")
    last = cast(ast.Expr, tree.body.pop()) if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    return compile(tree, "<cell>", "exec"), None if last is None else compile(
        ast.Expression(last.value), "<cell>", "eval"
    )


def _run_cell(code: str, env: dict[str, Any], cfg: dict[str, Any], fd_out: str) -> dict[str, Any]:
    # stdout keeps one character past the limit, so the file alone (all a killed cell leaves) tells it was cut
    out, err = BoundedWriter(cfg["max_output_bytes"] + 1, fd=1), BoundedWriter(cfg["max_output_bytes"])
    sys.stdout, sys.stderr = out, err
    status = "ok"
    start = time.perf_counter()
    try:
        body, last = compile_cell(code, cfg["echo_last_expression"])
        exec(body, env)
        if last is not None:
            value = eval(last, env)
            if value is not None:
                print(repr(value))
    except MemoryError:
        status = "memory"
        err.write("MemoryError: the cell exceeded the sandbox memory limit\n")
    except SystemExit as exc:  # a program that exits with status 0 (or none) ended normally
        if exc.code not in (None, 0):
            status = "error"
            err.write(f"SystemExit: {exc.code}\n")
    except BaseException:  # model code may raise anything; the session must survive it
        status = "error"
        err.write(_short_traceback())
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    wall = time.perf_counter() - start
    stdout, cut = drain(fd_out, cfg["max_output_bytes"], cfg["truncation_marker"])
    truncated = cut or out.truncated or err.truncated
    if truncated and status == "ok":
        status = "output_truncated"
    if truncated and not cut:
        stdout += cfg["truncation_marker"]
    return {"status": status, "stdout": stdout, "stderr": err.getvalue(), "wall_s": wall}


def _short_traceback() -> str:
    etype, value, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if f.filename == "<cell>"]
    lines = (
        ["Traceback (most recent call last):\n"]
        + traceback.format_list(frames)
        + traceback.format_exception_only(etype, value)
    )
    return "".join(lines)


def drain(path: str, limit: int, marker: str) -> tuple[str, bool]:
    """(output, truncated): what a cell wrote to file descriptors 1 and 2 (print, os.write, C code),
    cut to `limit` characters with `marker`; the file is emptied for the next cell. The host reads a
    killed cell's output the same way."""
    try:
        if not os.stat(path).st_size:  # a cell that printed nothing
            return "", False
        with open(path, "r+", errors="replace") as fh:
            data = fh.read(limit + 1)
            fh.truncate(0)
    except OSError:
        return "", False
    if len(data) > limit:
        return data[:limit] + marker, True
    return data, False


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_bounding_set() -> None:
    """Empty the capability bounding set, so no program a session runs can gain a capability. Done
    once in the zygote (a fork inherits the set); the zygote keeps its own effective capabilities."""
    for cap in range(64):
        _libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; errors past the last capability are expected


def drop_capabilities() -> None:
    """Keep uid 0 (so root-owned files stay readable by owner rights) but hold no capability:
    no CAP_KILL, CAP_SYS_ADMIN, CAP_NET_*, CAP_DAC_OVERRIDE, CAP_SYS_RESOURCE."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def join_cgroup(cfg: dict[str, Any]) -> None:
    """A pids cgroup of its own bounds every process the session starts, even as root."""
    pid = os.getpid()
    path = f"{cfg['cgroup_root']}/s-{pid}"
    os.mkdir(path)
    cgroup.write(path, "pids.max", cfg["max_processes"])
    cgroup.write(path, "cgroup.procs", pid)


def _user_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue
    return count


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
        nproc = _user_processes() + cfg["max_processes"]
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
            wire.send(sock, _run_cell(msg["code"], env, cfg, fd_out))
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


def _world_readable(path: str) -> bool:
    """Can an unprivileged uid reach `path` (every ancestor searchable by others)?"""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _sweep_stale_cgroups(base: str) -> None:
    """Remove the cgroups of sandboxes whose zygote is gone: a host process killed with SIGKILL never
    ran its cleanup. Only empty cgroups can be removed, so a live session is never touched."""
    for name in os.listdir(base):
        if not name.startswith("tracemill-") or not name[len("tracemill-") :].isdigit():
            continue
        try:
            os.kill(int(name[len("tracemill-") :]), 0)
            continue  # its zygote still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue
        cgroup.remove(os.path.join(base, name))


def _cgroup_base() -> tuple[str, bool] | None:
    """(where the sandbox's pids cgroups go, whether it is cgroup v2): the unified hierarchy when it
    offers the pids controller (its cgroup.kill ends a session's tree in one write), else the v1 pids
    hierarchy."""
    try:
        with open(f"{CGROUP_V2}/cgroup.controllers") as fh:
            if "pids" in fh.read().split():
                return CGROUP_V2, True
    except OSError:
        pass
    return (CGROUP_V1_PIDS, False) if os.path.isdir(CGROUP_V1_PIDS) else None


def _cgroup_root() -> str | None:
    found = _cgroup_base()
    if found is None:
        return None
    base, v2 = found
    try:
        _sweep_stale_cgroups(base)
    except OSError:
        pass
    root = os.path.join(base, f"tracemill-{os.getpid()}")
    try:
        if v2:  # a v2 cgroup has pids.max only where its parent hands the controller down
            cgroup.write(base, "cgroup.subtree_control", "+pids")
        os.mkdir(root)
        if v2:
            cgroup.write(root, "cgroup.subtree_control", "+pids")
    except OSError:
        cgroup.remove(root)
        return None
    return root


def _layers(cfg: dict[str, Any]) -> dict[str, Any]:
    """Enter the network namespace and probe the other layers; report what holds."""
    layers = {"tempdir": True, "env-scrub": True, "stdin-closed": True, "rlimits": True, "process-group": True}
    layers["netns"] = _libc.unshare(CLONE_NEWNET) == 0
    layers["landlock"] = cfg["landlock_abi"] > 0
    root = os.geteuid() == 0
    layers["uid-drop"] = root and all(_world_readable(p) for p in cfg["read_paths"] if os.path.exists(p))
    layers["caps-drop"] = root and not layers["uid-drop"]
    cfg["cgroup_root"] = _cgroup_root() if root else None
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
            reply = _run_cell(code, env, cfg, fd_out)
            if reply["status"] != "ok":
                raise SystemExit(f"the sandbox warm-up failed: {reply['stderr']}")
            json.loads(json.dumps(reply))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def collapse_heap() -> int:
    """Back the zygote's private heap with transparent huge pages (MADV_COLLAPSE, Linux 6.1+); returns
    the bytes collapsed. A fork then copies one page-table entry per 2 MiB instead of 512, and a
    session's exit frees as few: fork and exit are most of a short session's cost. A session that
    writes to a huge page splits it and copies only the 4 KiB it wrote, as before."""
    _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    with open("/proc/self/maps") as fh:
        regions = [line.split() for line in fh]
    for fields in regions:
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        anonymous = len(fields) < 6 or fields[5] == "[heap]"
        if fields[1] != "rw-p" or not anonymous:
            continue
        start, end = (lo + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1), hi & ~(HUGE_PAGE - 1)
        if end <= start:
            continue
        _libc.madvise(start, end - start, MADV_HUGEPAGE)
        if _libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
            done += end - start
    return done


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
