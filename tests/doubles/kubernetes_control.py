"""The simulated control plane of the Kubernetes double: scheduler, deployment and ReplicaSet
controllers, and a kubelet that runs every scheduled pod's container for real in a Docker engine.

- **Scheduler**: binds a pending pod to a node whose labels match its ``nodeSelector``, whose
  ``NoSchedule``/``NoExecute`` taints it tolerates, and whose allocatable minus what bound pods
  request covers its requests (cpu, memory, pods, any extended resource such as an FPGA's).
  Otherwise PodScheduled=False/Unschedulable with the scheduler's message (``0/3 nodes are
  available: 3 Insufficient amd.com/…``) and a Warning event ``FailedScheduling``; it retries every
  tick, so a node added later gets the pod without a new apply.
- **Deployment controller**: one ReplicaSet per pod template (``pod-template-hash``, revision
  annotation; going back to an old template reuses its ReplicaSet, as a rollback does), rolling
  update by ``maxSurge``/``maxUnavailable`` (old pods go only as new ones become available), status
  (observedGeneration, replicas, updated/ready/available, conditions Available and Progressing with
  ``ProgressDeadlineExceeded`` after ``progressDeadlineSeconds`` without progress).
- **ReplicaSet controller**: pods per replica with owner references; extra pods deleted
  (unscheduled and unready first).
- **Kubelet**: stops a deleted pod's container 1 s after the pod leaves the API (requests already
  routed to it finish, as endpoints are removed before SIGTERM lands on a real node); pulls the
  image (by digest, from the local registry, unless the engine has it),
  resolves env (``value``, ``secretKeyRef``; a missing Secret is CreateContainerConfigError), runs
  the container with the pod's command/args, probes readiness and liveness over HTTP, restarts
  exited containers with back-off (CrashLoopBackOff, lastState.terminated, restartCount), serves
  logs. **The one deviation, host networking**: the engine here has no bridge network, so every
  container runs with ``network_mode=host`` and the kubelet gives each pod its own ports on
  127.0.0.1 by rewriting the container's ``--port``/``--probe-port``/``--host`` arguments; probes,
  the service proxy and pod proxy map a container port (by number or name) to that host port. Pod
  IPs are reported as 127.0.0.1.

Not emulated: the HPA controller (HPAs are stored, not acted on), preemption, resource limits in
the engine, init containers, volumes, graceful termination periods (containers get 5 s), and the
real back-off times (1 s doubling to 8 s instead of 10 s to 5 min).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kubernetes_store import BY_KIND, Store, now

DEPLOY, RS, POD, NODE, EVENT, SECRET = (BY_KIND[k] for k in ("Deployment", "ReplicaSet", "Pod", "Node", "Event",
                                                             "Secret"))
REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
IMAGE_ERRORS_BACKOFF = 2.0


# -- quantities -----------------------------------------------------------------------------------
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}


def quantity(value: Any) -> float:
    text = str(value)
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    total: dict[str, float] = {"pods": 1}
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for name, q in merged.items():
            total[name] = total.get(name, 0) + quantity(q)
    return total


def _cond(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def pod_ready(pod: dict[str, Any]) -> bool:
    c = _cond(pod, "Ready")
    return bool(c and c["status"] == "True")


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(r.get("uid") == owner["metadata"]["uid"] for r in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return int(-(-exact // 1)) if round_up else int(exact)
    return int(value or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the kubelet's record of one pod ------------------------------------------------------------
@dataclass
class PodRuntime:
    uid: str
    name: str
    namespace: str
    port: int                                   # the host port standing in for the pod's IP:containerPort
    probe_port: int = 0                         # the same for the runtime's --probe-port
    container_id: str | None = None
    restarts: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    next_readiness: float = 0.0
    next_liveness: float = 0.0
    liveness_failures: int = 0
    readiness_successes: int = 0
    busy: bool = False
    gone: bool = False
    dead_id: str | None = None          # the last exited container, kept for its logs


class ControlPlane:
    """Runs the controllers every ``tick`` seconds on a thread; the kubelet's engine work on others."""

    def __init__(self, store: Store, *, docker_client: Any | None, instance: str, tick: float = 0.2):
        self.store = store
        self.docker = docker_client
        self.instance = instance
        self.tick = tick
        self.runtimes: dict[str, PodRuntime] = {}
        self.progress: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.on_delete.append(self._deleted)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="k8s-double-control")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.docker is not None:
            # sparse: no inspect per container, which fails for one a kubelet thread removes meanwhile
            for c in self.docker.containers.list(all=True, sparse=True,
                                                 filters={"label": f"k8s-double={self.instance}"}):
                with contextlib.suppress(Exception):
                    c.remove(force=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                with self.store.lock:
                    self._deployments()
                    self._replica_sets()
                    self._schedule()
                    self._kubelet_sync()
            except Exception as exc:   # a bug in the double must show, not kill the loop silently
                print(f"k8s-double: control loop error: {type(exc).__name__}: {exc}", flush=True)

    # -- deployment controller ------------------------------------------------------------------
    def _deployments(self) -> None:
        for d in list(self.store.items(DEPLOY)):
            ns = d["metadata"]["namespace"]
            template = d["spec"]["template"]
            digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
            owned = [rs for rs in self.store.items(RS, ns) if _owned_by(rs, d)]
            revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) for rs in owned]
            new = next((rs for rs in owned if rs["metadata"]["labels"].get(HASH) == digest), None)
            if new is None:
                new = self._new_replica_set(d, digest, max(revisions, default=0) + 1)
                owned.append(new)
            elif int(new["metadata"]["annotations"][REVISION]) < max(revisions):
                new["metadata"]["annotations"][REVISION] = str(max(revisions) + 1)   # a rollback reuses it
                self.store.touch(new)
            revision = new["metadata"]["annotations"][REVISION]
            if d["metadata"].setdefault("annotations", {}).get(REVISION) != revision:
                d["metadata"]["annotations"][REVISION] = revision
                self.store.touch(d)
            self._roll(d, new, [rs for rs in owned if rs is not new])

    def _new_replica_set(self, d: dict[str, Any], digest: str, revision: int) -> dict[str, Any]:
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH] = digest
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH] = digest
        body = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{d['metadata']['name']}-{digest}", "namespace": d["metadata"]["namespace"],
                             "labels": dict(template["metadata"]["labels"]),
                             "annotations": {REVISION: str(revision)}, "ownerReferences": [_owner_ref(d)]},
                "spec": {"replicas": 0, "selector": selector, "template": template}}
        self.store.create(RS, d["metadata"]["namespace"], body, manager="kube-controller-manager")
        return self.store.peek(RS, d["metadata"]["namespace"], body["metadata"]["name"])  # type: ignore[return-value]

    def _roll(self, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]]) -> None:
        desired = int(d["spec"].get("replicas", 1))
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_available = int((new.get("status") or {}).get("availableReplicas") or 0)
        old_total = sum(int(rs["spec"].get("replicas", 0)) for rs in old)
        want_new = min(desired, max(int(new["spec"]["replicas"]), desired + surge - old_total))
        if new["spec"]["replicas"] != want_new:
            new["spec"]["replicas"] = want_new
            self.store.touch(new)
        keep_old = max(0, desired - unavailable - new_available)
        for rs in sorted(old, key=lambda r: int(r["metadata"]["annotations"].get(REVISION, 0))):
            reduce = max(0, old_total - keep_old)
            current = int(rs["spec"].get("replicas", 0))
            target = max(0, current - reduce)
            if target != current:
                rs["spec"]["replicas"] = target
                old_total -= current - target
                self.store.touch(rs)
        self._deployment_status(d, new, old, desired, unavailable)

    def _deployment_status(self, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]], desired: int,
                           unavailable: int) -> None:
        def st(rs: dict[str, Any], key: str) -> int:
            return int((rs.get("status") or {}).get(key) or 0)

        every = [new, *old]
        replicas = sum(st(rs, "replicas") for rs in every)
        updated = st(new, "replicas")
        ready = sum(st(rs, "readyReplicas") for rs in every)
        available = sum(st(rs, "availableReplicas") for rs in every)
        complete = updated == desired and replicas == updated and st(new, "availableReplicas") == desired
        uid = d["metadata"]["uid"]
        mark = f"{new['metadata']['name']}:{updated}:{st(new, 'availableReplicas')}:{complete}"
        last = self.progress.get(uid)
        stamp = time.monotonic()
        if last is None or last[0] != mark:
            self.progress[uid] = (mark, stamp)
            last = self.progress[uid]
        old_status = d.get("status") or {}
        conditions = {c["type"]: c for c in old_status.get("conditions") or []}
        deadline = int(d["spec"].get("progressDeadlineSeconds", 600))
        rs_name = new["metadata"]["name"]
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif stamp - last[1] > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        avail = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.") \
            if available >= desired - unavailable else \
            ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        for ctype, (status, reason, message) in (("Available", avail), ("Progressing", progressing)):
            prev = conditions.get(ctype)
            if prev is None or (prev["status"], prev["reason"], prev["message"]) != (status, reason, message):
                conditions[ctype] = {"type": ctype, "status": status, "reason": reason, "message": message,
                                     "lastUpdateTime": now(), "lastTransitionTime": now()}
        status = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": replicas,
                  "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
                  "unavailableReplicas": max(0, replicas - available),
                  "conditions": [conditions["Available"], conditions["Progressing"]]}
        self.store.write_status(DEPLOY, d, status)

    # -- replica set controller -----------------------------------------------------------------
    def _replica_sets(self) -> None:
        for rs in list(self.store.items(RS)):
            ns = rs["metadata"]["namespace"]
            pods = [p for p in self.store.items(POD, ns) if _owned_by(p, rs)]
            want = int(rs["spec"].get("replicas", 1))
            while len(pods) < want:
                template = rs["spec"]["template"]
                body = {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"{rs['metadata']['name']}-{uuid.uuid4().hex[:5]}", "namespace": ns,
                                     "labels": dict(template["metadata"].get("labels") or {}),
                                     "ownerReferences": [_owner_ref(rs)]},
                        "spec": copy.deepcopy(template["spec"])}
                self.store.create(POD, ns, body, manager="kube-controller-manager")
                pod = self.store.peek(POD, ns, body["metadata"]["name"])
                self.store.write_status(POD, pod, {"phase": "Pending", "conditions": []})  # type: ignore[arg-type]
                pods.append(pod)   # type: ignore[arg-type]
            if len(pods) > want:
                pods.sort(key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p),
                                         p["metadata"]["creationTimestamp"]))
                for p in pods[:len(pods) - want]:
                    self.store.delete(POD, ns, p["metadata"]["name"])
                pods = pods[len(pods) - want:]
            ready = sum(1 for p in pods if pod_ready(p))
            self.store.write_status(RS, rs, {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                                             "observedGeneration": rs["metadata"].get("generation", 1)})

    # -- scheduler ------------------------------------------------------------------------------
    def _schedule(self) -> None:
        nodes = sorted(self.store.items(NODE), key=lambda n: n["metadata"]["name"])
        used: dict[str, dict[str, float]] = {n["metadata"]["name"]: {} for n in nodes}
        pending = []
        for pod in self.store.items(POD):
            node = pod["spec"].get("nodeName")
            if node:
                for k, v in pod_requests(pod).items():
                    used.setdefault(node, {})[k] = used.setdefault(node, {}).get(k, 0) + v
            else:
                pending.append(pod)
        for pod in sorted(pending, key=lambda p: p["metadata"]["creationTimestamp"]):
            wants = pod_requests(pod)
            reasons: dict[str, int] = {}
            chosen = None
            for n in nodes:
                why = self._unfit(n, pod, wants, used[n["metadata"]["name"]])
                if why is None:
                    chosen = n
                    break
                for w in why:
                    reasons[w] = reasons.get(w, 0) + 1
            if chosen is not None:
                name = chosen["metadata"]["name"]
                pod["spec"]["nodeName"] = name
                for k, v in wants.items():
                    used[name][k] = used[name].get(k, 0) + v
                status = copy.deepcopy(pod.get("status") or {})
                status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
                status["conditions"].append({"type": "PodScheduled", "status": "True", "lastTransitionTime": now()})
                self.store.write_status(POD, pod, status)
                self.store.touch(pod)
                continue
            message = (f"0/{len(nodes)} nodes are available: "
                       + ", ".join(f"{count} {why}" for why, count in sorted(reasons.items())) + "."
                       if nodes else "no nodes available to schedule pods")
            self._unschedulable(pod, message)

    @staticmethod
    def _unfit(node: dict[str, Any], pod: dict[str, Any], wants: dict[str, float],
               used: dict[str, float]) -> list[str] | None:
        why = []
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
            why.append("node(s) didn't match Pod's node affinity/selector")
        tolerations = pod["spec"].get("tolerations") or []
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint["key"])
                       or (t.get("key") == taint["key"] and t.get("value") == taint.get("value"))
                       for t in tolerations):
                why.append(f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}")
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for res, amount in sorted(wants.items()):
            have = quantity(allocatable.get(res, 0)) - used.get(res, 0)
            if amount > have + 1e-9:
                why.append("Too many pods" if res == "pods" else f"Insufficient {res}")
        return why or None

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        status = copy.deepcopy(pod.get("status") or {})
        status["phase"] = "Pending"
        current = _cond(pod, "PodScheduled")
        if current and current.get("message") == message:
            return
        status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "PodScheduled"]
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": message, "lastTransitionTime": now()})
        self.store.write_status(POD, pod, status)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": ns},
                 "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"],
                                    "apiVersion": "v1"},
                 "reason": "FailedScheduling", "message": message, "type": "Warning", "count": 1,
                 "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "default-scheduler"},
                 "reportingComponent": "default-scheduler"}
        self.store.create(EVENT, ns, event, manager="default-scheduler")

    # -- kubelet --------------------------------------------------------------------------------
    def _deleted(self, kind: Any, obj: dict[str, Any]) -> None:
        if kind.kind != "Pod":
            return
        runtime = self.runtimes.pop(obj["metadata"]["uid"], None)
        if runtime is not None:
            runtime.gone = True
            for cid in (runtime.container_id, runtime.dead_id):
                if cid:   # a request routed to the pod just before it left still finds it (endpoints lag)
                    threading.Thread(target=self._remove_container, args=(cid,), kwargs={"grace": 1.0},
                                     daemon=True).start()

    def _remove_container(self, container_id: str, *, grace: float = 0.0) -> None:
        if grace:
            time.sleep(grace)
        with contextlib.suppress(Exception):
            c = self.docker.containers.get(container_id)
            c.stop(timeout=5)
            c.remove(force=True)

    def _kubelet_sync(self) -> None:
        stamp = time.monotonic()
        for pod in list(self.store.items(POD)):
            if not pod["spec"].get("nodeName"):
                continue
            uid = pod["metadata"]["uid"]
            rt = self.runtimes.get(uid)
            if rt is None:
                rt = PodRuntime(uid, pod["metadata"]["name"], pod["metadata"]["namespace"], free_port(),
                                free_port())
                self.runtimes[uid] = rt
            if not rt.busy:
                if rt.container_id is None and stamp >= rt.next_start:
                    rt.busy = True
                    threading.Thread(target=self._start, args=(rt, copy.deepcopy(pod)), daemon=True).start()
                elif rt.container_id is not None:
                    rt.busy = True
                    threading.Thread(target=self._probe, args=(rt, copy.deepcopy(pod)), daemon=True).start()
            self._pod_status(pod, rt)

    def _pod_status(self, pod: dict[str, Any], rt: PodRuntime) -> None:
        container = pod["spec"]["containers"][0]
        status = copy.deepcopy(pod.get("status") or {})
        running = "running" in rt.state
        status["phase"] = "Running" if running else "Pending"
        status["hostIP"] = status["podIP"] = "127.0.0.1"
        status["containerStatuses"] = [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": rt.ready,
            "restartCount": rt.restarts, "started": running, "state": copy.deepcopy(rt.state),
            "lastState": copy.deepcopy(rt.last_state)}]
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        for ctype, value in (("Initialized", True), ("ContainersReady", rt.ready), ("Ready", rt.ready)):
            flag = "True" if value else "False"
            if conditions.get(ctype, {}).get("status") != flag:
                conditions[ctype] = {"type": ctype, "status": flag, "lastTransitionTime": now()}
        status["conditions"] = [conditions[k] for k in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                                if k in conditions]
        self.store.write_status(POD, pod, status)

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        env = {}
        ns = pod["metadata"]["namespace"]
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                import base64

                with self.store.lock:
                    secret = self.store.peek(SECRET, ns, ref["name"])
                    data = dict((secret or {}).get("data") or {})
                if secret is None:
                    raise LookupError(f'secret "{ref["name"]}" not found')
                if ref["key"] not in data:
                    raise LookupError(f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
                env[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    @staticmethod
    def _args(container: dict[str, Any], port: int, probe_port: int) -> list[str]:
        args = list(container.get("args") or [])
        for flag, value in (("--port", str(port)), ("--host", "127.0.0.1")):
            if flag in args[:-1]:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        if "--probe-port" in args[:-1]:
            args[args.index("--probe-port") + 1] = str(probe_port)
        return args

    @staticmethod
    def _container_port(container: dict[str, Any], port: Any) -> int | None:
        """A container port given by number or by name (None: not declared)."""
        for p in container.get("ports") or []:
            if str(port) in (p.get("name"), str(p.get("containerPort"))):
                return int(p["containerPort"])
        return int(port) if str(port).isdigit() else None

    def _host_port(self, rt: PodRuntime, container: dict[str, Any], port: Any) -> int:
        """Where the pod's container ``port`` listens on 127.0.0.1 (its --probe-port, else its --port)."""
        number = self._container_port(container, port)
        args = list(container.get("args") or [])
        if "--probe-port" in args[:-1] and number is not None and str(number) == args[args.index("--probe-port") + 1]:
            return rt.probe_port
        return rt.port

    def _start(self, rt: PodRuntime, pod: dict[str, Any]) -> None:
        import docker.errors

        container = pod["spec"]["containers"][0]
        try:
            try:
                env = self._env(pod, container)
            except LookupError as exc:
                rt.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                rt.next_start = time.monotonic() + IMAGE_ERRORS_BACKOFF
                return
            image = container["image"]
            try:
                self.docker.images.get(image)
            except docker.errors.ImageNotFound:
                try:
                    self.docker.images.pull(image)
                except docker.errors.APIError as exc:
                    reason = "ImagePullBackOff" if rt.state.get("waiting", {}).get("reason") == "ErrImagePull" \
                        else "ErrImagePull"
                    rt.state = {"waiting": {"reason": reason, "message": f'Back-off pulling image "{image}": '
                                                                        f"{exc.explanation or exc}"}}
                    rt.next_start = time.monotonic() + IMAGE_ERRORS_BACKOFF
                    return
            if rt.gone or self._stop.is_set():
                return
            run = self.docker.containers.run(
                image, command=self._args(container, rt.port, rt.probe_port), entrypoint=container.get("command"),
                environment=env, network_mode="host", detach=True,
                name=f"k8sd-{rt.name}-{rt.restarts}-{uuid.uuid4().hex[:4]}",
                labels={"k8s-double": self.instance, "k8s-double.pod": rt.uid})
            if rt.gone or self._stop.is_set():
                self._remove_container(run.id)
                return
            rt.container_id = run.id
            if rt.dead_id:
                self._remove_container(rt.dead_id)
                rt.dead_id = None
            rt.started = time.monotonic()
            rt.state = {"running": {"startedAt": now()}}
            probe = container.get("readinessProbe") or {}
            rt.next_readiness = rt.started + float(probe.get("initialDelaySeconds", 0))
            live = container.get("livenessProbe") or {}
            rt.next_liveness = rt.started + float(live.get("initialDelaySeconds", 0)) + \
                float(live.get("periodSeconds", 10))
        except Exception as exc:
            rt.state = {"waiting": {"reason": "CreateContainerError", "message": str(exc)[:300]}}
            rt.next_start = time.monotonic() + IMAGE_ERRORS_BACKOFF
        finally:
            rt.busy = False

    def _get(self, port: int, path: str, timeout: float) -> bool:
        import http.client

        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", path)
            ok = 200 <= conn.getresponse().status < 400
            conn.close()
            return ok
        except OSError:
            return False

    def _probe(self, rt: PodRuntime, pod: dict[str, Any]) -> None:
        import docker.errors

        container = pod["spec"]["containers"][0]
        try:
            try:
                c = self.docker.containers.get(rt.container_id)
                state = c.attrs.get("State") or {}
            except docker.errors.NotFound:
                state = {"Status": "exited", "ExitCode": 137}
            if state.get("Status") in ("exited", "dead"):
                self._exited(rt, int(state.get("ExitCode") or 0), "Error" if state.get("ExitCode") else "Completed")
                return
            stamp = time.monotonic()
            ready_probe = container.get("readinessProbe")
            if ready_probe and stamp >= rt.next_readiness:
                ok = self._probe_once(rt, ready_probe, container)
                rt.readiness_successes = rt.readiness_successes + 1 if ok else 0
                rt.ready = rt.readiness_successes >= int(ready_probe.get("successThreshold", 1)) if ok else False
                rt.next_readiness = stamp + float(ready_probe.get("periodSeconds", 10))
            elif not ready_probe:
                rt.ready = True
            live_probe = container.get("livenessProbe")
            if live_probe and stamp >= rt.next_liveness:
                ok = self._probe_once(rt, live_probe, container)
                rt.liveness_failures = 0 if ok else rt.liveness_failures + 1
                rt.next_liveness = stamp + float(live_probe.get("periodSeconds", 10))
                if rt.liveness_failures >= int(live_probe.get("failureThreshold", 3)):
                    with contextlib.suppress(Exception):
                        c.kill()
                    self._exited(rt, 137, "Error")
        finally:
            rt.busy = False

    def _probe_once(self, rt: PodRuntime, probe: dict[str, Any], container: dict[str, Any]) -> bool:
        get = probe.get("httpGet") or {}
        port = self._host_port(rt, container, get.get("port", "http"))
        return self._get(port, get.get("path", "/"), float(probe.get("timeoutSeconds", 1)))

    def _exited(self, rt: PodRuntime, code: int, reason: str) -> None:
        old = rt.container_id
        rt.last_state = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now()}}
        rt.restarts += 1
        rt.ready = False
        rt.readiness_successes = rt.liveness_failures = 0
        rt.container_id = None
        rt.state = {"waiting": {"reason": "CrashLoopBackOff",
                                "message": f"back-off {rt.backoff:.0f}s restarting failed container"}}
        rt.next_start = time.monotonic() + rt.backoff
        rt.backoff = min(rt.backoff * 2, 8.0)
        if old:   # kept for its logs until the next container runs
            if rt.dead_id:
                self._remove_container(rt.dead_id)
            rt.dead_id = old

    # -- what the API server asks the kubelet ---------------------------------------------------
    def pod_port(self, uid: str, port: Any = None, container: dict[str, Any] | None = None) -> int | None:
        """The host port of a running pod's container ``port`` (number or name; default its main one)."""
        rt = self.runtimes.get(uid)
        if not (rt and rt.container_id):
            return None
        return self._host_port(rt, container or {}, port) if port else rt.port

    def logs(self, uid: str, *, tail: int | None, follow: bool) -> Any:
        """The container's output (a byte iterator when following), or None when it has not started."""
        rt = self.runtimes.get(uid)
        cid = rt and (rt.container_id or rt.dead_id)
        if not cid:
            return None
        c = self.docker.containers.get(cid)
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
        if tail is not None:
            kwargs["tail"] = tail
        if follow:
            return c.logs(stream=True, follow=True, **kwargs)
        return c.logs(**kwargs)
