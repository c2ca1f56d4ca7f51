"""The status page's HTTP server: stdlib only, read-only (GET), loopback unless a token guards it.

Routes: ``/`` the page (package data, no build step), ``/api/state`` header and rows,
``/api/service/NAME`` one service's plan diff, live object and log tail, ``/api/graph.svg``.
With a token every route wants ``?token=`` or ``Authorization: Bearer``; the page passes on
the token it was opened with.
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .data import Snapshots, service_detail

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def page() -> bytes:
    return resources.files("planner.ui").joinpath("static/index.html").read_bytes()


class StatusServer:
    def __init__(self, snapshots: Snapshots, *, host: str = "127.0.0.1", port: int = 8088, token: str | None = None):
        if host not in LOOPBACK and not token:
            raise ValueError("a token is required when the page is bound beyond loopback (--token or MLOPS_UI_TOKEN)")
        html = page()
        expected = (token or "").encode()

        class Handler(BaseHTTPRequestHandler):
            server_version = "mlops-ui"
            sys_version = ""

            def do_GET(self) -> None:   # noqa: N802 (the stdlib's name)
                url = urlsplit(self.path)
                if expected and not self._authorized(url.query):
                    self._send(401, b"a token is required: open the URL mlops ui printed\n", "text/plain")
                    return
                path = url.path
                if path in ("/", "/index.html"):
                    self._send(200, html, "text/html; charset=utf-8")
                elif path == "/api/state":
                    self._json(snapshots.get().state)
                elif path == "/api/graph.svg":
                    self._send(200, snapshots.get().svg.encode(), "image/svg+xml")
                elif path.startswith("/api/service/"):
                    snap = snapshots.get()
                    if snap.seen is None:
                        self._json({"error": snap.state.get("error", "no observation")}, 503)
                        return
                    try:
                        self._json(service_detail(snap.seen, unquote(path.removeprefix("/api/service/"))))
                    except KeyError:
                        self._json({"error": "no such service"}, 404)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _authorized(self, query: str) -> bool:
                given = (parse_qs(query).get("token") or [""])[0]
                header = self.headers.get("Authorization", "")
                if header.startswith("Bearer "):
                    given = header[7:]
                return hmac.compare_digest(given.encode(), expected)

            def _json(self, value: Any, status: int = 200) -> None:
                self._send(status, json.dumps(value, sort_keys=True).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy",
                                 "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 "script-src 'self' 'unsafe-inline'; connect-src 'self'")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()
