"""The parts of an HTTP request the routes look at, read from the ASGI headers in one pass,
and Azure's request-id rules (echo or generate ``x-request-id``; longer than 100 characters: 431).
"""

from __future__ import annotations

import uuid
from typing import Any

Headers = list[tuple[bytes, bytes]]

HEADER_LIMIT = 100
"""Longest request id accepted (Azure's limit; longer ones answer 431)."""


PROXIED_AUTHORIZATION = b"x-mlops-authorization"
"""The key as ``Bearer <key>`` when Authorization cannot carry it: a Kubernetes API server removes the
Authorization header of every request it authenticated before proxying it to a Service."""


class Request:
    """The parts of an ASGI request the routes look at, read from the headers in one pass."""

    __slots__ = (
        "method",
        "path",
        "query",
        "content_type",
        "content_length",
        "authorization",
        "request_id",
        "client_request_id",
        "legacy_request_id",
        "trace_id",
        "headers",
        "scope",
        "routed",
    )

    def __init__(self, scope: dict[str, Any]) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.headers: Headers = scope["headers"]
        self.scope = scope
        self.routed = False
        """A known route and method: the answer gets CORS and server-version headers, as the
        route handlers of Azure's server add them (its routing errors get neither)."""
        self.content_type: str | None = None
        self.content_length: int | None = None
        self.authorization: bytes | None = None
        self.request_id: str = ""
        self.client_request_id = ""
        self.legacy_request_id = ""
        self.trace_id: bytes | None = None
        proxied: bytes | None = None
        for name, value in self.headers:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == b"authorization":
                self.authorization = value
            elif name == b"x-request-id":
                self.request_id = value.decode("latin-1")
            elif name == b"x-ms-client-request-id":
                self.client_request_id = value.decode("latin-1")
            elif name == b"x-ms-request-id":
                self.legacy_request_id = value.decode("latin-1")
            elif name == b"traceid":
                self.trace_id = value
            elif name == PROXIED_AUTHORIZATION:
                proxied = value
        if self.authorization is None:   # through the Kubernetes API server's proxy (it drops Authorization)
            self.authorization = proxied

    def id_problem(self) -> str | None:
        """Azure's request-id rules: echo or generate ``x-request-id``; too long -> 431."""
        if len(self.request_id) > HEADER_LIMIT:
            self.request_id = ""
            return f"x-request-id must not exceed {HEADER_LIMIT} characters"
        if not self.request_id:
            self.request_id = str(uuid.uuid4())
        if self.legacy_request_id:
            self.client_request_id = self.client_request_id or self.legacy_request_id
        else:
            self.legacy_request_id = self.client_request_id or self.request_id
        if max(len(self.client_request_id), len(self.legacy_request_id)) > HEADER_LIMIT:
            self.client_request_id = self.legacy_request_id = ""
            return f"x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} characters"
        return None

    def id_headers(self) -> Headers:
        headers: Headers = []
        if self.request_id:
            headers.append((b"x-request-id", self.request_id.encode("latin-1")))
        if self.legacy_request_id:
            headers.append((b"x-ms-request-id", self.legacy_request_id.encode("latin-1")))
        if self.client_request_id:
            headers.append((b"x-ms-client-request-id", self.client_request_id.encode("latin-1")))
        if self.trace_id is not None:
            headers.append((b"traceid", self.trace_id))
        return headers

    def headers_for_run(self, drop_authorization: bool) -> dict[str, str]:
        """Headers as ``run(request_headers=…)`` gets them from Azure (Title-Case names, repeats
        joined by commas). The Authorization header is dropped when it carries our key."""
        result: dict[str, str] = {}
        for name, value in self.headers:
            if drop_authorization and name in (b"authorization", PROXIED_AUTHORIZATION):
                continue
            key = name.decode("latin-1").title()
            text = value.decode("latin-1")
            result[key] = f"{result[key]},{text}" if key in result else text
        return result
