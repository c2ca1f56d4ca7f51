"""The Kubernetes API as this provider uses it: the real ``kubernetes`` client, answers as plain dicts.

Every call goes through the typed client (``AppsV1Api.patch_namespaced_deployment``…) with
``_preload_content=False``, so answers are the server's JSON, never re-modelled. Writes are
server-side apply: one field manager (``mlops``), ``force=True``, content type
``application/apply-patch+yaml`` (the typed client otherwise sends a strategic-merge patch).
Transient answers (429, 5xx, connection resets) are retried with backoff, honouring Retry-After.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported with the module (in the thread that loads the provider), not lazily in connect():
# targets connect in parallel with other kinds' reads, and two threads importing `requests` at
# once can see it half-initialised.
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, SSLError

from planner.errors import CancelledError, ProviderError, Unreachable
from planner.retrying import PermanentError, TransientError, call_with_retries, is_transient_status, retry_after

FIELD_MANAGER = "mlops"
APPLY = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Kind:
    api: str            # attribute of Cluster holding the typed API
    snake: str          # the typed client's method suffix
    namespaced: bool = True
    custom: tuple[str, str, str] | None = None
    """(group, version, plural) of a kind a CRD adds: reached through CustomObjectsApi."""


KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps", "deployment"),
    "ReplicaSet": Kind("apps", "replica_set"),
    "Pod": Kind("core", "pod"),
    "Service": Kind("core", "service"),
    "Secret": Kind("core", "secret"),
    "Event": Kind("core", "event"),
    "HorizontalPodAutoscaler": Kind("autoscaling", "horizontal_pod_autoscaler"),
    "Lease": Kind("coordination", "lease"),
    "Namespace": Kind("core", "namespace", namespaced=False),
    "Node": Kind("core", "node", namespaced=False),
    "HTTPRoute": Kind("custom", "custom_object", custom=("gateway.networking.k8s.io", "v1", "httproutes")),
}


class NotFound(ProviderError):
    """The object does not exist (404)."""


class Forbidden(ProviderError):
    """The credentials may not do this (403): RBAC scoped to a namespace, for instance."""


class Conflict(ProviderError):
    """The server refused a write because of a conflict (409): another field manager, a precondition."""


def kubeconfig_path(setting: str | None) -> Path:
    """The target's ``kubeconfig``, else ``$KUBECONFIG`` (its first entry), else ``~/.kube/config``."""
    if setting:
        return Path(os.path.expanduser(setting))
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(os.path.expanduser(env.split(os.pathsep)[0]))
    return Path.home() / ".kube" / "config"


class Cluster:
    """One cluster (kubeconfig + context), with the typed APIs this provider needs."""

    def __init__(self, kubeconfig: str | None, context: str | None, *, cancel: Any = None):
        path = kubeconfig_path(kubeconfig)
        where = f"kubeconfig {path}" + (f", context {context!r}" if context else "")
        if not path.is_file():
            raise Unreachable(f"no {where}: set the target's kubeconfig or KUBECONFIG "
                              "(for AKS: az aks get-credentials --resource-group RG --name CLUSTER)")
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=str(path), context=context, client_configuration=configuration,
                                    persist_config=False)
        except Exception as exc:   # ConfigException, YAML errors, missing cert files: one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unreachable(f"cannot load {where}: {first}") from None
        configuration.retries = 0   # retries are ours (backoff, Retry-After), not urllib3's
        self.where = where
        self.host = configuration.host
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.version = client.VersionApi(self.api_client)
        self.cancel = cancel
        self.requests = 0

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any], *, attempts: int = 5) -> Any:
        """One API call: retried when transient; 404 -> NotFound, 409 -> Conflict, else one line."""
        def once() -> Any:
            self.requests += 1
            try:
                return fn()
            except ApiException as exc:
                status = int(exc.status or 0)
                message = _message(exc.body) or exc.reason or str(status)
                if status == 404:
                    raise NotFound(f"{what}: not found ({message})") from None
                if status == 409:
                    raise Conflict(f"{what}: {message}") from None
                if is_transient_status(status):
                    raise TransientError(f"HTTP {status}: {message}", retry_after(exc.headers or {})) from None
                if status == 403:
                    raise Forbidden(f"{what}: the credentials of {self.where} may not do this "
                                    f"(HTTP 403: {message}){_namespace_hint(message)}") from None
                if status == 401:   # the server says only "Unauthorized", for expired and revoked alike
                    raise ProviderError(f"{what}: the API server refused the credentials of {self.where} "
                                        f"(HTTP {status}: {message}): the token or certificate is expired, "
                                        "revoked or not this cluster's; get fresh credentials") from None
                raise ProviderError(f"{what}: HTTP {status}: {message}") from None
            except (HTTPError, OSError) as exc:
                reason = getattr(exc, "reason", None)
                if isinstance(exc, SSLError) or isinstance(reason, SSLError):
                    raise ProviderError(f"{what}: the TLS certificate of {self.host} is not trusted "
                                        f"({_short(reason or exc)}); check certificate-authority in {self.where}"
                                        ) from None
                raise TransientError(f"{type(exc).__name__}: {_short(reason or exc)}") from None

        try:
            return call_with_retries(once, what=what, attempts=attempts, cancel=self.cancel)
        except PermanentError as exc:   # after the retries: say where
            raise ProviderError(f"{exc} ({self.where}, {self.host})") from None
        except (ProviderError, CancelledError):
            raise
        except Exception as exc:
            raise ProviderError(f"{exc} ({self.where}, {self.host})") from None

    def _method(self, verb: str, kind: str) -> tuple[Callable[..., Any], bool]:
        k = KINDS[kind]
        api = getattr(self, k.api)
        if k.custom is not None:   # CustomObjectsApi says get where the typed APIs say read
            verb = {"read": "get"}.get(verb, verb)
        name = f"{verb}_namespaced_{k.snake}" if k.namespaced else f"{verb}_{k.snake}"
        fn = getattr(api, name)
        if k.custom is not None:   # the same verbs, with the CRD's group, version and plural first
            group, version, plural = k.custom
            return (lambda *args, **kw: fn(group, version, args[-1], plural, *args[:-1], **kw)
                    if verb != "list" else fn(group, version, args[0], plural, **kw)), True
        return fn, k.namespaced

    def _json(self, response: Any) -> Any:
        data = response.data if hasattr(response, "data") else response.read()
        return json.loads(data) if data else {}

    # -- verbs ----------------------------------------------------------------------------------
    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False, force: bool = True,
              manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply one object (creates it when missing)."""
        kind, meta = obj["kind"], obj["metadata"]
        fn, namespaced = self._method("patch", kind)
        args = (meta["name"], meta["namespace"]) if namespaced else (meta["name"],)
        extra = {"dry_run": "All"} if dry_run else {}
        return self._json(self._call(
            f"apply {kind} {_where(meta)}",
            lambda: fn(*args, body=dict(obj), field_manager=manager, force=force, _content_type=APPLY,
                       _preload_content=False, **extra)))

    def server_version(self) -> str:
        """``/version`` (readable by any authenticated user, unlike most objects): the API server answers."""
        info = self._json(self._call("read the server version",   # connect: a down server is said quickly
                                     lambda: self.version.get_code(_preload_content=False), attempts=2))
        return str(info.get("gitVersion") or f"{info.get('major')}.{info.get('minor')}")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        fn, namespaced = self._method("read", kind)
        args = (name, namespace) if namespaced else (name,)
        return self._json(self._call(f"read {kind} {namespace + '/' if namespace else ''}{name}",
                                     lambda: fn(*args, _preload_content=False)))

    def list(self, kind: str, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None) -> list[dict[str, Any]]:
        fn, namespaced = self._method("list", kind)
        args = (namespace,) if namespaced else ()
        query = {k: v for k, v in (("label_selector", labels), ("field_selector", fields)) if v}
        answer = self._json(self._call(f"list {kind} in {namespace or 'the cluster'}",
                                       lambda: fn(*args, _preload_content=False, **query)))
        return list(answer.get("items") or [])

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object and (in the background) what it owns; missing is fine."""
        fn, namespaced = self._method("delete", kind)
        args = (name, namespace) if namespaced else (name,)
        with contextlib.suppress(NotFound):
            self._call(f"delete {kind} {namespace}/{name}",
                       lambda: fn(*args, propagation_policy="Background", _preload_content=False))

    def pod_log(self, name: str, namespace: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        kwargs: dict[str, Any] = {"container": "scoring", "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if follow:
            kwargs["follow"] = True
        response = self._call(f"logs of pod {namespace}/{name}",
                              lambda: self.core.read_namespaced_pod_log(name, namespace, **kwargs))
        if not follow:
            yield from response.data.decode(errors="replace").splitlines()
            return
        pending = b""
        try:
            for chunk in response.stream(1024, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
        finally:
            response.release_conn()
        if pending:
            yield pending.decode(errors="replace")

    def proxy(self, method: str, path: str, *, body: bytes | None, headers: Mapping[str, str],
              timeout: float) -> tuple[int, bytes]:
        """A request through the API server's proxy (``/api/v1/namespaces/NS/services/NAME:PORT/proxy/…``).

        The typed ``connect_post_namespaced_service_proxy_with_path`` sends no body, so the request
        goes through the client's own connection pool (its TLS settings and client certificate) with
        the kubeconfig's bearer token when it has one (refreshed as the client refreshes it).
        """
        configuration = self.api_client.configuration
        header_params = dict(headers)
        # The API server removes Authorization from every request it authenticated (a client certificate
        # too) before proxying it: the scoring key rides in the header the runtime also reads.
        key = next((v for k, v in header_params.items() if k.lower() == "authorization"), None)
        if key:
            header_params["X-Mlops-Authorization"] = key
        auth = (configuration.auth_settings() or {}).get("BearerToken") or {}
        if auth.get("value"):   # the API server consumes this header: a scoring key cannot ride along (README)
            header_params = {k: v for k, v in header_params.items() if k.lower() != "authorization"}
            header_params["Authorization"] = auth["value"]
        method_, url = method, f"{configuration.host.rstrip('/')}{path}"

        def once() -> tuple[int, bytes]:
            self.requests += 1
            reply = self.api_client.rest_client.pool_manager.request(
                method_, url, body=body, headers=header_params, timeout=timeout, retries=False)
            # Only the API server's own throttling and gateway answers are retried; whatever the
            # scoring server answers (a 500 from run(), its 503 when full) is the caller's answer.
            from_api_server = b'"kind": "Status"' in reply.data[:200] or b'"kind":"Status"' in reply.data[:200]
            if reply.status in (429, 502, 503) and from_api_server and b"no endpoints available" not in reply.data:
                raise TransientError(f"HTTP {reply.status}", retry_after(dict(reply.headers)))
            return reply.status, reply.data

        try:
            return call_with_retries(once, what=f"{method} {path}", attempts=3, cancel=self.cancel)
        except CancelledError:
            raise
        except Exception as exc:
            raise ProviderError(f"{method} {path} through {self.host}: {exc}") from None


def _namespace_hint(message: str) -> str:
    """A 403 inside a namespace also means "no such namespace" for credentials bound by a Role (they cannot
    read the namespace to tell): say so, the most common cause on a first deploy."""
    found = re.search(r'in the namespace "([^"]+)"', message)
    if not found:
        return ""
    return (f"; check that namespace {found.group(1)!r} exists and that these credentials are bound in it "
            "(mlops render --rbac prints the Role)")


def _short(exc: Any) -> str:
    """An exception as one short line (urllib3's reasons nest the whole request in their text)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _where(meta: Mapping[str, Any]) -> str:
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def _message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return str(body or "")[:200]
