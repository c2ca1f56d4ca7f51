"""The request object of a ``@rawhttp`` ``run()``: werkzeug's ``Request`` over the ASGI request.

werkzeug (the library Azure's Flask-based server parses with) does the parsing, so multipart
forms, files, query strings and JSON behave as they do there. The body is read (within the body
limit) before the request is built; parsing happens lazily, inside ``run()`` on the scoring
thread. Imported only when a script uses ``@rawhttp``.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from .aml_request import AMLRequest


def environ(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """A WSGI environ for the ASGI ``scope`` whose body is ``body`` (read in full already)."""
    server = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client")
    env: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = str(client[0]), str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_LENGTH" or name == "TRANSFER_ENCODING":
            continue  # the body is complete: its real length is set above
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        if key in env:  # repeated headers are one line, as a WSGI server gives them
            value = f"{env[key]}{'; ' if key == 'HTTP_COOKIE' else ','}{value}"
        env[key] = value
    return env


def make_request(scope: dict[str, Any], body: bytes) -> AMLRequest:
    return AMLRequest(environ(scope, body))
