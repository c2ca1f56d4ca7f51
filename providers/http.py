"""A tiny HTTP client every target shares: readiness probes, smoke tests and `mlops call` (127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self):
        return json.loads(self.body)


def request(url: str, *, data: bytes | None = None, headers: Mapping[str, str] | None = None,
            timeout: float = 5.0) -> Reply:
    """One request; HTTP error statuses are returned, connection errors raise OSError."""
    import urllib.error  # here, not at the top: validate and plan load providers but never call
    import urllib.request

    req = urllib.request.Request(url, data=data, headers=dict(headers or {}),
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read(), dict(err.headers or {}))
    except urllib.error.URLError as err:
        raise OSError(str(err.reason)) from None


def is_ready(base_url: str, timeout: float = 1.0) -> bool:
    try:
        return request(f"{base_url}/ready", timeout=timeout).status == 200
    except OSError:
        return False


def smoke_test(scoring_url: str, sample: str, headers: Mapping[str, str]) -> str | None:
    """Send the sample request; None when it answers 200 with JSON, else what went wrong."""
    try:
        reply = request(scoring_url, data=sample.encode(),
                        headers={**headers, "Content-Type": "application/json"}, timeout=60)
    except OSError as exc:
        return f"sample request could not be sent: {exc}"
    if reply.status != 200:
        return f"sample request answered {reply.status}: {reply.body[:200].decode(errors='replace')}"
    try:
        reply.json()
    except ValueError:
        return "sample request answered 200 but not with JSON"
    return None
