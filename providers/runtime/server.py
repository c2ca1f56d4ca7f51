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
        """uvicorn's graceful shutdown, after a short drain of just-accepted connections."""
        self.stop_accepting()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(DRAIN_S)
        await super().shutdown(sockets=None)

    def stop_accepting(self) -> None:
        """Close every listener now (the graceful shutdown that follows finds them closed)."""
        for listener in getattr(self, "servers", []):
            listener.close()


DRAIN_S = 0.25
"""After the listeners close, how long connections accepted a moment ago get to deliver their
request before uvicorn closes the ones it sees idle (an idle close under a request on its way
would reset it)."""


def _http(limits: Limits | None) -> tuple[Any, dict[str, Any]]:
    """Our guarded httptools protocol; uvicorn's h11 (header size bounded, no deadline) without it."""
    limits = limits or Limits()
    try:
        from .guard import protocol_class
    except ImportError:  # httptools missing (it is a requirement; a broken environment)
        return "h11", {"h11_max_incomplete_event_size": limits.max_header_bytes}
    return protocol_class(limits), {}


def make_server(app: Any, graceful_timeout_s: float, limits: Limits | None = None) -> Server:
    http, extra = _http(limits)
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
