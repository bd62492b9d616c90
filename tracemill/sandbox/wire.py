"""Length-prefixed JSON messages over a Unix socket, with optional file descriptors (SCM_RIGHTS)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024


def send(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    payload = json.dumps(obj).encode()
    data = _HEADER.pack(len(payload)) + payload
    if fds:
        socket.send_fds(sock, [data[:1]], fds)
        data = data[1:]
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, with_fds: bool = False) -> tuple[Any, list[int]]:
    fds: list[int] = []
    if with_fds:
        first, fds, _, _ = socket.recv_fds(sock, 1, 4)
        if not first:
            raise EOFError("peer closed the connection")
        head = first + _recv_exact(sock, _HEADER.size - 1)
    else:
        head = _recv_exact(sock, _HEADER.size)
    (length,) = _HEADER.unpack(head)
    if length > MAX_MESSAGE:
        raise EOFError("message too large")
    return json.loads(_recv_exact(sock, length)), fds
