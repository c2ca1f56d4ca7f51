"""The glue to uvicorn, the HTTP server: kept in one module so the rest never imports it.

Imported only inside worker processes (``import mlops_runtime`` must stay light). uvicorn runs
our raw ASGI app with its fastest pieces when installed (httptools parser, uvloop loop) and
does the graceful part of SIGTERM: stop accepting, let in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from .limits import Limits


class Server(uvicorn.Server):
    """uvicorn's server, plus a listener that can be added once the worker is ready."""

    async def add_listener(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` too (the public port, joined only after ``init()``).

        Builds the protocol exactly as ``uvicorn.Server.startup`` does for its own sockets.
        """
        if self.should_exit:
            return
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        listener = await asyncio.get_running_loop().create_server(create_protocol, sock=sock, backlog=config.backlog)
        self.servers.append(listener)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown, after a drain that never closes a connection under a request.

        Closing an idle keep-alive connection races with the client's next request on it (the
        request is lost to a reset or an EOF). So, first, every connection is told to answer its
        next request with ``Connection: close``; busy clients get that answer and reconnect —
        to the instance that now accepts on the shared listener — and only connections idle for
        the whole drain are closed under uvicorn's own shutdown.
        """
        self.stop_accepting()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.draining = True
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        await asyncio.sleep(MIN_DRAIN_S)
        while self.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await super().shutdown(sockets=None)

    def stop_accepting(self) -> None:
        """Close every listener now (the graceful shutdown that follows finds them closed)."""
        for listener in getattr(self, "servers", []):
            listener.close()


DRAIN_S = 2.0
"""After the listeners close, how long open connections get to send one more request (answered
with ``Connection: close``) before uvicorn closes the ones still idle."""
MIN_DRAIN_S = 0.25
"""Connections accepted a moment ago get at least this long to deliver their first request."""


def _http(limits: Limits | None, private_port: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Our guarded httptools protocol; uvicorn's h11 (header size bounded, no deadline) without it."""
    limits = limits or Limits()
    try:
        from .guard import protocol_class
    except ImportError:  # httptools missing (it is a requirement; a broken environment)
        return "h11", {"h11_max_incomplete_event_size": limits.max_header_bytes}
    return protocol_class(limits, private_port), {}


def make_server(app: Any, graceful_timeout_s: float, limits: Limits | None = None,
                private_port: int | None = None) -> Server:
    """``private_port``: the probe listener, whose clients (the deployer) no per-address cap refuses."""
    http, extra = _http(limits, private_port)
    config = uvicorn.Config(
        app,
        http=http,
        loop="auto",  # uvloop when installed
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(graceful_timeout_s),
        **extra,
    )
    return Server(config)
