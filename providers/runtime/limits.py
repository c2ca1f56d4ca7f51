"""Per-connection limits of the HTTP server (enforced by ``guard``); plain data, no server import."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HEADER_TIMEOUT_MS = 10_000
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 256
DEFAULT_BODY_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Limits:
    """What one connection may hold before the server gives up on it."""

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_MS / 1000
    """Time for the request line and headers, from connection open or the previous answer."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Request line plus headers; 431 past it."""
    max_headers: int = DEFAULT_MAX_HEADERS
    """Header lines per request; 431 past it."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections per worker; past it a new one takes the place of the oldest silent one (see
    ``guard``), or is answered 503 and closed when every open connection has sent something."""
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    """Open connections per worker from one client address; the same rule within that address."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_MS / 1000
    """Time for a request's body once its headers arrived (slow-body clients are closed, 408)."""
