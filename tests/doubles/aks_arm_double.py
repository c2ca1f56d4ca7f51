"""A local double of the one Azure Resource Manager call the ``aks`` kind makes, plus the login it needs.

Emulated (HTTPS on 127.0.0.1, certificate from its own CA; point REQUESTS_CA_BUNDLE at ``ca_file``):
- ``/metadata/endpoints?api-version=2015-01-01`` (Azure Stack's cloud metadata) naming itself as the
  login endpoint and audience, so ``arm_endpoint`` finds it;
- ``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token`` for the
  client-credentials grant (the client id and secret it was made with);
- ``POST /subscriptions/S/resourceGroups/RG/providers/Microsoft.ContainerService/managedClusters/
  NAME/listClusterUserCredential`` answering ``{"kubeconfigs": [{"name": "clusterUser", "value":
  base64}]}`` for the clusters it knows, ARM's 404 ``ResourceNotFound`` otherwise, and 401
  ``AuthenticationFailed`` without a token it issued.
Not emulated: any other ARM operation, other grants, token expiry, throttling.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes_double import _certificates

CREDENTIAL = ("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}"
              "/listClusterUserCredential")


class AksArmDouble:
    def __init__(self, state_dir: Path, clusters: dict[tuple[str, str, str], Path]):
        self.state_dir = Path(state_dir)
        self.clusters = dict(clusters)   # (subscription, resource group, name) -> kubeconfig file
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = secrets.token_urlsafe(24)
        self.tokens: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {"AZURE_TENANT_ID": self.tenant_id, "AZURE_CLIENT_ID": self.client_id,
                "AZURE_CLIENT_SECRET": self.client_secret, "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
                "REQUESTS_CA_BUNDLE": str(self.ca_file)}

    def start(self) -> AksArmDouble:
        import ssl

        certs = _certificates(self.state_dir / "pki")
        self.ca_file = certs["ca"]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs["server"], certs["server-key"])
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                double.calls.append(("GET", path))
                if path == "/metadata/endpoints":
                    return self._send(200, {"authentication": {"loginEndpoint": f"{double.url}/",
                                                               "audiences": [f"{double.url}/"]}})
                parts = path.strip("/").split("/")
                if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                    base = f"{double.url}/{parts[0]}"
                    return self._send(200, {
                        "token_endpoint": f"{base}/oauth2/v2.0/token", "issuer": f"{base}/v2.0",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint_auth_methods_supported": ["client_secret_post"],
                        "response_types_supported": ["code", "id_token"], "tenant_region_scope": "EU"})
                self._send(404, {"error": {"code": "NotFound", "message": path}})

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                double.calls.append(("POST", url.path))
                if url.path.endswith("/oauth2/v2.0/token"):
                    form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                    if form.get("client_id") != double.client_id or form.get("client_secret") != double.client_secret:
                        return self._send(401, {"error": "invalid_client",
                                                "error_description": "AADSTS7000215: Invalid client secret."})
                    token = secrets.token_urlsafe(32)
                    with double.lock:
                        double.tokens.add(token)
                    return self._send(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                            "access_token": token})
                auth = self.headers.get("Authorization") or ""
                if not auth.startswith("Bearer ") or auth[7:] not in double.tokens:
                    return self._send(401, {"error": {"code": "AuthenticationFailed",
                                                      "message": "Authentication failed."}})
                for (sub, rg, name), kubeconfig in double.clusters.items():
                    if url.path.lower() == CREDENTIAL.format(sub=sub, rg=rg, name=name).lower():
                        value = base64.b64encode(kubeconfig.read_bytes()).decode()
                        return self._send(200, {"kubeconfigs": [{"name": "clusterUser", "value": value}]})
                self._send(404, {"error": {"code": "ResourceNotFound", "message": "The Resource "
                                           "'Microsoft.ContainerService/managedClusters' under resource group was "
                                           "not found."}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
