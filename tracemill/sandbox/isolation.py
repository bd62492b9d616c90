"""The kernel's isolation layers a sandbox session runs under, set up by the zygote (tracemill/sandbox/zygote.py):
Landlock (reads only beneath the Python installation, writes only beneath the sandbox root, no TCP, no signals
or abstract sockets outside the session), the capability bounding set and capabilities, the pids cgroups that
bound and end a session's processes, and the zygote's heap on huge pages."""

from __future__ import annotations

import ctypes
import os
from typing import Any

from tracemill.sandbox import cgroup

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


def user_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue
    return count


def world_readable(path: str) -> bool:
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


def cgroup_base() -> tuple[str, bool] | None:
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


def cgroup_root() -> str | None:
    found = cgroup_base()
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
