"""One cell of a sandbox session, run inside the session process: compiled (with the last expression
echoed, as a notebook does), executed with its output bounded, and its output read back from the session's
fd-output file, which keeps what a killed cell printed."""

from __future__ import annotations

import ast
import io
import os
import sys
import time
import traceback
from types import CodeType
from typing import Any, cast

FD_OUTPUT = ".fd-output"  # a session's file descriptors 1 and 2, drained after each cell


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


def run_cell(code: str, env: dict[str, Any], cfg: dict[str, Any], fd_out: str) -> dict[str, Any]:
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
