"""A small node agent for the real control plane of .ci/kube-up.sh: the kubelet's job, done with Docker.

Why not the real kubelet: see .ci/kube/README.md. This agent registers a Node (allocatable cpu,
memory, pods and any extended resource given with --resource), keeps its Lease and Ready condition
fresh, and runs the pods the real scheduler binds to it in the Docker engine of .ci/docker-up.sh:

- each pod gets a network namespace of its own: a ``pause`` container with ``--network none`` holds
  it, and the agent moves one end of a veth pair into it. The pod's IP is 198.18.N.(2k+1)/31, the
  host end 198.18.N.(2k), so the API server's service proxy (which refuses loopback addresses)
  reaches the pod over that pair, and nothing leaves the machine;
- the pod's first container joins that namespace (``--network container:PAUSE``) with the pod's
  command, args and env (values and secretKeyRefs); readiness and liveness HTTP probes run from
  here; a container that exits is restarted with back-off (CrashLoopBackOff);
- pod status (phase, podIP, containerStatuses, Initialized/ContainersReady/Ready conditions) is
  written through the real API; a pod marked for deletion is stopped and then deleted for good;
- the API server reads container logs from ``https://127.0.0.1:PORT/containerLogs/NS/POD/C``
  (this node's kubelet endpoint), authenticated by a client certificate of the cluster's CA.

    python3 .ci/kube/node_agent.py --kubeconfig K --node NAME --index N [--resource amd.com/x=1]
        [--label k=v] --ca CA --cert CERT --key KEY

SIGTERM removes the pods' containers and veths and (with --delete-node) the Node itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import docker
import docker.errors
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

PAUSE_IMAGE = "mlops/python-base:bookworm"     # built by .ci/docker-up.sh; only runs `sleep`
POD_RANGE = ipaddress.ip_network("198.18.0.0/16")
SLOTS = 127                                     # /31 pairs per node: 198.18.N.0 .. 198.18.N.253
HEARTBEAT = 10.0
BACKOFF_MAX = 20.0


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(message: str) -> None:
    print(f"{now()} node-agent: {message}", file=sys.stderr, flush=True)


@dataclass
class Pod:
    """What this agent knows of one pod bound to its node."""
    uid: str
    name: str
    namespace: str
    slot: int
    index: int
    pause_id: str | None = None
    container_id: str | None = None
    dead_id: str | None = None
    restarts: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    next_start: float = 0.0
    backoff: float = 1.0
    next_readiness: float = 0.0
    next_liveness: float = 0.0
    readiness_successes: int = 0
    liveness_failures: int = 0
    busy: bool = False
    written: str = ""

    @property
    def host_ip(self) -> str:
        return str(POD_RANGE.network_address + self.index * 256 + 2 * self.slot)

    @property
    def ip(self) -> str:
        return str(POD_RANGE.network_address + self.index * 256 + 2 * self.slot + 1)

    @property
    def veth(self) -> str:
        return f"mlk{self.index}s{self.slot}"


def local_registry(image: str) -> bool:
    """Whether IMAGE comes from a registry on this machine: the tests reach nothing else."""
    host = image.split("/", 1)[0] if "/" in image else ""
    return host.split(":", 1)[0] in ("127.0.0.1", "localhost")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Agent:
    def __init__(self, args: argparse.Namespace):
        self.node = args.node
        self.index = args.index
        self.args = args
        config.load_kube_config(args.kubeconfig)
        self.core = client.CoreV1Api()
        self.coordination = client.CoordinationV1Api()
        self.docker = docker.from_env(timeout=120)
        self.pods: dict[str, Pod] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.label = {"mlops-kube-node": self.node}

    # -- the Node ---------------------------------------------------------------------------------
    def register(self, port: int) -> None:
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  **dict(kv.split("=", 1) for kv in self.args.label)}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.node, {"metadata": {"labels": labels}})
        capacity = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": str(SLOTS),
                    "ephemeral-storage": "50Gi", **dict(kv.split("=", 1) for kv in self.args.resource)}
        status = {"capacity": capacity, "allocatable": capacity,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                {"type": "Hostname", "address": self.node}],
                  "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                  "nodeInfo": {"kubeletVersion": "v0.0.0-mlops-node-agent", "containerRuntimeVersion": "docker://",
                               "operatingSystem": "linux", "architecture": "amd64", "machineID": self.node,
                               "systemUUID": self.node, "bootID": self.node, "kernelVersion": "",
                               "osImage": "", "kubeProxyVersion": ""},
                  "conditions": self._conditions()}
        self.core.patch_node_status(self.node, {"status": status})
        log(f"node {self.node} registered (pods 198.18.{self.index}.x, kubelet endpoint 127.0.0.1:{port})")

    def _conditions(self) -> list[dict[str, Any]]:
        stamp = now()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "mlops node agent is posting",
                 "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        others = [{"type": t, "status": "False", "reason": reason, "message": "",
                   "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                  for t, reason in (("MemoryPressure", "KubeletHasSufficientMemory"),
                                    ("DiskPressure", "KubeletHasNoDiskPressure"),
                                    ("PIDPressure", "KubeletHasSufficientPID"))]
        return [ready, *others]

    def heartbeat(self) -> None:
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                          "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                lease["spec"]["renewTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                self.coordination.patch_namespaced_lease(
                    self.node, "kube-node-lease", lease, field_manager="mlops-node-agent", force=True,
                    _content_type="application/apply-patch+yaml")
                heartbeat = [{"type": c["type"], "status": c["status"], "lastHeartbeatTime": c["lastHeartbeatTime"]}
                             for c in self._conditions()]
                self.core.patch_node_status(self.node, {"status": {"conditions": heartbeat}})
            self.stop.wait(HEARTBEAT)

    # -- pods -------------------------------------------------------------------------------------
    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.sync()
            except Exception as exc:   # the API server restarting, a transient error: try again
                log(f"sync failed: {type(exc).__name__}: {str(exc)[:200]}")
            self.stop.wait(0.5)

    def sync(self) -> None:
        items = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}").items
        seen = set()
        for pod in items:
            uid = pod.metadata.uid
            seen.add(uid)
            with self.lock:
                rt = self.pods.get(uid)
                if rt is None:
                    used = {p.slot for p in self.pods.values()}
                    slot = next(s for s in range(SLOTS) if s not in used)
                    rt = self.pods[uid] = Pod(uid, pod.metadata.name, pod.metadata.namespace, slot, self.index)
            if rt.busy:
                continue
            rt.busy = True
            if pod.metadata.deletion_timestamp:
                target = self.terminate
            elif rt.container_id is None and time.monotonic() >= rt.next_start:
                target = self.start_pod
            else:
                target = self.probe
            threading.Thread(target=self._run, args=(target, rt, pod), daemon=True).start()
        for uid in [u for u in self.pods if u not in seen]:   # deleted for good (or force-deleted)
            rt = self.pods[uid]
            if not rt.busy:
                rt.busy = True
                threading.Thread(target=self._run, args=(self.teardown, rt, None), daemon=True).start()

    def _run(self, target: Any, rt: Pod, pod: Any) -> None:
        try:
            target(rt, pod)
            if pod is not None and not pod.metadata.deletion_timestamp and rt.uid in self.pods:
                self.write_status(rt, pod)
        except Exception as exc:
            log(f"pod {rt.namespace}/{rt.name}: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            rt.busy = False

    def _env(self, pod: Any, container: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for e in container.env or []:
            if e.value_from is None:
                env[e.name] = e.value or ""
                continue
            ref = e.value_from.secret_key_ref
            if ref is None:
                continue
            try:
                secret = self.core.read_namespaced_secret(ref.name, pod.metadata.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise LookupError(f'secret "{ref.name}" not found') from None
                raise
            if ref.key not in (secret.data or {}):
                raise LookupError(f"couldn't find key {ref.key} in Secret {pod.metadata.namespace}/{ref.name}")
            env[e.name] = base64.b64decode(secret.data[ref.key]).decode()
        return env

    def _network(self, rt: Pod) -> None:
        """The pod's namespace (held by its pause container) gets one end of a veth pair and the pod IP."""
        pause = self.docker.containers.run(
            PAUSE_IMAGE, ["sleep", "infinity"], network_mode="none", detach=True,
            name=f"k8s_POD_{rt.name}_{rt.namespace}_{rt.uid[:8]}", labels={**self.label, "mlops-kube-pod": rt.uid})
        rt.pause_id = pause.id
        pause.reload()
        pid = str(pause.attrs["State"]["Pid"])
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", rt.veth)
        sh("ip", "link", "add", rt.veth, "type", "veth", "peer", "name", "eth0", "netns", pid)
        sh("ip", "addr", "add", f"{rt.host_ip}/31", "dev", rt.veth)
        sh("ip", "link", "set", rt.veth, "up")
        inside = ("nsenter", f"--net=/proc/{pid}/ns/net")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{rt.ip}/31", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "route", "add", "default", "via", rt.host_ip)

    def start_pod(self, rt: Pod, pod: Any) -> None:
        container = pod.spec.containers[0]
        try:
            env = self._env(pod, container)
        except LookupError as exc:
            rt.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            rt.next_start = time.monotonic() + 5
            return
        try:
            self.docker.images.get(container.image)
        except docker.errors.ImageNotFound:
            try:
                if not local_registry(container.image):
                    raise docker.errors.APIError("this node pulls only from registries on 127.0.0.1")
                self.docker.images.pull(container.image)
            except docker.errors.APIError as exc:
                reason = "ImagePullBackOff" if rt.state.get("waiting", {}).get("reason") == "ErrImagePull" \
                    else "ErrImagePull"
                rt.state = {"waiting": {"reason": reason,
                                        "message": f'Back-off pulling image "{container.image}": '
                                                   f"{exc.explanation or exc}"}}
                rt.next_start = time.monotonic() + 5
                return
        try:
            if rt.pause_id is None:
                self._network(rt)
            run = self.docker.containers.run(
                container.image, command=container.args, entrypoint=container.command, environment=env,
                network_mode=f"container:{rt.pause_id}", detach=True,
                name=f"k8s_{container.name}_{rt.name}_{rt.namespace}_{rt.uid[:8]}_{rt.restarts}",
                labels={**self.label, "mlops-kube-pod": rt.uid})
        except Exception as exc:
            rt.state = {"waiting": {"reason": "CreateContainerError", "message": str(exc)[:300]}}
            rt.next_start = time.monotonic() + 5
            return
        rt.container_id = run.id
        if rt.dead_id:
            self._remove(rt.dead_id)
            rt.dead_id = None
        started = time.monotonic()
        rt.state = {"running": {"startedAt": now()}}
        ready = container.readiness_probe
        rt.next_readiness = started + float(ready.initial_delay_seconds or 0) if ready else started
        live = container.liveness_probe
        rt.next_liveness = started + float(live.initial_delay_seconds or 0) + float(live.period_seconds or 10) \
            if live else 0.0

    def _port(self, container: Any, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return next(int(p.container_port) for p in container.ports or [] if p.name == port)

    def _get(self, rt: Pod, container: Any, probe: Any) -> bool:
        get = probe.http_get
        try:
            conn = http.client.HTTPConnection(rt.ip, self._port(container, get.port),
                                              timeout=float(probe.timeout_seconds or 1))
            conn.request("GET", get.path or "/")
            ok = 200 <= conn.getresponse().status < 400
            conn.close()
            return ok
        except (OSError, StopIteration):
            return False

    def probe(self, rt: Pod, pod: Any) -> None:
        if rt.container_id is None:
            return
        container = pod.spec.containers[0]
        try:
            state = self.docker.containers.get(rt.container_id).attrs.get("State") or {}
        except docker.errors.NotFound:
            state = {"Status": "exited", "ExitCode": 137}
        if state.get("Status") in ("exited", "dead"):
            code = int(state.get("ExitCode") or 0)
            self._exited(rt, code, "Error" if code else "Completed")
            return
        stamp = time.monotonic()
        ready = container.readiness_probe
        if ready and ready.http_get and stamp >= rt.next_readiness:
            ok = self._get(rt, container, ready)
            rt.readiness_successes = rt.readiness_successes + 1 if ok else 0
            rt.ready = ok and rt.readiness_successes >= int(ready.success_threshold or 1)
            rt.next_readiness = stamp + float(ready.period_seconds or 10)
        elif not ready:
            rt.ready = True
        live = container.liveness_probe
        if live and live.http_get and stamp >= rt.next_liveness:
            ok = self._get(rt, container, live)
            rt.liveness_failures = 0 if ok else rt.liveness_failures + 1
            rt.next_liveness = stamp + float(live.period_seconds or 10)
            if rt.liveness_failures >= int(live.failure_threshold or 3):
                with contextlib.suppress(Exception):
                    self.docker.containers.get(rt.container_id).kill()
                self._exited(rt, 137, "Error")

    def _exited(self, rt: Pod, code: int, reason: str) -> None:
        old = rt.container_id
        rt.last_state = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now()}}
        rt.restarts += 1
        rt.ready = False
        rt.readiness_successes = rt.liveness_failures = 0
        rt.container_id = None
        rt.state = {"waiting": {"reason": "CrashLoopBackOff",
                                "message": f"back-off {rt.backoff:.0f}s restarting failed container"}}
        rt.next_start = time.monotonic() + rt.backoff
        rt.backoff = min(rt.backoff * 2, BACKOFF_MAX)
        if old:   # kept for its logs until the next container runs
            if rt.dead_id:
                self._remove(rt.dead_id)
            rt.dead_id = old

    def write_status(self, rt: Pod, pod: Any) -> None:
        container = pod.spec.containers[0]
        running = "running" in rt.state
        conditions = []
        old = {c.type: c for c in (pod.status.conditions or [])}
        for ctype, value in (("Initialized", True), ("ContainersReady", rt.ready), ("Ready", rt.ready)):
            flag = "True" if value else "False"
            previous = old.get(ctype)
            stamp = previous.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ") \
                if previous is not None and previous.status == flag and previous.last_transition_time else now()
            conditions.append({"type": ctype, "status": flag, "lastTransitionTime": stamp})
        status = {"phase": "Running" if running or rt.restarts else "Pending",
                  "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                  "conditions": conditions,
                  "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "",
                                         "ready": rt.ready, "restartCount": rt.restarts, "started": running,
                                         "state": rt.state, "lastState": rt.last_state}]}
        if rt.pause_id:
            status.update(podIP=rt.ip, podIPs=[{"ip": rt.ip}])
        if not pod.status.start_time:
            status["startTime"] = now()
        text = json.dumps(status, sort_keys=True)
        if text == rt.written:
            return
        self.core.patch_namespaced_pod_status(rt.name, rt.namespace, {"status": status})
        rt.written = text

    def _remove(self, container_id: str | None, grace: int = 0) -> None:
        if not container_id:
            return
        with contextlib.suppress(Exception):
            c = self.docker.containers.get(container_id)
            if grace:
                c.stop(timeout=grace)
            c.remove(force=True)

    def teardown(self, rt: Pod, _pod: Any, grace: int = 0) -> None:
        self._remove(rt.container_id, grace)
        self._remove(rt.dead_id)
        self._remove(rt.pause_id)
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", rt.veth)   # usually gone with the namespace already
        with self.lock:
            self.pods.pop(rt.uid, None)

    def terminate(self, rt: Pod, pod: Any) -> None:
        grace = min(int(pod.spec.termination_grace_period_seconds or 30), 30)
        self.teardown(rt, pod, grace)
        with contextlib.suppress(ApiException):
            # Grace 0 in the body: with a body, the API server ignores the query's gracePeriodSeconds.
            self.core.delete_namespaced_pod(rt.name, rt.namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=rt.uid)))

    def cleanup_leftovers(self) -> None:
        """Containers and veths of an earlier run of this node (killed, not stopped)."""
        for c in self.docker.containers.list(all=True, filters={"label": f"mlops-kube-node={self.node}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"mlk{self.index}s"):
                with contextlib.suppress(subprocess.CalledProcessError):
                    sh("ip", "link", "del", name)

    def shutdown(self) -> None:
        self.stop.set()
        for rt in list(self.pods.values()):
            self.teardown(rt, None)
        time.sleep(1)              # a start under way when the signal came
        self.cleanup_leftovers()
        if self.args.delete_node:
            with contextlib.suppress(Exception):
                self.core.delete_node(self.node)
            with contextlib.suppress(Exception):
                self.coordination.delete_namespaced_lease(self.node, "kube-node-lease")


# -- the kubelet endpoint the API server reads logs from ---------------------------------------------
def log_server(agent: Agent, args: argparse.Namespace) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:   # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404)
                return
            _, ns, name, _container = parts
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            rt = next((p for p in agent.pods.values() if p.namespace == ns and p.name == name), None)
            cid = rt and (rt.container_id or rt.dead_id)
            if not cid:
                self.send_error(404, f"no container of pod {ns}/{name} has started")
                return
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
            if "tailLines" in query:
                kwargs["tail"] = int(query["tailLines"])
            follow = query.get("follow") in ("true", "1")
            try:
                c = agent.docker.containers.get(cid)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                if follow:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in c.logs(stream=True, follow=True, **kwargs):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                data = c.logs(**kwargs)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (docker.errors.NotFound, BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.load_verify_locations(args.ca)
    context.verify_mode = ssl.CERT_REQUIRED        # only the API server (its kubelet-client certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--index", type=int, required=True, help="pods get 198.18.INDEX.x (1-255, one per node)")
    parser.add_argument("--resource", action="append", default=[], help="an extended resource NAME=COUNT")
    parser.add_argument("--label", action="append", default=[], help="a node label KEY=VALUE")
    parser.add_argument("--cpu", default="4")
    parser.add_argument("--memory", default="8Gi")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--delete-node", action="store_true", help="delete the Node on SIGTERM")
    args = parser.parse_args()
    if not 1 <= args.index <= 255:
        parser.error("--index must be 1-255")
    agent = Agent(args)
    agent.cleanup_leftovers()
    server = log_server(agent, args)
    agent.register(server.server_address[1])
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    threading.Thread(target=agent.heartbeat, daemon=True).start()
    threading.Thread(target=agent.loop, daemon=True).start()
    while not agent.stop.wait(1):
        pass
    log("stopping: removing this node's containers")
    agent.shutdown()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
