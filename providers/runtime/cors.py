"""CORS as Azure's server offers it (``AML_CORS_ORIGINS`` / ``--access_control_allow_origins``).

Azure's server hands the comma-separated origins to flask-cors with methods GET and POST and
flask-cors' defaults; this reproduces the headers that produces, so browsers see the same
answers: the request's Origin echoed when it matches (``*`` and regex-like entries match as
patterns), every requested header allowed on a preflight, ``Vary: Origin`` unless the answer is
``*``. A response that already carries ``Access-Control-Allow-Origin`` (a raw ``run()`` answering
its own preflight) is left alone.
"""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

_METHODS = "GET, POST"
"""flask-cors' serialised ``methods`` option; it tests the preflight's method with ``in`` on it."""
_REGEX_CHARS = set("*\\]?$^[]()")
ALLOW_ORIGIN = b"access-control-allow-origin"


def _regex_like(pattern: str) -> bool:
    return any(c in _REGEX_CHARS for c in pattern)


def _matches(value: str, pattern: str) -> bool:
    if _regex_like(pattern):
        try:
            return re.match(pattern, value, flags=re.IGNORECASE) is not None
        except re.error:
            return False
    return value.casefold() == pattern.casefold()


def parse_origins(text: str | None) -> tuple[str, ...]:
    """``"a.com, b.com"`` -> ``("a.com", "b.com")``; empty or None -> no CORS."""
    return tuple(o.strip() for o in (text or "").split(",") if o.strip())


class Cors:
    """The CORS headers for one request, given the configured origins."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._origins = tuple(".*" if o == "*" else o for o in origins)
        self._wildcard = ".*" in self._origins
        self._vary = len(self._origins) > 1 or any(_regex_like(o) for o in self._origins)

    def headers(self, request_headers: Headers, method: str) -> Headers:
        found: dict[bytes, str] = {}
        for name, value in request_headers:
            if name in (b"origin", b"access-control-request-method", b"access-control-request-headers"):
                found.setdefault(name, value.decode("latin-1"))
        origin = found.get(b"origin")
        if origin:
            if not any(_matches(origin, pattern) for pattern in self._origins):
                return []
            allowed = origin
        elif self._wildcard:
            allowed = "*"
        else:
            plain = sorted(o for o in self._origins if not _regex_like(o))
            if not plain:
                return []
            allowed = plain[0]
        result: Headers = [(ALLOW_ORIGIN, allowed.encode("latin-1"))]
        wanted = found.get(b"access-control-request-method", "").upper()
        if method == "OPTIONS" and wanted and wanted in _METHODS:
            requested = [h.strip() for h in found.get(b"access-control-request-headers", "").split(",")]
            allow_headers = ", ".join(sorted(h for h in requested if h))
            if allow_headers:
                result.append((b"access-control-allow-headers", allow_headers.encode("latin-1")))
            result.append((b"access-control-allow-methods", _METHODS.encode()))
        if allowed != "*" and self._vary:
            result.append((b"vary", b"Origin"))
        return result
