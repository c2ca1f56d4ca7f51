"""A Kubernetes API double on 127.0.0.1 (HTTPS, client-certificate auth) with a small control plane.

**The one deviation — host networking.** This machine's Docker engine has no bridge network, so
each pod's container runs with ``network_mode=host`` and the kubelet gives every pod its own port
on 127.0.0.1 by rewriting the container's ``--port``/``--host`` arguments. The service proxy
(``/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/…``) and the pod proxy
(``…/pods/NAME[:PORT]/proxy/…``) map the Service's port -> targetPort -> the ready pod's host port.

What the API server part emulates (see ``kubernetes_store`` for the object semantics): the core/v1,
apps/v1, autoscaling/v2, coordination.k8s.io/v1 and gateway.networking.k8s.io/v1 paths of
Namespaces, Nodes, Pods, Services, Secrets, Events, Deployments, ReplicaSets,
HorizontalPodAutoscalers, Leases and HTTPRoutes (stored as sent: no CRD schema is checked here; the
real-cluster tests install the vendored CRD so the real API server validates them); GET/list, POST,
PUT, PATCH (``application/apply-patch+yaml`` = server-side apply with ``fieldManager``/``force``;
merge and strategic-merge patches as JSON merge patch), DELETE with ``propagationPolicy`` (query or
DeleteOptions body), ``dryRun=All``, the ``/status`` subresource, pod logs (``tailLines``,
``follow`` streamed chunked), Status bodies for errors (404 NotFound, 409 AlreadyExists/Conflict,
400, 415), ``/version``. Authentication: TLS client certificate signed by the double's CA (the
kubeconfig it writes carries it); like a real API server, the proxy drops the ``Authorization``
header (mlops sends the scoring key in ``X-Mlops-Authorization`` too). What the control plane emulates is
listed in ``kubernetes_control``. Not emulated: watches, discovery beyond /version, OpenAPI,
RBAC, admission, aggregated APIs, LoadBalancer addresses (Services of that type get none).

Run by hand: ``python3 tests/doubles/kubernetes_double.py --serve --state-dir DIR`` writes
``DIR/kubeconfig`` and ``DIR/env`` (export lines) once it answers and serves until SIGTERM,
removing its containers. ``--add-node NAME --resource amd.com/x=1 --label k=v`` adds a node to a
running double (through the API, with the kubeconfig in $KUBECONFIG).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import re
import signal
import ssl
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from http_base import MethodDispatch  # noqa: E402
from kubernetes_control import ControlPlane  # noqa: E402
from kubernetes_store import BY_KIND, BY_PATH, ApiError, Store, not_found  # noqa: E402

CONTEXT = "mlops-double"
DEFAULT_NODES = ({"name": "node-1", "labels": {}, "allocatable": {}},
                 {"name": "node-2", "labels": {}, "allocatable": {}})
BASE_ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
CORE = re.compile(r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/(?=[a-z]+))?(?P<plural>[a-z]+)"
                  r"(?:/(?P<name>[^/]+)(?:/(?P<sub>.*))?)?$")
GROUPS = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/(?:namespaces/(?P<ns>[^/]+)/(?=[a-z]+))?"
                    r"(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>.*))?)?$")
HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding", "keep-alive",
               "authorization"}   # a real API server removes it from every request it authenticated


# -- certificates ---------------------------------------------------------------------------------
def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (system:masters)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=2)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mlops-double-ca")).issuer_name(name("mlops-double-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": folder / "ca.crt"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, cn, org in (("server", "127.0.0.1", None), ("client", "mlops-test", "system:masters")):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end))
        if role == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        out[role] = folder / f"{role}.crt"
        out[f"{role}-key"] = folder / f"{role}.key"
        out[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(out[f"{role}-key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return out


# -- HTTP -----------------------------------------------------------------------------------------
class Handler(MethodDispatch, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16   # headers and body leave in one segment (no Nagle / delayed-ACK stall per answer)
    server: Server

    def log_message(self, format: str, *args: Any) -> None:   # quiet; the counts are kept instead
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        double = self.server.double
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body()
        double.count(method, url.path)
        try:
            if url.path in ("/version", "/version/"):
                return self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-mlops-double",
                                        "platform": "linux/amd64"})
            m = CORE.match(url.path) or GROUPS.match(url.path)
            if not m:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            parts = m.groupdict()
            group, version = parts.get("group") or "", parts.get("version") or "v1"
            kind = BY_PATH.get((group, version, parts["plural"]))
            if kind is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns, name, sub = parts.get("ns"), parts.get("name"), parts.get("sub")
            name = unquote(name) if name else None
            if sub and (sub == "proxy" or sub.startswith("proxy/")):
                return self._proxy(kind.kind, ns, name or "", sub[len("proxy"):].lstrip("/"), url.query, method, body)
            if sub == "log" and kind.kind == "Pod" and method == "GET":
                return self._log(ns, name or "", query)
            if sub not in (None, "status"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._object(method, kind, ns, name, sub, query, body)
        except ApiError as exc:
            self._send(exc.code, exc.body())
        except (ValueError, yaml.YAMLError) as exc:
            self._send(400, ApiError(400, "BadRequest", f"the body could not be decoded: {exc}").body())

    def _object(self, method: str, kind: Any, ns: str | None, name: str | None, sub: str | None,
                query: dict[str, str], body: bytes) -> None:
        store = self.server.double.store
        dry = query.get("dryRun") == "All"
        manager = query.get("fieldManager") or ""
        if method == "GET":
            if name is None:
                return self._send(200, store.list(kind, ns, query.get("labelSelector"), query.get("fieldSelector")))
            return self._send(200, store.get(kind, ns, name))
        if method == "POST" and name is None:
            return self._send(201, store.create(kind, ns, json.loads(body or b"{}"), manager=manager or "unknown",
                                                dry_run=dry))
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection here")
        if method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype == "application/apply-patch+yaml":
                config = yaml.safe_load(body or b"{}") or {}
                existed = store.peek(kind, ns, name) is not None
                obj = store.apply(kind, ns, name, config, manager=manager, force=query.get("force") == "true",
                                  dry_run=dry)
                return self._send(200 if existed else 201, obj)
            if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                return self._send(200, store.patch(kind, ns, name, json.loads(body or b"{}"),
                                                   manager=manager or "unknown", subresource=sub, dry_run=dry))
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: application/apply-patch+yaml, "
                                                        f"application/merge-patch+json, "
                                                        f"application/strategic-merge-patch+json (got {ctype!r})")
        if method == "PUT":
            return self._send(200, store.replace(kind, ns, name, json.loads(body or b"{}"),
                                                 manager=manager or "unknown", subresource=sub, dry_run=dry))
        if method == "DELETE":
            options = json.loads(body) if body else {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            return self._send(200, store.delete(kind, ns, name, propagation=policy, dry_run=dry))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # -- proxy and logs -------------------------------------------------------------------------
    def _proxy(self, kind: str, ns: str | None, name: str, rest: str, query: str, method: str, body: bytes) -> None:
        double = self.server.double
        base, _, port = name.partition(":")
        port_number = double.proxy_port(kind, ns or "", base, port)
        path = "/" + rest + (f"?{query}" if query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port_number, timeout=130)
            conn.request(method, path, body=body or None, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            ctype = reply.getheader("Content-Type") or "application/octet-stream"
            conn.close()
        except OSError as exc:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {exc}") from None
        self._send(reply.status, data, ctype)

    def _log(self, ns: str | None, name: str, query: dict[str, str]) -> None:
        double = self.server.double
        pod = double.store.get(BY_KIND["Pod"], ns, name)
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        follow = query.get("follow") == "true"
        out = double.control.logs(pod["metadata"]["uid"], tail=tail, follow=follow)
        if out is None:
            raise ApiError(400, "BadRequest", f'container "scoring" in pod "{name}" is waiting to start: '
                                              "ContainerCreating")
        if not follow:
            return self._send(200, out, "text/plain")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in out:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    double: KubernetesDouble


# -- the double -----------------------------------------------------------------------------------
class KubernetesDouble:
    """The API server, its store and its control plane; ``start()`` writes the kubeconfig."""

    def __init__(self, state_dir: Path, *, nodes: tuple[dict[str, Any], ...] = DEFAULT_NODES,
                 kubelet: bool = True, tick: float = 0.2):
        self.state_dir = Path(state_dir)
        self.store = Store()
        self.instance = uuid.uuid4().hex[:10]
        docker_client = None
        if kubelet:
            import docker

            docker_client = docker.from_env(timeout=120)
        self.control = ControlPlane(self.store, docker_client=docker_client, instance=self.instance, tick=tick)
        self.requests: list[tuple[str, str]] = []
        self._count_lock = threading.Lock()
        self._rr = 0
        for ns in ("default", "kube-system"):
            self.store.create(BY_KIND["Namespace"], None, {"metadata": {"name": ns}}, manager="kube-apiserver")
        for n in nodes:
            self.add_node(n["name"], labels=n.get("labels"), allocatable=n.get("allocatable"), taints=n.get("taints"))
        self.server: Server | None = None
        self.kubeconfig = self.state_dir / "kubeconfig"

    def count(self, method: str, path: str) -> None:
        with self._count_lock:
            self.requests.append((method, path))

    def add_node(self, name: str, *, labels: dict[str, str] | None = None, allocatable: dict[str, str] | None = None,
                 taints: list[dict[str, str]] | None = None) -> None:
        """A node registers (as a kubelet does): its labels, taints and allocatable resources."""
        resources = {**BASE_ALLOCATABLE, **(allocatable or {})}
        body = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                      **(labels or {})}},
                "spec": {"taints": taints} if taints else {},
                "status": {"capacity": dict(resources), "allocatable": dict(resources),
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
        self.store.create(BY_KIND["Node"], None, body, manager="kubelet")

    def proxy_port(self, kind: str, ns: str, name: str, port: str) -> int:
        """The host port a service (via a ready pod it selects) or a pod proxy request goes to."""
        store = self.store
        with store.lock:
            if kind == "Pod":
                pod = store.peek(BY_KIND["Pod"], ns, name)
                if pod is None:
                    raise not_found(BY_KIND["Pod"], name)
                host = self.control.pod_port(pod["metadata"]["uid"], port or None, pod["spec"]["containers"][0])
                if host is None:
                    raise ApiError(503, "ServiceUnavailable", f'pod "{name}" has no running container')
                return host
            svc = store.peek(BY_KIND["Service"], ns, name)
            if svc is None:
                raise not_found(BY_KIND["Service"], name)
            ports = svc["spec"].get("ports") or []
            chosen = next((p for p in ports if port in (p.get("name"), str(p.get("port")))), None) if port else \
                (ports[0] if ports else None)
            if chosen is None:
                raise ApiError(503, "ServiceUnavailable", f'no port "{port}" on service "{name}"')
            selector = svc["spec"].get("selector") or {}
            ready = []
            for pod in store.items(BY_KIND["Pod"], ns):
                labels = pod["metadata"].get("labels") or {}
                ok = any(c["type"] == "Ready" and c["status"] == "True"
                         for c in (pod.get("status") or {}).get("conditions") or [])
                host = self.control.pod_port(pod["metadata"]["uid"], chosen.get("targetPort"),
                                             pod["spec"]["containers"][0])
                if selector and all(labels.get(k) == v for k, v in selector.items()) and ok and host:
                    ready.append(host)
            if not ready:
                raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
            self._rr += 1
            return sorted(ready)[self._rr % len(ready)]

    def start(self) -> KubernetesDouble:
        certs = _certificates(self.state_dir / "pki")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs["server"], certs["server-key"])
        context.load_verify_locations(certs["ca"])
        context.verify_mode = ssl.CERT_REQUIRED
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.double = self
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="k8s-double-api").start()
        self.control.start()
        port = self.server.server_address[1]

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
            "clusters": [{"name": CONTEXT, "cluster": {"server": f"https://127.0.0.1:{port}",
                                                       "certificate-authority-data": b64(certs["ca"])}}],
            "users": [{"name": "mlops-test", "user": {"client-certificate-data": b64(certs["client"]),
                                                      "client-key-data": b64(certs["client-key"])}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "mlops-test"}}],
        }
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(config, fh)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.control.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def add_node_through_api(name: str, resources: dict[str, str], labels: dict[str, str]) -> None:
    """``--add-node``: register a node on a running double with the real client ($KUBECONFIG)."""
    from kubernetes import client, config

    config.load_kube_config()
    allocatable = {**BASE_ALLOCATABLE, **resources}
    body = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
    client.CoreV1Api().create_node(body)
    print(f"node {name} added with {resources}")


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--add-node", metavar="NAME")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME=COUNT")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.add_node:
        add_node_through_api(args.add_node, _pairs(args.resource), _pairs(args.label))
        return 0
    if not (args.serve and args.state_dir):
        parser.error("--serve --state-dir DIR, or --add-node NAME")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    double = KubernetesDouble(args.state_dir).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lines = [f"export KUBECONFIG={double.kubeconfig}"]
    if os.environ.get("MLOPS_TEST_REGISTRY"):
        lines.append(f"export MLOPS_TEST_REGISTRY={os.environ['MLOPS_TEST_REGISTRY']}")
    tmp = args.state_dir / "env.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(args.state_dir / "env")
    print(f"kubernetes double on {double.url}, kubeconfig {double.kubeconfig}", flush=True)
    stop.wait()
    double.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
