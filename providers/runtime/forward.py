"""A small HTTP/1.1 client to the candidate's private port: keep-alive connections, asyncio streams.

Used by the stable version's workers to have the candidate answer a share of the requests (the
client gets the candidate's status, headers and body unchanged) and to mirror copies to it.
Standard library only: the runtime is copied verbatim into every image. The candidate is our own
runtime, which always answers with a ``content-length``; chunked and close-delimited bodies are
read too.
"""

from __future__ import annotations

import asyncio
import contextlib

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"date", b"server",
                        b"expect"})
"""Headers that describe one connection (or that the server adds itself): never passed through.
``expect: 100-continue`` was answered by the stable version already; the body is sent whole."""
MAX_IDLE = 16
"""Idle keep-alive connections kept per worker."""
MAX_HEAD_BYTES = 64 * 1024


class ForwardFailed(Exception):
    """The candidate gave no complete answer (refused, reset, closed, timed out)."""


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: the candidate closed it while it
    was idle (its keep-alive timeout); the request is sent again on a fresh one."""


class Upstream:
    """Requests to one ``host:port``, over a pool of keep-alive connections (one worker's)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, target: bytes, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        """One exchange; raises ForwardFailed. ``target`` is the path and query as the client sent them."""
        head = _head(method, target, headers, body, self.host, self.port)
        try:
            return await asyncio.wait_for(self._exchange(head, body, method), self.timeout_s)
        except TimeoutError:
            raise ForwardFailed(f"no answer within {self.timeout_s:g}s") from None

    async def _exchange(self, head: bytes, body: bytes, method: str) -> tuple[int, Headers, bytes]:
        while self._idle:
            reader, writer = self._idle.pop()
            try:
                return await self._once(reader, writer, head, body, method, reused=True)
            except _Stale:
                continue
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ForwardFailed(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        try:
            return await self._once(reader, writer, head, body, method, reused=False)
        except _Stale:
            raise ForwardFailed("the connection closed before an answer") from None

    async def _once(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes,
                    method: str, *, reused: bool) -> tuple[int, Headers, bytes]:
        keep = False
        started = False
        try:
            writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                writer.write(body)
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise _Stale() if reused else ForwardFailed("the connection closed before an answer")
            started = True
            status, headers, length, chunked, close = await _read_head(reader, line)
            while 100 <= status < 200:   # an interim answer: the real one follows
                line = await reader.readline()
                status, headers, length, chunked, close = await _read_head(reader, line)
            if method == "HEAD" or status in (204, 304):
                data = b""
            elif chunked:
                data = await _read_chunked(reader)
            elif length is not None:
                data = await reader.readexactly(length)
            else:
                data, close = await reader.read(), True
            keep = not close
            return status, headers, data
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError) as exc:
            if reused and not started:
                raise _Stale() from None
            raise ForwardFailed(f"the candidate's answer broke off: {exc}") from None
        finally:
            if keep and len(self._idle) < MAX_IDLE:
                self._idle.append((reader, writer))
            else:
                writer.close()

    def close(self) -> None:
        for _reader, writer in self._idle:
            with contextlib.suppress(Exception):
                writer.close()
        self._idle.clear()


def _head(method: str, target: bytes, headers: Headers, body: bytes, host: str, port: int) -> bytes:
    lines = [method.encode("latin-1") + b" " + target + b" HTTP/1.1"]
    has_host = False
    for name, value in headers:
        if name in HOP_BY_HOP:
            continue
        has_host = has_host or name == b"host"
        lines.append(name + b": " + value)
    if not has_host:
        lines.append(f"host: {host}:{port}".encode())
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_head(reader: asyncio.StreamReader, line: bytes) -> tuple[int, Headers, int | None, bool, bool]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
    status = int(parts[1])
    close = parts[0] == b"HTTP/1.0"
    headers: Headers = []
    length: int | None = None
    chunked = False
    size = len(line)
    while True:
        raw = await reader.readline()
        size += len(raw)
        if size > MAX_HEAD_BYTES:
            raise ValueError("the answer's headers are too large")
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = close or b"close" in value.lower()
        if name not in HOP_BY_HOP:
            headers.append((name, value))
    return status, headers, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
