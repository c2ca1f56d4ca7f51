"""IoT Hub's service REST API through azure-core's pipeline, authenticated with SAS tokens.

Why not ``azure-iot-hub``: it hard-depends on the unmaintained ``uamqp`` C extension (no wheels
for newer Pythons) and fails to import without the undeclared ``six``; the few REST calls we need
(configurations, twin queries and tags, module twins, direct methods) are small and documented, and
azure-core (already here for the ACI SDK) gives us a maintained HTTP pipeline.

Every call goes through ``planner.retrying``: 429, 408, 5xx and dropped connections are retried
with backoff, honouring Retry-After; everything else is one clear error. Nothing here prints or
raises the connection string or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.errors import ProviderError
from planner.retrying import PermanentError, TransientError, call_with_retries, is_transient_status, retry_after

from .. import sdk

API_VERSION = "2021-04-12"
CA_BUNDLE_ENV = "IOTHUB_CA_BUNDLE"
"""A CA bundle to trust for the hub (a TLS-inspecting proxy, the test double); unset: the system's."""
TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class ConnectionString:
    """``HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`` of a hub-level shared access policy."""

    host: str
    policy: str
    key: str = field(repr=False)

    @classmethod
    def parse(cls, text: str, setting: str) -> ConnectionString:
        parts: dict[str, str] = {}
        for item in (text or "").split(";"):
            if "=" in item:
                name, value = item.split("=", 1)
                parts[name.strip()] = value.strip()
        missing = [n for n in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not parts.get(n)]
        if missing:
            raise ProviderError(f"{setting}: not an IoT Hub connection string (missing {', '.join(missing)}); use "
                                "the hub's shared access policy connection string (e.g. iothubowner)")
        if parts.get("DeviceId"):
            raise ProviderError(f"{setting}: this is a device connection string; use the hub's shared access policy "
                                "connection string (registry read/write and service connect rights)")
        try:
            base64.b64decode(parts["SharedAccessKey"], validate=True)
        except ValueError:
            raise ProviderError(f"{setting}: SharedAccessKey is not base64") from None
        return cls(parts["HostName"], parts["SharedAccessKeyName"], parts["SharedAccessKey"])


def sas_token(host: str, policy: str, key: str, expiry: int) -> str:
    """The token IoT Hub expects: HMAC-SHA256 over ``<url-encoded resource>\\n<expiry>`` with the policy key."""
    resource = urllib.parse.quote(host.lower(), safe="")
    signed = hmac.new(base64.b64decode(key), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(signed).decode(), safe="")
    return f"SharedAccessSignature sr={resource}&sig={sig}&se={expiry}&skn={urllib.parse.quote(policy, safe='')}"


class _SasPolicy:
    """An azure-core policy that signs every request, renewing the token before it expires."""

    def __init__(self, conn: ConnectionString):
        self._conn = conn
        self._lock = threading.Lock()
        self._token = ""
        self._expiry = 0

    def _current(self) -> str:
        with self._lock:
            now = int(time.time())
            if now > self._expiry - 300:
                self._expiry = now + TOKEN_TTL_S
                self._token = sas_token(self._conn.host, self._conn.policy, self._conn.key, self._expiry)
            return self._token

    def on_request(self, request: Any) -> None:
        request.http_request.headers["Authorization"] = self._current()

    def on_response(self, request: Any, response: Any) -> None:
        return None

    def on_exception(self, request: Any) -> None:
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class HubClient:
    """The IoT Hub calls this provider makes; ``what`` names the hub in errors, never the secret."""

    def __init__(self, conn: ConnectionString, *, what: str, cancel: threading.Event | None = None):
        sdk.load("requests", "azure.core", "azure.core.pipeline.transport")
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import SansIOHTTPPolicy, UserAgentPolicy
        from azure.core.pipeline.transport import RequestsTransport

        class Sas(_SasPolicy, SansIOHTTPPolicy):
            pass

        self.conn = conn
        self.what = what
        self.cancel = cancel
        verify: Any = os.environ.get(CA_BUNDLE_ENV) or True
        transport = RequestsTransport(connection_verify=verify, connection_timeout=10, read_timeout=60)
        self._client = PipelineClient(f"https://{conn.host}", policies=[UserAgentPolicy("mlops-iotedge"), Sas(conn)],
                                      transport=transport)

    def close(self) -> None:
        self._client.close()

    # -- one request ------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None, headers: Mapping[str, str] | None = None,
                ok: tuple[int, ...] = (200,), params: Mapping[str, str] | None = None, attempts: int = 5) -> Reply:
        """One call, retried on transient failures; a status outside ``ok`` is a ProviderError."""
        from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        query = {"api-version": API_VERSION, **(params or {})}
        url = self._client.format_url(f"{path}?{urllib.parse.urlencode(query)}")

        def once() -> Reply:
            req = HttpRequest(method, url, json=body, headers={"Accept": "application/json", **(headers or {})})
            try:
                resp = self._client.send_request(req)
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TransientError(f"{method} {path}: {_short(exc)}") from None
            except AzureError as exc:
                raise PermanentError(f"{method} {path}: {_short(exc)}") from None
            data: Any = None
            text = resp.text() if resp.content else ""
            if text:
                try:
                    data = resp.json()
                except ValueError:
                    data = text
            if is_transient_status(resp.status_code):
                raise TransientError(f"{method} {path} answered {resp.status_code}{_why(data)}",
                                     retry_after(resp.headers))
            return Reply(resp.status_code, data, dict(resp.headers))

        try:
            reply = call_with_retries(once, what=f"{self.what}: {method} {path}", attempts=attempts, cancel=self.cancel)
        except (TransientError, PermanentError) as exc:
            raise ProviderError(str(exc)) from None
        if reply.status in (401, 403):
            raise ProviderError(f"{self.what}: the hub refused the credentials ({reply.status}{_why(reply.body)}); "
                                "check the hub connection string's policy and rights (registry read/write, "
                                "service connect)")
        if reply.status not in ok:
            raise ProviderError(f"{self.what}: {method} {path} answered {reply.status}{_why(reply.body)}")
        return reply

    # -- configurations (IoT Edge deployments) -------------------------------------------------------
    def list_configurations(self, top: int = 1000) -> list[dict[str, Any]]:
        return list(self.request("GET", "/configurations", params={"top": str(top)}).body or [])

    def get_configuration(self, config_id: str) -> dict[str, Any] | None:
        reply = self.request("GET", f"/configurations/{_q(config_id)}", ok=(200, 404))
        return reply.body if reply.status == 200 else None

    def create_configuration(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT without If-Match: create only (an existing id answers 409)."""
        return self.request("PUT", f"/configurations/{_q(body['id'])}", body=dict(body), ok=(200, 201)).body

    def update_configuration(self, body: Mapping[str, Any], etag: str) -> dict[str, Any]:
        """PUT with If-Match: only target condition, priority, labels and metrics may differ."""
        return self.request("PUT", f"/configurations/{_q(body['id'])}", body=dict(body),
                            headers={"If-Match": _quoted(etag)}).body

    def try_update_configuration(self, body: Mapping[str, Any], etag: str) -> dict[str, Any] | None:
        """``update_configuration``, but None when the etag is stale (412: someone changed it meanwhile)."""
        reply = self.request("PUT", f"/configurations/{_q(body['id'])}", body=dict(body),
                             headers={"If-Match": _quoted(etag)}, ok=(200, 412))
        return reply.body if reply.status == 200 else None

    def delete_configuration(self, config_id: str, etag: str | None = None) -> bool:
        """Delete (If-Match: the etag, or ``*``); False when it was gone already."""
        reply = self.request("DELETE", f"/configurations/{_q(config_id)}", ok=(200, 204, 404),
                             headers={"If-Match": _quoted(etag) if etag else "*"})
        return reply.status != 404

    def test_condition(self, condition: str) -> str | None:
        """The hub's own parse of a target condition: None when valid, else its message."""
        body = self.request("POST", "/configurations/testQueries",
                            body={"targetCondition": condition, "customMetricQueries": {}}).body or {}
        return body.get("targetConditionError") or None

    # -- devices --------------------------------------------------------------------------------------
    def query_devices(self, condition: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Device twins matching a target condition (``*``: all), following continuation tokens."""
        return self.query("SELECT * FROM devices" + ("" if condition.strip() == "*" else f" WHERE {condition}"), limit)

    def agent_twins(self, devices: list[str]) -> dict[str, dict[str, Any]]:
        """The ``$edgeAgent`` module twins of these devices: one query per 100 devices, not one GET each."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(devices), 100):
            ids = ", ".join("'" + d.replace("'", "''") + "'" for d in devices[start:start + 100])
            found = self.query(f"SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent' AND deviceId IN [{ids}]")
            out.update({str(t.get("deviceId")): t for t in found})
        return out

    def query(self, query: str, limit: int = 1000) -> list[dict[str, Any]]:
        """An IoT Hub query, following continuation tokens up to ``limit`` results."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while len(out) < limit:
            headers = {"x-ms-max-item-count": "100", **({"x-ms-continuation": token} if token else {})}
            reply = self.request("POST", "/devices/query", body={"query": query}, headers=headers)
            out += list(reply.body or [])
            token = next((v for k, v in reply.headers.items() if k.lower() == "x-ms-continuation"), None)
            if not token:
                break
        return out[:limit]

    def update_twin_tags(self, device: str, tags: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``tags`` into a device twin's tags (PATCH: nested objects merge, a null removes a key)."""
        return self.request("PATCH", f"/twins/{_q(device)}", body={"tags": dict(tags)},
                            headers={"If-Match": "*"}).body

    def module_twin(self, device: str, module: str) -> dict[str, Any] | None:
        reply = self.request("GET", f"/twins/{_q(device)}/modules/{_q(module)}", ok=(200, 404))
        return reply.body if reply.status == 200 else None

    def invoke_module_method(self, device: str, module: str, method: str, payload: Any,
                             timeout_s: int = 30) -> tuple[int, Any]:
        """A direct method on a module (the agent's GetModuleLogs); (status, payload) as the module answered."""
        body = {"methodName": method, "payload": payload, "responseTimeoutInSeconds": timeout_s,
                "connectTimeoutInSeconds": 10}
        reply = self.request("POST", f"/twins/{_q(device)}/modules/{_q(module)}/methods", body=body,
                             ok=(200, 404))
        if reply.status == 404:
            raise ProviderError(f"{self.what}: device {device!r} is offline or has no module {module!r} "
                                f"({_why(reply.body).lstrip(': ') or 'not found'})")
        data = reply.body or {}
        return int(data.get("status", 0)), data.get("payload")


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="$")


def _quoted(etag: str) -> str:
    return etag if etag == "*" or etag.startswith('"') else f'"{etag}"'


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _why(body: Any) -> str:
    """The hub's own message, short: ``: <Message>`` or ""."""
    if isinstance(body, Mapping):
        msg = body.get("Message") or body.get("message") or body.get("ExceptionMessage") or ""
        return f": {str(msg).splitlines()[0][:200]}" if msg else ""
    if isinstance(body, str) and body.strip():
        return f": {body.strip().splitlines()[0][:200]}"
    return ""
