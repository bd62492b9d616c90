"""The pids cgroups that hold each session's processes: joining one, ending everything in one, removing one.

A session's cgroup is `<sandbox root>/s-<pid>`; a fork of a session gets a cgroup nested in its
parent's (`.../f-<pid>`), so its processes count against the same `pids.max` and ending the parent
ends its forks too. Works on cgroup v2 (`cgroup.kill`) and on the v1 pids hierarchy (no such file:
the processes are listed and killed until none is left unkilled).
"""

from __future__ import annotations

import os
import signal


def write(path: str, name: str, value: int | str) -> None:
    fd = os.open(f"{path}/{name}", os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def members(path: str) -> set[int]:
    """Every process in cgroup `path` and in the cgroups nested in it (none once it is gone)."""
    pids: set[int] = set()
    for dirpath, _, _ in os.walk(path):
        try:
            with open(f"{dirpath}/cgroup.procs") as fh:
                pids.update(int(line) for line in fh.read().split())
        except FileNotFoundError:  # removed while walking
            continue
    return pids


def kill(path: str) -> None:
    """SIGKILL every process in cgroup `path` and its nested cgroups, however it left its process group
    or session (setsid, a double fork). Returns once each has been sent SIGKILL: a process with SIGKILL
    pending never runs code again, though it may take a moment to leave the cgroup."""
    try:
        write(path, "cgroup.kill", 1)  # cgroup v2: the kernel kills the whole subtree, forks in flight included
        return
    except FileNotFoundError:
        pass  # cgroup v1, or a cgroup already gone (then no process is listed below)
    # v1: a listed process may fork before its SIGKILL lands; the child is in the cgroup by the time fork
    # returns, so the next listing shows it. Once a listing holds only signalled processes, none is left.
    signalled: set[int] = set()
    while fresh := members(path) - signalled:
        for pid in fresh:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        signalled |= fresh


def remove(path: str) -> bool:
    """Remove cgroup `path` and those nested in it, deepest first; True once it is gone. A cgroup whose
    processes are still exiting cannot be removed yet; it is left for a later call."""
    for dirpath, _, _ in os.walk(path, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True
