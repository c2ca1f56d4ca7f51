"""A local double of Azure Resource Manager for Container Instances (plus a token endpoint), on 127.0.0.1.

What it emulates (the documented contract of ``Microsoft.ContainerInstance/containerGroups``,
api-version 2023-05-01, as ``azure-mgmt-containerinstance`` 10.1 speaks it):

- HTTPS only, with a self-signed certificate made here (``cryptography``); every ARM call needs a
  bearer token this double issued.
- Login: ``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token``
  (client-credentials grant, checked against the client id/secret it was started with), so
  azure-identity's ``DefaultAzureCredential`` (EnvironmentCredential) logs in for real; and
  ``/metadata/endpoints?api-version=2015-01-01`` (Azure Stack's cloud metadata) naming itself as the
  login endpoint, so an ``arm_endpoint`` setting finds it.
- ``PUT`` create/update answering 201 (new) or 200 (update) with ``Azure-AsyncOperation`` and a body
  in ``Pending``; the operation resource answers ``InProgress`` then ``Succeeded``/``Failed`` with
  ARM's ``error {code, message}``; ``GET`` with the instance view (group state, per container
  current/previous state, restart count, events); ``list`` per resource group with ``nextLink``
  paging (no instance view, as the docs promise nothing there); ``PATCH`` of tags only (no
  restart); ``DELETE`` answering 202 + ``Azure-AsyncOperation`` (204 when missing); container logs
  (``tail``); 404 ``ResourceNotFound`` / ``ResourceGroupNotFound``; 409 ``Conflict`` for a PUT while
  the group is transitioning and for a PUT that changes what ACI cannot update in place (OS, CPU,
  memory, restart policy); 429 with ``Retry-After`` (injected by tests: ``throttle()``); secure
  environment values and registry passwords dropped from every response.
- A PUT restarts the group's containers, even an identical one (as ACI does); ``requests`` records
  every call, so tests can prove that a tag change sent only a PATCH.
- Registries that require credentials (``registry_auth``): a group whose image comes from one
  without the right ``imageRegistryCredentials`` fails provisioning with ``InaccessibleImage``
  and ARM's message, as does an image the engine cannot pull.

**Container groups run for real**: each group's container is started in the Docker engine at
DOCKER_HOST from the pushed image (pulled by digest from the registry), with the group's
command, environment (secure values included) and memory limit. The one deviation: the engine
here has no bridge network and no port publishing, so containers use the host's network; each
group's container listens on 127.0.0.1 at its declared port (the ``--host`` the command passes is
rewritten to 127.0.0.1) and ``ipAddress.ip`` reports 127.0.0.1. Two groups declaring one port
therefore collide here, where on ACI each would have its own address.

What it does not emulate: other resource types and resource groups' own API, CPU requests (recorded,
not enforced), probes (recorded; readiness is checked by the provider itself), volumes, init
containers, VNet/subnets, GPU, managed identities, restart/stop/start, exec/attach, DNS (``fqdn`` is
reported in ACI's form ``<label>.<region>.azurecontainer.io`` but resolves nowhere), quotas, regional
capacity, RBAC, throttling other than injected, and ARM's 30-minute provisioning timeout.

Run by hand: ``python3 tests/doubles/aci_double.py --serve --state-dir DIR`` writes ``DIR/env``
(export lines for examples/aci/ml.yaml) and serves until SIGTERM, removing its containers.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import re
import secrets
import shlex
import signal
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))   # run as a script or imported from tests
from http_base import MethodDispatch, self_signed  # noqa: E402

HOST = "127.0.0.1"
API_PREFIX = "Microsoft.ContainerInstance"
LABEL = "mlops-aci-double"
GROUP_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerInstance/"
    r"containerGroups(?:/(?P<name>[^/]+)(?:/containers/(?P<container>[^/]+)/logs)?)?$", re.I)
OP_PATH = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.ContainerInstance/locations/"
                     r"(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$", re.I)
NAME_RULE = re.compile(r"^(?!.*--)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FIXED_ON_UPDATE = ("osType", "restartPolicy", "cpu", "memoryInGB")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1; returns (cert, key) paths."""
    return self_signed(folder, cert_name="aci-double-cert.pem", key_name="aci-double-key.pem",
                       common_name="aci-double.127.0.0.1", dns_names=("localhost",))


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class AciDouble:
    """The double's state and behaviour; ``start()`` serves it on a thread, ``stop()`` removes everything."""

    def __init__(self, state_dir: Path, *, resource_groups: Iterable[str] = ("ml-dev",), page_size: int = 2,
                 engine: bool = True, registry_auth: dict[str, tuple[str, str]] | None = None,
                 poll_after: int = 1, subscription_id: str | None = None):
        self.state_dir = Path(state_dir)
        self.id = uuid.uuid4().hex[:8]
        self.subscription_id = subscription_id or str(uuid.uuid4())
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = secrets.token_urlsafe(24)
        self.resource_groups = {g.lower() for g in resource_groups}
        self.page_size = page_size
        self.engine = engine
        self.registry_auth = dict(registry_auth or {})
        self.poll_after = poll_after
        self.lock = threading.RLock()
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self._throttle: list[tuple[int, int]] = []       # (status, retry_after) answers still to give
        self._docker: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self.url = ""
        self.ca_file = Path()

    # -- test controls ----------------------------------------------------------------------------
    def throttle(self, count: int, *, retry_after: int = 1, status: int = 429) -> None:
        """The next ``count`` ARM requests answer ``status`` (429 TooManyRequests) with Retry-After."""
        with self.lock:
            self._throttle = [(status, retry_after)] * count

    def calls(self, method: str | None = None, contains: str = "") -> list[tuple[str, str]]:
        with self.lock:
            return [(m, p) for m, p in self.requests if (method is None or m == method) and contains in p]

    def env(self) -> dict[str, str]:
        """What a shell needs to run examples/aci/ml.yaml against this double."""
        out = {
            "AZURE_SUBSCRIPTION_ID": self.subscription_id, "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id, "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential", "AZURE_ARM_ENDPOINT": self.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }
        registry = os.environ.get("MLOPS_TEST_REGISTRY")
        if registry:
            out["ACR_LOGIN_SERVER"] = registry
            if registry in self.registry_auth:
                out["MLOPS_REGISTRY_USERNAME"], out["MLOPS_REGISTRY_PASSWORD"] = self.registry_auth[registry]
        return out

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> AciDouble:
        cert, key = make_certificate(self.state_dir)
        self.ca_file = cert
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        handler = type("Handler", (_Handler,), {"double": self})
        server = ThreadingHTTPServer((HOST, 0), handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://{HOST}:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, name="aci-double", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._stopping = True
        for thread in list(self._threads):         # let provisioning finish, so nothing starts after us
            thread.join(timeout=120)
        if self.engine and self._docker is not None:     # no client yet: no container was ever started
            # The low-level API: the high-level list() re-reads each container and fails on one just removed.
            for found in self.docker.api.containers(all=True, filters={"label": f"{LABEL}={self.id}"}):
                with contextlib.suppress(Exception):   # already gone
                    self.docker.api.remove_container(found["Id"], force=True)

    def __enter__(self) -> AciDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def docker(self) -> Any:
        if self._docker is None:
            import docker

            self._docker = docker.from_env(timeout=120)
        return self._docker

    # -- login ------------------------------------------------------------------------------------
    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.url}/{tenant}"
        return {"token_endpoint": f"{base}/oauth2/v2.0/token", "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "tenant_region_scope": "EU", "cloud_instance_name": "aci-double"}

    def token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        if tenant not in (self.tenant_id, "organizations", "common"):
            raise ArmError(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise ArmError(400, "unsupported_grant_type", "only client_credentials is emulated")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            raise ArmError(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if not form.get("scope", "").endswith("/.default"):
            raise ArmError(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens.add(token)
        return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}

    def metadata(self) -> dict[str, Any]:
        return {"galleryEndpoint": "", "graphEndpoint": "", "portalEndpoint": "",
                "authentication": {"loginEndpoint": f"{self.url}/", "audiences": [f"{self.url}/"]}}

    # -- ARM --------------------------------------------------------------------------------------
    def before_arm(self, method: str, path: str, authorization: str | None) -> None:
        with self.lock:
            self.requests.append((method, path))
            if not authorization or not authorization.startswith("Bearer ") or \
                    authorization[7:] not in self.tokens:
                raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header "
                               "is missing or the access token is invalid.")
            if self._throttle:
                status, after = self._throttle.pop(0)
                if status == 429:
                    raise ArmError(status, "TooManyRequests", "The request is being throttled as the limit has "
                                   "been reached for operation type - Read_ObservationWindow_00:05:00.",
                                   {"Retry-After": str(after)})
                raise ArmError(status, "InternalServerError", "Encountered internal server error. Please try "
                               "again.", {"Retry-After": str(after)})

    def _rg(self, sub: str, rg: str) -> None:
        if sub != self.subscription_id:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        if rg.lower() not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    def _group(self, rg: str, name: str) -> dict[str, Any]:
        group = self.groups.get((rg.lower(), name.lower()))
        if group is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{API_PREFIX}/containerGroups/{name}' under "
                           f"resource group '{rg}' was not found. For more details please go to "
                           "https://aka.ms/ARMResourceNotFoundFix")
        return group

    def list_groups(self, sub: str, rg: str, skip: int) -> dict[str, Any]:
        self._rg(sub, rg)
        with self.lock:
            found = sorted((g for (r, _), g in self.groups.items() if r == rg.lower()), key=lambda g: g["name"])
            page = [self.public(g, instance_view=False) for g in found[skip:skip + self.page_size]]
        out: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(found):
            out["nextLink"] = (f"{self.url}/subscriptions/{sub}/resourceGroups/{rg}/providers/{API_PREFIX}/"
                               f"containerGroups?api-version=2023-05-01&$skiptoken={skip + self.page_size}")
        return out

    def get_group(self, sub: str, rg: str, name: str) -> dict[str, Any]:
        self._rg(sub, rg)
        with self.lock:
            return self.public(self._group(rg, name))

    def put_group(self, sub: str, rg: str, name: str, body: dict[str, Any]) -> tuple[int, dict, dict]:
        self._rg(sub, rg)
        if not NAME_RULE.match(name):
            raise ArmError(400, "InvalidContainerGroupName", f"The container group name '{name}' is invalid. "
                           "The name must contain no more than 63 characters and only lowercase letters, numbers "
                           "and hyphens, must not start or end with a hyphen and must not contain '--'.")
        props = body.get("properties") or {}
        containers = props.get("containers") or []
        if not body.get("location") or not containers or props.get("osType") not in ("Linux", "Windows"):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid: location, "
                           "properties.containers and properties.osType are required.")
        with self.lock:
            old = self.groups.get((rg.lower(), name.lower()))
            if old is not None:
                if old["properties"]["provisioningState"] in ("Pending", "Creating", "Repairing"):
                    raise ArmError(409, "Conflict", f"The container group '{name}' is still transitioning, "
                                   "please retry later.")
                changed = [f for f in FIXED_ON_UPDATE if _fixed(old, f) != _fixed(body, f)]
                if changed:
                    raise ArmError(409, "Conflict", f"The container group '{name}' cannot be updated: "
                                   f"{', '.join(changed)} can only be set at creation; delete and re-create it.")
            group = {
                "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{API_PREFIX}/containerGroups/{name}",
                "name": name, "type": f"{API_PREFIX}/containerGroups", "location": body["location"],
                "tags": dict(body.get("tags") or {}), "properties": copy.deepcopy(props),
            }
            group["properties"]["provisioningState"] = "Pending"
            group["properties"].setdefault("restartPolicy", "Always")
            ip = group["properties"].get("ipAddress")
            if ip:
                ip["ip"] = HOST
                if ip.get("dnsNameLabel"):
                    ip["fqdn"] = f"{ip['dnsNameLabel']}.{body['location']}.azurecontainer.io"
            group["_runtime"] = {"containers": {}, "events": {}, "started": _now(),
                                 "previous": (old or {}).get("_runtime", {}).get("containers", {})}
            self.groups[(rg.lower(), name.lower())] = group
            op = self._operation(sub, body["location"])
        self._spawn(self._provision, rg, name, group, op)
        headers = {"Azure-AsyncOperation": op["url"], "Retry-After": str(self.poll_after)}
        with self.lock:
            return (200 if old else 201), self.public(group), headers

    def patch_group(self, sub: str, rg: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._rg(sub, rg)
        extra = sorted(set(body) - {"tags"})
        if extra:
            raise ArmError(400, "InvalidRequestContent", f"Only tags can be updated with PATCH (got {extra}).")
        with self.lock:
            group = self._group(rg, name)
            group["tags"] = dict(body.get("tags") or {})
            return self.public(group)

    def delete_group(self, sub: str, rg: str, name: str) -> tuple[int, dict | None, dict]:
        self._rg(sub, rg)
        with self.lock:
            group = self.groups.pop((rg.lower(), name.lower()), None)
            if group is None:
                return 204, None, {}
            op = self._operation(sub, group["location"])
        def finish() -> None:
            self._remove_containers(group)
            with self.lock:
                op["status"] = "Succeeded"
        self._spawn(finish)
        return 202, None, {"Azure-AsyncOperation": op["url"], "Retry-After": str(self.poll_after)}

    def logs(self, sub: str, rg: str, name: str, container: str, tail: int | None) -> dict[str, Any]:
        self._rg(sub, rg)
        with self.lock:
            group = self._group(rg, name)
            cid = group["_runtime"]["containers"].get(container)
        if not cid or not self.engine:
            return {"content": ""}
        try:
            raw = self.docker.containers.get(cid).logs(tail=tail if tail else "all")
        except Exception:  # noqa: BLE001 - removed meanwhile
            raw = b""
        return {"content": raw.decode(errors="replace")}

    def operation(self, sub: str, op_id: str) -> dict[str, Any]:
        with self.lock:
            op = self.operations.get(op_id)
            if op is None or sub != self.subscription_id:
                raise ArmError(404, "ResourceNotFound", f"The operation '{op_id}' was not found.")
            out = {"id": op["id"], "name": op_id, "status": op["status"], "startTime": op["startTime"]}
            if op.get("error"):
                out["error"] = op["error"]
            return out

    def _spawn(self, fn: Any, *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        with self.lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _operation(self, sub: str, location: str) -> dict[str, Any]:
        op_id = str(uuid.uuid4())
        path = f"/subscriptions/{sub}/providers/{API_PREFIX}/locations/{location}/operations/{op_id}"
        op = {"id": path, "url": f"{self.url}{path}?api-version=2023-05-01", "status": "InProgress",
              "startTime": _now()}
        self.operations[op_id] = op
        return op

    # -- running groups -----------------------------------------------------------------------------
    def _event(self, group: dict, container: str, name: str, message: str, kind: str = "Normal") -> None:
        events = group["_runtime"]["events"].setdefault(container, [])
        now = _now()
        events.append({"count": 1, "firstTimestamp": now, "lastTimestamp": now, "name": name, "message": message,
                       "type": kind})

    def _provision(self, rg: str, name: str, group: dict[str, Any], op: dict[str, Any]) -> None:
        """Pending -> Creating -> Succeeded/Failed; an update restarts every container (stop old, start new)."""
        try:
            time.sleep(0.2)
            if self._stopping:
                raise ArmError(409, "Canceled", "the double is stopping")
            with self.lock:
                group["properties"]["provisioningState"] = "Creating"
                previous = dict(group["_runtime"]["previous"])
            self._remove_ids(previous.values())
            for spec in group["properties"]["containers"]:
                self._run_container(rg, name, group, spec)
            state, error = "Succeeded", None
        except ArmError as exc:
            state, error = "Failed", {"code": exc.code, "message": exc.message}
        except Exception as exc:  # noqa: BLE001 - the engine refused: ARM reports it as a failed deployment
            state, error = "Failed", {"code": "ContainerGroupDeploymentFailed", "message": str(exc)[:400]}
        with self.lock:
            if self.groups.get((rg.lower(), name.lower())) is not group:
                op["status"] = "Canceled"
                self._remove_ids(group["_runtime"]["containers"].values())
                return
            group["properties"]["provisioningState"] = state
            op["status"] = state
            if error:
                op["error"] = error

    def _run_container(self, rg: str, name: str, group: dict[str, Any], spec: dict[str, Any]) -> None:
        cname = spec["name"]
        props = spec["properties"]
        image = props["image"]
        self._event(group, cname, "Pulling", f'pulling image "{image}"')
        server = image.split("/", 1)[0] if "/" in image else "index.docker.io"
        if server in self.registry_auth:
            given = {(c.get("server"), c.get("username"), c.get("password"))
                     for c in group["properties"].get("imageRegistryCredentials") or []}
            if (server, *self.registry_auth[server]) not in given:
                self._inaccessible(group, cname, image, name)
        if not self.engine:
            self._event(group, cname, "Started", "Started container")
            return
        import docker.errors

        try:
            self.docker.images.pull(image)
        except docker.errors.APIError:
            self._inaccessible(group, cname, image, name)
        self._event(group, cname, "Pulled", f'Successfully pulled image "{image}"')
        command = list(props.get("command") or [])
        if "--host" in command[:-1]:
            command[command.index("--host") + 1] = HOST      # host network: never listen beyond 127.0.0.1
        env = {e["name"]: e.get("value", e.get("secureValue", "")) for e in props.get("environmentVariables") or []}
        memory = float(props["resources"]["requests"].get("memoryInGB") or 0)
        policy = {"Always": {"Name": "always"}, "OnFailure": {"Name": "on-failure"}, "Never": {"Name": "no"}}
        container = self.docker.containers.run(
            image, entrypoint=command or None, detach=True, network_mode="host", environment=env,
            name=f"aci-{self.id}-{name}-{cname}-{uuid.uuid4().hex[:6]}",
            labels={LABEL: self.id, "aci.resource-group": rg, "aci.group": name},
            restart_policy=policy[group["properties"].get("restartPolicy", "Always")],
            mem_limit=int(memory * (1 << 30)) if memory else None)
        with self.lock:
            group["_runtime"]["containers"][cname] = container.id
        self._event(group, cname, "Created", "Created container")
        self._event(group, cname, "Started", "Started container")

    def _inaccessible(self, group: dict, cname: str, image: str, name: str) -> None:
        self._event(group, cname, "Failed", f'Failed to pull image "{image}": unauthorized: authentication '
                    "required", "Warning")
        raise ArmError(400, "InaccessibleImage", f"The image '{image}' in container group '{name}' is not "
                       "accessible. Please check the image and registry credential.")

    def _remove_containers(self, group: dict) -> None:
        self._remove_ids(group["_runtime"]["containers"].values())

    def _remove_ids(self, ids: Iterable[str]) -> None:
        if not self.engine:
            return
        for cid in list(ids):
            with contextlib.suppress(Exception):   # already gone
                self.docker.containers.get(cid).remove(force=True)

    # -- what ARM returns -----------------------------------------------------------------------------
    def public(self, group: dict[str, Any], *, instance_view: bool = True) -> dict[str, Any]:
        """The group as ARM shows it: no secure values, no passwords; the instance view from the engine."""
        out = {k: copy.deepcopy(v) for k, v in group.items() if not k.startswith("_")}
        props = out["properties"]
        for cred in props.get("imageRegistryCredentials") or []:
            cred.pop("password", None)
        running = []
        for spec in props["containers"]:
            for env in spec["properties"].get("environmentVariables") or []:
                env.pop("secureValue", None)
            if instance_view:
                view = self._container_view(group, spec["name"])
                spec["properties"]["instanceView"] = view
                running.append(view["currentState"].get("state"))
        if instance_view:
            state = "Running" if running and all(s == "Running" for s in running) else "Pending"
            if props["provisioningState"] == "Succeeded" and any(s == "Terminated" for s in running):
                state = "Stopped" if props.get("restartPolicy") != "Never" else "Failed"
            elif props["provisioningState"] == "Failed":
                state = "Stopped"
            props["instanceView"] = {"state": state, "events": []}
        return out

    def _container_view(self, group: dict[str, Any], cname: str) -> dict[str, Any]:
        events = copy.deepcopy(group["_runtime"]["events"].get(cname, []))
        cid = group["_runtime"]["containers"].get(cname)
        view: dict[str, Any] = {"restartCount": 0, "currentState": {"state": "Waiting", "detailStatus": "Pending"},
                                "events": events}
        if group["properties"]["provisioningState"] == "Failed":
            view["currentState"] = {"state": "Waiting", "detailStatus": "ImagePullBackOff"}
        if not self.engine:
            if group["properties"]["provisioningState"] == "Succeeded":
                view["currentState"] = {"state": "Running", "startTime": group["_runtime"]["started"],
                                        "detailStatus": ""}
            return view
        if not cid:
            return view
        try:
            attrs = self.docker.api.inspect_container(cid)
        except Exception:  # noqa: BLE001 - removed meanwhile
            return view
        st = attrs.get("State", {})
        view["restartCount"] = int(attrs.get("RestartCount") or 0)
        if st.get("Running") and not st.get("Restarting"):
            view["currentState"] = {"state": "Running", "startTime": st.get("StartedAt"), "detailStatus": ""}
        elif st.get("Restarting") or (view["restartCount"] and not st.get("Running")):
            view["currentState"] = {"state": "Waiting", "detailStatus": "CrashLoopBackOff: Back-off restarting "
                                    "failed container"}
            view["previousState"] = {"state": "Terminated", "exitCode": st.get("ExitCode"),
                                     "finishTime": st.get("FinishedAt"), "detailStatus": "Error"}
            events.append({"count": view["restartCount"], "name": "BackOff", "type": "Warning",
                           "message": "Back-off restarting failed container", "lastTimestamp": _now(),
                           "firstTimestamp": _now()})
        else:
            view["currentState"] = {"state": "Terminated", "exitCode": st.get("ExitCode"),
                                    "finishTime": st.get("FinishedAt"),
                                    "detailStatus": "Completed" if st.get("ExitCode") == 0 else "Error"}
        return view


def _fixed(group: dict[str, Any], field: str) -> Any:
    props = group.get("properties") or {}
    if field in ("osType", "restartPolicy"):
        return props.get(field) or ("Always" if field == "restartPolicy" else None)
    return [float((c.get("properties") or {}).get("resources", {}).get("requests", {}).get(field) or 0)
            for c in props.get("containers") or []]


class _Handler(MethodDispatch, BaseHTTPRequestHandler):
    double: AciDouble
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are separate writes: no 40 ms delayed-ACK stall

    def log_message(self, fmt: str, *args: Any) -> None:
        if os.environ.get("ACI_DOUBLE_VERBOSE"):
            sys.stderr.write("aci-double: " + (fmt % args) + "\n")

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        d = self.double
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        raw = self._body()
        try:
            status, body, headers = self._route(d, method, url.path, query, raw)
        except ArmError as exc:
            if exc.code.startswith(("invalid_", "unsupported_")):
                status, body = exc.status, {"error": exc.code, "error_description": exc.message}
            else:
                status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
            headers = exc.headers
        except (ValueError, KeyError) as exc:
            status, body, headers = 400, {"error": {"code": "InvalidRequestContent", "message": str(exc)}}, {}
        self._send(status, body, headers)

    def _route(self, d: AciDouble, method: str, path: str, query: dict[str, str],
               raw: bytes) -> tuple[int, Any, dict[str, str]]:
        tenant_path = re.match(r"^/([^/]+)/(v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/token)$", path)
        if tenant_path and not path.startswith("/subscriptions/"):
            tenant, what = tenant_path.groups()
            if what.startswith("v2.0"):
                return 200, d.openid_configuration(tenant), {}
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            return 200, d.token(tenant, form), {}
        if path == "/metadata/endpoints":
            return 200, d.metadata(), {}
        d.before_arm(method, path, self.headers.get("Authorization"))
        if "api-version" not in query:
            raise ArmError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is "
                           "required for all requests.")
        if m := OP_PATH.match(path):
            return 200, d.operation(m["sub"], m["op"]), {"Retry-After": str(d.poll_after)}
        m = GROUP_PATH.match(path)
        if not m:
            raise ArmError(404, "InvalidResourceType", f"The resource type could not be found for '{path}'.")
        sub, rg, name, container = m["sub"], m["rg"], m["name"], m["container"]
        if container and method == "GET":
            tail = int(query["tail"]) if query.get("tail") else None
            return 200, d.logs(sub, rg, name, container, tail), {}
        if name is None and method == "GET":
            return 200, d.list_groups(sub, rg, int(query.get("$skiptoken", 0))), {}
        if name and method == "GET":
            return 200, d.get_group(sub, rg, name), {}
        if name and method == "PUT":
            return d.put_group(sub, rg, name, json.loads(raw or b"{}"))
        if name and method == "PATCH":
            return 200, d.patch_group(sub, rg, name, json.loads(raw or b"{}")), {}
        if name and method == "DELETE":
            return d.delete_group(sub, rg, name)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on {path}")


def serve(state_dir: Path) -> int:
    """Serve until SIGTERM; write the export lines once ready; remove every container on the way out."""
    registry = os.environ.get("MLOPS_TEST_REGISTRY")
    auth = {registry: ("mlops-double", secrets.token_urlsafe(16))} if registry else {}
    double = AciDouble(state_dir, registry_auth=auth).start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    env_file = state_dir / "env"
    tmp = env_file.with_suffix(".tmp")
    tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in double.env().items()))
    tmp.chmod(0o600)
    os.replace(tmp, env_file)
    print(f"aci-double: serving {double.url} (subscription {double.subscription_id})", flush=True)
    try:
        stopping.wait()
    finally:
        double.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve until SIGTERM")
    parser.add_argument("--state-dir", type=Path, required=True, help="where the certificate and env go")
    args = parser.parse_args(argv)
    if not args.serve:
        parser.error("nothing to do without --serve")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    return serve(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
