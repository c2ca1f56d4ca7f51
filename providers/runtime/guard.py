"""Connection hardening uvicorn does not have: a header deadline, header limits, a connection cap.

uvicorn (httptools) waits for request headers forever, buffers headers of any size and number,
and keeps a connection that sent only blank lines: slowloris clients hold connections and
memory, and a bare ``\\r\\n\\r\\n`` hangs. ``GuardedHttpToolsProtocol`` adds, per connection:

* a **header deadline**: the request line and headers must arrive within ``header_timeout_s`` of
  the connection opening or the previous answer (checked by one sweep per worker, so give or
  take a quarter of it), or the connection is closed (``408`` first if part of a request came
  in); dripping bytes does not extend it;
* **header limits**: more than ``max_header_bytes`` before the end of the headers (counted as
  they arrive, and again as the parser hands over the request line and each header, so a whole
  request arriving in one read is measured too), or more than ``max_headers`` header lines,
  answers ``431`` and closes, so buffered headers stay bounded;
* **chunk framing**: a chunked body's framing (chunk-size lines with their extensions, and the
  trailers) may not exceed about ``max_header_bytes`` plus a few bytes per chunk, or the request
  answers ``400``: the parser skips extensions without buffering them, but a client could
  otherwise stream them for ever without a body byte ever counting against a limit;
* **blank requests**: a connection that sends only empty lines (``\\r\\n\\r\\n``) gets ``400`` at
  once instead of waiting (one stray CRLF between requests is still tolerated, as RFC 9112 asks);
* a **body deadline**: a request's body must arrive within ``body_timeout_s`` of its headers,
  or the connection is closed (``408`` when no answer started), so slow-body clients cannot
  hold connections and buffers either; a truncated body never reaches ``run()``;
* a **connection cap**, overall (``max_connections``) and per client address
  (``max_connections_per_client``): past either, a new connection takes the place of the oldest
  *silent* connection under that limit (one that has not sent a byte since it opened), which is
  answered ``503`` and closed; when there is none, the new connection itself is answered ``503``
  and closed. So connections that only sit there can never lock out a client that speaks, one
  address cannot take the whole worker, and the worker's memory stays bounded by about
  ``max_connections × max_header_bytes`` on top of the requests being served. Connections to the
  probe port (``private_port``) are exempt from the per-address cap: the deployer's checks come
  from the same address as a local client that may be holding its share.

Requests being served are never cut by these rules: the deadline applies only while no request
of the connection is in progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .clients import ClientTable
from .limits import Limits

log = logging.getLogger("mlops.runtime")


SWEEPS_PER_TIMEOUT = 4


def _sweep(loop: asyncio.AbstractEventLoop, state: Any, interval: float) -> None:
    """Close the connections whose header deadline passed, then look again in ``interval``."""
    now = loop.time()
    for connection in list(state.connections):
        deadline = getattr(connection, "_deadline", None)
        if deadline is not None and now >= deadline:
            connection._header_deadline()
        deadline = getattr(connection, "_body_deadline", None)
        if deadline is not None and now >= deadline:
            connection._body_deadline_passed()
    state._mlops_sweep = loop.call_later(interval, _sweep, loop, state, interval)


class _TooManyHeaders(Exception):
    """Raised from the parser callback; the parser wraps it and uvicorn answers through
    ``send_400_response``, which answers 431 instead."""


CHUNK_FRAMING_BYTES = 32
"""What one chunk's size line and CRLFs may take (``ffffffff\\r\\n`` … ``\\r\\n`` is 12), with room."""


def _answer(status: bytes, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"message": message}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n" + extra +
        b"x-ms-run-function-failed: False\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


REFUSAL_LOG_INTERVAL_S = 5.0
"""A flood refuses thousands of connections: one warning line per interval says how many."""


def _clients(state: Any) -> ClientTable:
    table = getattr(state, "_mlops_clients", None)
    if table is None:
        table = state._mlops_clients = ClientTable()
    return table


def _note_refusal(state: Any, now: float, why: str) -> None:
    refused = getattr(state, "_mlops_refused", 0) + 1
    if now - getattr(state, "_mlops_refusal_logged", float("-inf")) >= REFUSAL_LOG_INTERVAL_S:
        log.warning("connections refused or replaced: %d since the last report (latest: %s)", refused, why)
        state._mlops_refusal_logged = now
        refused = 0
    state._mlops_refused = refused


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``Limits`` (see the module docstring)."""

    limits = Limits()
    private_port: int | None = None
    """The probe listener's port: its connections (the deployer's readiness checks and smoke test,
    from the same address as local clients) are exempt from the per-address cap."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: float | None = None
        self._body_deadline: float | None = None
        self._awaiting_headers = True
        self._message_started = False
        self._header_bytes = 0
        self._rejected = b""
        self._reject_reason = ""
        self._header_size = 0
        self._chunked = False
        self._after_headers = 0
        self._body_bytes = 0
        self._chunks = 0
        self._trailer_size = 0
        self._silent = False
        self._address = self.client[0] if self.client else None
        if self._admit():
            self._silent = True
            _clients(self.server_state).add(self, self._address)
            self._arm()

    def _admit(self) -> bool:
        """Make room for this connection under both caps, or refuse it (see the module docstring)."""
        table, limits = _clients(self.server_state), self.limits
        private = self.server is not None and self.server[1] == self.private_port
        if not private and table.count(self._address) >= limits.max_connections_per_client:
            why = f"more than {limits.max_connections_per_client} connections from one address"
            if not self._replace(table.oldest_silent(self._address), why):
                return False
        return len(self.connections) <= limits.max_connections or self._replace(
            table.oldest_silent(), f"more than {limits.max_connections} connections")

    def _replace(self, victim: GuardedHttpToolsProtocol | None, why: str) -> bool:
        """Close ``victim`` (a silent connection) to make room; without one, refuse this connection."""
        _note_refusal(self.server_state, self.loop.time(), why)
        if victim is None:
            self._refuse(f"Too many connections ({why}); retry later")
            return False
        victim._refuse(f"Connection closed to make room for others ({why}) before a request was sent")
        return True

    def _refuse(self, message: str) -> None:
        """Answer 503 and close: a clear refusal, never a connection left hanging."""
        self._forget()
        self.connections.discard(self)  # closing: it no longer counts against the cap
        self._close_with(b"503 Service Unavailable", message, b"retry-after: 1\r\n")

    def _forget(self) -> None:
        self._silent = False
        _clients(self.server_state).remove(self, self._address)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_deadline = None
        self._forget()
        super().connection_lost(exc)

    # -- the header deadline ------------------------------------------------------------------
    # One sweep per worker checks every connection's deadline (a timer per request would cost
    # a few percent of throughput); a deadline is therefore enforced within SWEEPS_PER_TIMEOUT
    # fractions of it.

    def _arm(self) -> None:
        self._deadline = self.loop.time() + self.limits.header_timeout_s
        state = self.server_state
        if getattr(state, "_mlops_sweep", None) is None:
            interval = self.limits.header_timeout_s / SWEEPS_PER_TIMEOUT
            state._mlops_sweep = self.loop.call_later(interval, _sweep, self.loop, state, interval)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        self._deadline = None

    def _header_deadline(self) -> None:
        self._deadline = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy or not self._awaiting_headers or self.transport.is_closing():
            return  # a request is being served; the deadline restarts after its answer
        if self._header_bytes:
            self._close_with(b"408 Request Timeout", "Request headers not received in time")
        else:
            self.transport.close()

    def _body_deadline_passed(self) -> None:
        self._body_deadline = None
        if self.transport.is_closing():
            return
        log.warning("request body not received within %.0f s; connection closed", self.limits.body_timeout_s)
        if self.cycle is not None and not self.cycle.response_started:
            self._abandon_request()
            self._close_with(b"408 Request Timeout", "Request body not received in time")
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._awaiting_headers and not self.transport.is_closing():
            self._arm()

    # -- limits --------------------------------------------------------------------------------

    def _close_with(self, status: bytes, message: str, extra: bytes = b"") -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_answer(status, message, extra))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._silent:
            self._silent = False
            _clients(self.server_state).spoke(self, self._address)
        if self._rejected:
            return
        if not self._awaiting_headers:  # a body, or a request being answered
            if self._chunked:
                self._after_headers += len(data)
            super().data_received(data)
            if self._chunked:
                self._check_chunk_framing()
            return
        self._header_bytes += len(data)
        blank = not self._message_started and data[:1] in b"\r\n" and not data.strip(b"\r\n")
        if blank and self._header_bytes >= 4:
            self._close_with(b"400 Bad Request", "Empty request: only blank lines were received")
            return
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes and not self._rejected:
            self._reject_headers(self._too_large())
        elif self._chunked and not self._rejected:
            # The headers ended in this read: what follows them in it counts (with the headers,
            # which is why the framing allowance includes one more header limit).
            self._after_headers += len(data)
            self._check_chunk_framing()

    def _abandon_request(self) -> None:
        """We answer this request ourselves: the app sees a disconnect (its ``run()`` is never called),
        writes nothing more, and uvicorn does not add a 500 when the app returns without answering."""
        cycle = self.cycle
        cycle.response_complete = True
        cycle.disconnected = True
        cycle.message_event.set()

    def _too_large(self) -> str:
        return f"Request headers are larger than the limit of {self.limits.max_header_bytes} bytes"

    def _framing_too_large(self) -> str:
        return f"Chunk extensions or trailers are larger than the limit of {self.limits.max_header_bytes} bytes"

    def _check_chunk_framing(self) -> None:
        framing = self._after_headers - self._body_bytes
        if framing > 2 * self.limits.max_header_bytes + CHUNK_FRAMING_BYTES * self._chunks and not self._rejected:
            self._reject_framing()

    def _reject_framing(self) -> None:
        """One answer for oversized chunk framing, whichever check sees it first: a trailer that
        arrives in one read is caught by the parser's header callback, one split over reads by the
        byte count (a 200 KB trailer answered 431 or 400 depending on how the kernel cut it)."""
        log.warning("400: chunk extensions or trailers larger than %d bytes", self.limits.max_header_bytes)
        self._rejected = b"400"
        if self.cycle is not None and not self.cycle.response_started:
            self._abandon_request()
        self._close_with(b"400 Bad Request", self._framing_too_large())

    def _reject_headers(self, message: str) -> None:
        log.warning("431: %s", message)
        self._rejected = b"431"
        self._close_with(b"431 Request Header Fields Too Large", message)

    def send_400_response(self, msg: str) -> None:
        if self._rejected == b"trailer":  # the parser stopped on an oversized trailer
            self._reject_framing()
            return
        if self._rejected:  # the parser stopped on our limit: answer it, not a generic 400
            self._reject_headers(self._reject_reason)
            return
        self._disarm()
        super().send_400_response(msg)

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_started = True
        self._awaiting_headers = True
        self._header_size = 0
        self._chunked = False

    def _count_header_bytes(self, size: int) -> None:
        self._header_size += size
        if self._header_size > self.limits.max_header_bytes:
            self._rejected = b"pending"
            self._reject_reason = self._too_large()
            raise _TooManyHeaders()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url) + 16)  # the method, the version and the line's spaces and CRLF
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._awaiting_headers:  # a trailer: chunk framing, with the framing limit's answer
            self._trailer_size += len(name) + len(value) + 4
            if self._trailer_size > self.limits.max_header_bytes:
                self._rejected = b"trailer"
                raise _TooManyHeaders()
        else:
            self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        if len(self.headers) > self.limits.max_headers:  # counted here: the byte limit bounds memory
            self._rejected = b"pending"
            self._reject_reason = f"More than {self.limits.max_headers} request headers"
            raise _TooManyHeaders()
        for name, _value in self.headers:
            if name == b"transfer-encoding":
                self._chunked = True
                self._after_headers = self._body_bytes = self._chunks = self._trailer_size = 0
        self._body_deadline = self.loop.time() + self.limits.body_timeout_s
        super().on_headers_complete()
        if getattr(self, "draining", False) and self.cycle is not None:
            self.cycle.keep_alive = False   # shutting down: answer, then close (the client reconnects)

    def on_message_complete(self) -> None:
        self._body_deadline = None
        super().on_message_complete()
        self._awaiting_headers = True
        self._message_started = False
        self._header_bytes = 0


def protocol_class(limits: Limits, private_port: int | None = None) -> type[Any]:
    """A protocol class bound to ``limits`` (uvicorn instantiates the class it is given)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"limits": limits, "private_port": private_port})
