"""An IoT Hub double: the service REST API the iotedge provider uses, and simulated edge devices.

What it emulates, from the documented REST contract (api-version 2021-04-12) and the IoT Edge docs:
- ``/configurations``: create (PUT without If-Match; an existing id is 409), update (PUT with
  If-Match: a stale etag is 412; **content is immutable**: a different ``content`` is 400, only
  targetCondition, priority, labels and metrics change), get, list (``top``), delete (If-Match
  ``*`` or the etag), ``testQueries``; ids checked (lowercase, ≤128, no ``& ^ [ ] { } \\ | " < > /``);
  at most ``limit`` (100) configurations; ``systemMetrics.results`` computed on every read.
- Deployments per device, as the hub resolves them: the highest-priority *base* deployment whose
  condition matches wins (a tie: the newest); every matching *layered* deployment (dotted
  ``properties.desired.…`` keys, no system modules) of a higher priority than that base is merged
  on top, lower priority first (our reading of module-deployment-monitoring.md; stricter than
  the hub if the hub also merges layers below the base). The device twin's
  ``configurations.<id>.status`` is Applied or Targeted. A device no deployment targets keeps its
  last desired properties (its modules keep running), as the docs say.
- Target conditions over device twins: ``*``, ``=``, ``!=``/``<>``, ``IN [..]``, ``IS_DEFINED(path)``,
  ``AND``, ``OR``, ``NOT``, parentheses; paths ``deviceId``, ``tags.…``, ``capabilities.iotEdge``, ``properties.…``.
- ``POST /devices/query`` (``SELECT * FROM devices[.modules] [WHERE …]``, continuation), device twins
  (GET, PATCH of tags as a JSON merge patch, If-Match — how a test retags a device and how the
  provider tags rollout rings; every deployment's condition is re-evaluated at once), module twins,
  direct methods on
  ``$edgeAgent``: ``GetModuleLogs`` (encoding none, contentType text, filter tail/since).
- SAS tokens: every request must carry ``SharedAccessSignature sr&sig&se&skn`` signed with the
  policy key for this host; an expired or wrong one is 401.

Simulated devices run modules for real: each device's agent (a thread) takes its merged
``$edgeAgent`` desired properties, pulls each module's image by digest from the registry with the
deployment's registryCredentials and runs it in the Docker engine (``DOCKER_HOST``), restarts it
per its restartPolicy with a backoff, and reports ``lastDesiredVersion``, ``lastDesiredStatus``
and per module ``runtimeStatus`` (running / backoff / failed / stopped), ``exitCode``,
``restartCount``, ``lastExitTimeUtc``, ``statusDescription`` (our wording: the exit code and the
module's last log line) and its ``settings``. Modules get ``IOTEDGE_DEVICEID``/``IOTEDGE_MODULEID``
/``IOTEDGE_IOTHUBHOSTNAME`` like the real agent sets.

The one deviation: the engine has no bridge network, so modules run with network_mode=host and
each device+module gets its own port on 127.0.0.1 (the image's ``--port``/``--host`` are rewritten);
the module's *reported* createOptions carry that HostPort, which is where the provider reads a
device's port from. Not emulated: system modules are not run ($edgeHub routes are stored, not
executed), no MQTT/AMQP, no device connection state, metrics are exact at once (the real hub
takes up to minutes), error bodies' codes are ours. ``Agent.crash(module, why[, image=])`` makes a
module die on one device (in its own words; with ``image``, whenever that version runs there), for
tests of failing devices without an engine.
``Hub.fail_next(429, 503)`` makes the next requests answer those statuses (Retry-After: 0), for
the retry tests (``method=``/``after=``: only that method's requests, after letting some
through: a caller interrupted halfway). ``run_modules=False`` (API tests without an
engine) acknowledges deployments and reports modules running without starting anything.

Run by hand: ``python3 tests/doubles/iotedge_double.py --serve --state-dir DIR`` (three devices:
plant3-a and plant3-b tagged site=plant-3, plant4-a site=plant-4; a user's base deployment
without our labels) writes DIR/env export lines once ready and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))   # run as a script or imported from tests
from http_base import MethodDispatch, self_signed  # noqa: E402

HOST = "127.0.0.1"
POLICY = "iothubowner"
LABEL = "mlops-iotedge-double"
_ID_OK = re.compile(r'^[a-z0-9][^A-Z&^\[\]{}\\|"<>/]{0,127}$')


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- target conditions ---------------------------------------------------------------------------
class ConditionError(ValueError):
    pass


_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<>|=|\(|\)|\[|\]|,)"
                    r"|(?P<word>[A-Za-z_$][A-Za-z0-9_$.\-]*)|(?P<star>\*))")


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConditionError(f"syntax error at position {pos}: {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "str":
            out.append(("val", value[1:-1].replace("''", "'")))
        elif kind == "num":
            out.append(("val", float(value) if "." in value else int(value)))
        elif kind == "word" and value.upper() in ("AND", "OR", "NOT", "IN"):
            out.append(("kw", value.upper()))
        elif kind == "word" and value.lower() in ("true", "false"):
            out.append(("val", value.lower() == "true"))
        else:
            out.append((kind, value))
    return out


class Condition:
    """A parsed target condition; ``matches(twin)``."""

    def __init__(self, text: str):
        self.text = text
        toks = _tokens(text)
        if toks == [("star", "*")]:
            self.tree: Any = ("all",)
            return
        if not toks:
            raise ConditionError("empty condition")
        self._t, self._i = toks, 0
        self.tree = self._or()
        if self._i != len(self._t):
            raise ConditionError(f"unexpected {self._t[self._i][1]!r}")

    def _peek(self) -> tuple[str, Any] | None:
        return self._t[self._i] if self._i < len(self._t) else None

    def _take(self, kind: str, value: Any = None) -> Any:
        tok = self._peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            raise ConditionError(f"expected {value or kind}, got {tok[1] if tok else 'end'!r}")
        self._i += 1
        return tok[1]

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == ("kw", "OR"):
            self._i += 1
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self._peek() == ("kw", "AND"):
            self._i += 1
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        tok = self._peek()
        if tok and tok[0] == "word" and tok[1].upper() == "IS_DEFINED":
            self._i += 1
            self._take("op", "(")
            path = self._take("word")
            self._take("op", ")")
            return ("defined", path)
        if self._peek() == ("kw", "NOT"):
            self._i += 1
            return ("not", self._not())
        if self._peek() == ("op", "("):
            self._i += 1
            node = self._or()
            self._take("op", ")")
            return node
        path = self._take("word")
        tok = self._peek()
        if tok == ("kw", "IN"):
            self._i += 1
            self._take("op", "[")
            values = [self._take("val")]
            while self._peek() == ("op", ","):
                self._i += 1
                values.append(self._take("val"))
            self._take("op", "]")
            return ("in", path, values)
        if tok and tok[0] == "op" and tok[1] in ("=", "!=", "<>"):
            self._i += 1
            return ("eq" if tok[1] == "=" else "ne", path, self._take("val"))
        raise ConditionError(f"expected =, != or IN after {path}")

    def matches(self, twin: dict[str, Any]) -> bool:
        return _eval(self.tree, twin)


def _lookup(twin: dict[str, Any], path: str) -> Any:
    value: Any = twin
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _eval(node: Any, twin: dict[str, Any]) -> bool:
    op = node[0]
    if op == "all":
        return True
    if op == "or":
        return _eval(node[1], twin) or _eval(node[2], twin)
    if op == "and":
        return _eval(node[1], twin) and _eval(node[2], twin)
    if op == "not":
        return not _eval(node[1], twin)
    value = _lookup(twin, node[1])
    if op == "defined":
        return value is not None
    if op == "eq":
        return value is not None and value == node[2]
    if op == "ne":
        return value is not None and value != node[2]
    return value in node[2]


# -- deployments --------------------------------------------------------------------------------
def is_layered(content: dict[str, Any]) -> bool:
    agent = (content.get("modulesContent") or {}).get("$edgeAgent") or {}
    return bool(agent) and all(k.startswith("properties.desired.") for k in agent) or agent == {}


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = copy.deepcopy(value)


def validate_configuration(body: dict[str, Any], path_id: str) -> str | None:
    """Why the hub would refuse this configuration, or None."""
    cid = body.get("id")
    if cid != path_id:
        return "id in the body differs from the id in the path"
    if not isinstance(cid, str) or not _ID_OK.match(cid):
        return f"invalid configuration id {cid!r}: up to 128 lowercase characters, none of & ^ [ ] {{ }} \\ | \" < > /"
    mc = (body.get("content") or {}).get("modulesContent")
    if not isinstance(mc, dict) or "$edgeAgent" not in mc:
        return "content.modulesContent with $edgeAgent is required"
    try:
        Condition(str(body.get("targetCondition") or ""))
    except ConditionError as exc:
        return f"invalid targetCondition: {exc}"
    if not isinstance(body.get("priority"), int) or body["priority"] < 0:
        return "priority must be a non-negative integer"
    if is_layered(body["content"]):
        if any(k.startswith("properties.desired.systemModules") for k in mc["$edgeAgent"]):
            return "a layered deployment cannot set system modules"
    else:
        desired = mc["$edgeAgent"].get("properties.desired") or {}
        for key in ("schemaVersion", "runtime", "systemModules"):
            if key not in desired:
                return f"$edgeAgent properties.desired.{key} is required in a base deployment"
        if "routes" not in ((mc.get("$edgeHub") or {}).get("properties.desired") or {}):
            return "$edgeHub properties.desired.routes is required in a base deployment"
    if len(json.dumps(mc["$edgeAgent"], separators=(",", ":"))) > 32 * 1024:
        return "the $edgeAgent desired properties exceed 32 KB"
    return None


class Hub:
    """The hub's state: configurations, device twins, per-device resolution; thread-safe."""

    def __init__(self, *, limit: int = 100, run_modules: bool = True, docker_client: Any = None):
        self.name = f"hub-{uuid.uuid4().hex[:8]}"
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.limit = limit
        self.lock = threading.RLock()
        self.configs: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.run_modules = run_modules
        self.docker = docker_client
        self.agents: dict[str, Agent] = {}
        self.host = ""
        self.requests: list[tuple[str, str]] = []
        self.faults: list[tuple[int, str | None]] = []   # (status, method) the next requests answer, for retry tests
        self.fault_skip = 0

    def fail_next(self, *statuses: int, method: str | None = None, after: int = 0) -> None:
        """The next requests (of ``method`` only, when given, and after letting ``after`` of them through)
        answer these statuses (with Retry-After: 0) before the hub answers again: throttling, an outage,
        or a caller interrupted in the middle of its work."""
        with self.lock:
            self.faults.extend((status, method) for status in statuses)
            self.fault_skip = after

    def take_fault(self, method: str) -> int | None:
        with self.lock:
            if not self.faults or self.faults[0][1] not in (None, method):
                return None
            if self.fault_skip:
                self.fault_skip -= 1
                return None
            return self.faults.pop(0)[0]

    # -- devices ----------------------------------------------------------------------------------
    def add_device(self, device_id: str, tags: dict[str, Any]) -> None:
        with self.lock:
            self.devices[device_id] = {
                "twin": {"deviceId": device_id, "etag": _etag(), "version": 1, "status": "enabled",
                         "connectionState": "Connected", "capabilities": {"iotEdge": True}, "tags": dict(tags),
                         "properties": {"desired": {}, "reported": {}}, "configurations": {}},
                "agent_desired": {}, "hub_desired": {}, "version": 0,
                "agent_reported": {"schemaVersion": "1.0", "modules": {}}, "hub_reported": {},
            }
            self._resolve()
        agent = Agent(self, device_id)
        self.agents[device_id] = agent
        agent.start()

    def set_tags(self, device_id: str, tags: dict[str, Any]) -> None:
        """Merge tags into a device twin as the hub's PATCH does (nested objects merge, a null removes a
        key), then re-resolve deployments: a retag moves devices in and out
        of deployments' target conditions at once."""
        with self.lock:
            twin = self.devices[device_id]["twin"]
            _merge_patch(twin["tags"], tags)
            twin["etag"], twin["version"] = _etag(), twin["version"] + 1
            self._resolve()

    # -- resolution -------------------------------------------------------------------------------
    def _resolve(self) -> None:
        """Each device's deployments: the winning base plus layers above it, merged; statuses."""
        for dev in self.devices.values():
            twin = dev["twin"]
            matching = [c for c in self.configs.values() if twin["capabilities"].get("iotEdge")
                        and Condition(c["targetCondition"]).matches(twin)]
            order = sorted(matching, key=lambda c: (c["priority"], c["createdTimeUtc"]))
            bases = [c for c in order if not is_layered(c["content"])]
            statuses = {c["id"]: {"status": "Targeted"} for c in matching}
            if not bases:
                twin["configurations"] = statuses
                continue   # nothing new to apply: the device keeps its last desired properties
            base = bases[-1]
            layers = [c for c in order if is_layered(c["content"]) and c["priority"] > base["priority"]]
            merged: dict[str, dict[str, Any]] = {}
            for mid, part in base["content"]["modulesContent"].items():
                merged[mid] = copy.deepcopy(part.get("properties.desired") or {})
            for layer in layers:
                for mid, part in layer["content"]["modulesContent"].items():
                    target = merged.setdefault(mid, {})
                    for key, value in part.items():
                        if key == "properties.desired":
                            target.update(copy.deepcopy(value))
                        elif key.startswith("properties.desired."):
                            _set_path(target, key[len("properties.desired."):], value)
            for c in [base, *layers]:
                statuses[c["id"]] = {"status": "Applied"}
            twin["configurations"] = statuses
            if merged != dev["hub_desired"]:
                dev["hub_desired"] = merged
                dev["version"] += 1

    def edge_agent_desired(self, device_id: str) -> tuple[dict[str, Any], int]:
        with self.lock:
            dev = self.devices[device_id]
            return copy.deepcopy(dev["hub_desired"].get("$edgeAgent") or {}), dev["version"]

    def report(self, device_id: str, reported: dict[str, Any]) -> None:
        with self.lock:
            self.devices[device_id]["agent_reported"] = reported

    def metrics(self, config: dict[str, Any]) -> dict[str, int]:
        targeted = applied = ok = failed = 0
        for dev in self.devices.values():
            status = dev["twin"]["configurations"].get(config["id"], {}).get("status")
            if status is None:
                continue
            targeted += 1
            if status != "Applied":
                continue
            applied += 1
            rep = dev["agent_reported"]
            if rep.get("lastDesiredVersion") == dev["version"]:
                if (rep.get("lastDesiredStatus") or {}).get("code") == 200:
                    ok += 1
                else:
                    failed += 1
        return {"targetedCount": targeted, "appliedCount": applied, "reportedSuccessfulCount": ok,
                "reportedFailedCount": failed}

    def shown(self, config: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(config)
        out["systemMetrics"] = {"queries": {}, "results": self.metrics(config)}
        return out

    def module_twin(self, device_id: str, module: str) -> dict[str, Any] | None:
        with self.lock:
            dev = self.devices.get(device_id)
            if dev is None:
                return None
            if module == "$edgeAgent":
                desired = {**copy.deepcopy(dev["hub_desired"].get("$edgeAgent") or {}), "$version": dev["version"]}
                reported = copy.deepcopy(dev["agent_reported"])
            elif module in dev["hub_desired"] or module == "$edgeHub":
                desired = {**copy.deepcopy(dev["hub_desired"].get(module) or {}), "$version": dev["version"]}
                reported = {}
            else:
                return None
            return {"deviceId": device_id, "moduleId": module, "etag": _etag(),
                    "properties": {"desired": desired, "reported": reported}}

    # -- configurations -----------------------------------------------------------------------------
    def put_configuration(self, cid: str, body: dict[str, Any], if_match: str | None) -> tuple[int, Any]:
        with self.lock:
            problem = validate_configuration(body, cid)
            if problem:
                return 400, {"Message": problem, "ErrorCode": "ArgumentInvalid"}
            old = self.configs.get(cid)
            if if_match is None:
                if old is not None:
                    return 409, {"Message": f"configuration {cid} already exists", "ErrorCode": "ConfigurationExists"}
                if len(self.configs) >= self.limit:
                    return 409, {"Message": f"the hub holds {self.limit} configurations, its limit",
                                 "ErrorCode": "ConfigurationCountLimitExceeded"}
                stored = {k: copy.deepcopy(body.get(k)) for k in ("id", "schemaVersion", "labels", "content",
                                                                    "targetCondition", "priority", "metrics")}
                stored.update(etag=_etag(), createdTimeUtc=now_utc(), lastUpdatedTimeUtc=now_utc())
                stored["labels"] = stored["labels"] or {}
                self.configs[cid] = stored
                self._resolve()
                return 201, self.shown(stored)
            if old is None:
                return 404, {"Message": f"configuration {cid} not found", "ErrorCode": "ConfigurationNotFound"}
            if if_match.strip('"') not in ("*", old["etag"]):
                return 412, {"Message": "precondition failed: etag mismatch", "ErrorCode": "PreconditionFailed"}
            if body.get("content") != old["content"]:
                return 400, {"Message": "configuration content is immutable; create a new configuration",
                             "ErrorCode": "ConfigurationContentImmutable"}
            for key in ("targetCondition", "priority", "labels", "metrics"):
                if key in body:
                    old[key] = copy.deepcopy(body[key])
            old.update(etag=_etag(), lastUpdatedTimeUtc=now_utc())
            self._resolve()
            return 200, self.shown(old)

    def delete_configuration(self, cid: str, if_match: str | None) -> tuple[int, Any]:
        with self.lock:
            old = self.configs.get(cid)
            if old is None:
                return 404, {"Message": f"configuration {cid} not found", "ErrorCode": "ConfigurationNotFound"}
            if if_match is None:
                return 400, {"Message": "If-Match is required", "ErrorCode": "ArgumentInvalid"}
            if if_match.strip('"') not in ("*", old["etag"]):
                return 412, {"Message": "precondition failed: etag mismatch", "ErrorCode": "PreconditionFailed"}
            del self.configs[cid]
            self._resolve()
            return 204, None

    def query(self, text: str) -> list[dict[str, Any]]:
        """``SELECT * FROM devices [WHERE …]`` (device twins) or ``FROM devices.modules`` (module twins)."""
        m = re.match(r"^\s*SELECT\s+\*\s+FROM\s+(?P<what>devices\.modules|devices)(?:\s+WHERE\s+(?P<cond>.+))?\s*$",
                     text, re.I | re.S)
        if not m:
            raise ConditionError("only SELECT * FROM devices[.modules] [WHERE condition] is emulated")
        cond = Condition(m.group("cond") or "*")
        with self.lock:
            if m.group("what").lower() == "devices":
                return [copy.deepcopy(d["twin"]) for _, d in sorted(self.devices.items()) if cond.matches(d["twin"])]
            twins = [self.module_twin(device, module) for device in sorted(self.devices)
                     for module in ("$edgeAgent", "$edgeHub")]
            return [t for t in twins if t is not None and cond.matches(t)]

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for agent in self.agents.values():
            agent.join(timeout=30)
        if self.docker is not None:
            for c in self.docker.api.containers(all=True, filters={"label": f"{LABEL}={self.name}"}):
                with contextlib.suppress(Exception):
                    self.docker.api.remove_container(c["Id"], force=True)


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            _merge_patch(child, value)
        else:
            target[key] = copy.deepcopy(value)


def _etag() -> str:
    return base64.b64encode(secrets.token_bytes(6)).decode()


# -- simulated devices ----------------------------------------------------------------------------
def _join_options(settings: dict[str, Any]) -> dict[str, Any]:
    text, n = str(settings.get("createOptions") or ""), 1
    while f"createOptions{n:02d}" in settings:
        text += settings[f"createOptions{n:02d}"]
        n += 1
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _chunk_options(options: dict[str, Any]) -> dict[str, str]:
    text = json.dumps(options, separators=(",", ":"), sort_keys=True)
    return {("createOptions" if i == 0 else f"createOptions{i // 512:02d}"): text[i:i + 512]
            for i in range(0, len(text), 512)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Agent(threading.Thread):
    """One device's edgeAgent: run what the merged desired properties say, report back."""

    def __init__(self, hub: Hub, device_id: str):
        super().__init__(daemon=True, name=f"agent-{device_id}")
        self.hub, self.device_id = hub, device_id
        self._halt = threading.Event()
        self.ports: dict[str, int] = {}
        self.modules: dict[str, dict[str, Any]] = {}   # module -> {hash, container, restarts, ...}
        self.version = -1
        self.status: dict[str, Any] = {"code": 200}
        self.doomed: dict[str, tuple[str, str]] = {}   # module -> (image, why): that image dies here at once

    def stop(self) -> None:
        self._halt.set()

    def crash(self, module: str, why: str, *, image: str | None = None) -> None:
        """The module as it runs now dies on this device and stays down (say, a camera it needs is gone):
        reported failed with exit code 1 until a new desired version of it replaces it. With ``image``:
        the module dies whenever it runs that image here (now, or once it is deployed: a version this
        device cannot run), and no other."""
        with self.hub.lock:
            if image is not None:
                self.doomed[module] = (image, why)
            entry = self.modules.get(module)
            if entry is None or (image is not None and entry["module"].get("settings", {}).get("image") != image):
                return
            container = entry.get("container")
            entry.update(runtime="failed", exit=1, exited_at=now_utc(), description=f"exited with code 1: {why}")
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop(timeout=1)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._tick()
            except Exception as exc:   # a bug or an engine hiccup must not kill the device
                self.status = {"code": 500, "description": f"agent error: {type(exc).__name__}: {exc}"[:300]}
            self._halt.wait(0.25)

    def _tick(self) -> None:
        desired, version = self.hub.edge_agent_desired(self.device_id)
        if version != self.version:
            self.status = self._apply(desired)
            self.version = version
            self.desired = desired
        self._watch()
        self.hub.report(self.device_id, self._reported())

    def _apply(self, desired: dict[str, Any]) -> dict[str, Any]:
        if not desired:
            return {"code": 200}
        if "runtime" not in desired or "systemModules" not in desired:
            return {"code": 400, "description": "invalid configuration: no runtime or systemModules (a layered "
                                                "deployment without a base deployment)"}
        wanted = desired.get("modules") or {}
        creds = ((desired.get("runtime") or {}).get("settings") or {}).get("registryCredentials") or {}
        for name in list(self.modules):
            if name not in wanted:
                self._remove(name)
        problems = []
        for name, module in sorted(wanted.items()):
            digest = hashlib.sha256(json.dumps(module, sort_keys=True).encode()).hexdigest()[:16]
            have = self.modules.get(name)
            if have and have["hash"] == digest:
                continue
            if have:
                self._remove(name)
            try:
                self._start(name, module, digest, creds)
            except Exception as exc:
                problems.append(f"{name}: {exc}")
                self.modules[name] = {"hash": digest, "container": None, "restarts": 0, "module": module,
                                      "runtime": "failed", "description": str(exc)[:300], "exit": None}
        if problems:
            return {"code": 500, "description": "; ".join(problems)[:500]}
        return {"code": 200}

    def _start(self, name: str, module: dict[str, Any], digest: str, creds: dict[str, Any]) -> None:
        entry = {"hash": digest, "container": None, "restarts": 0, "module": module, "runtime": "running",
                 "description": "", "exit": None, "started": now_utc(), "exited_at": None, "next_start": 0.0}
        self.modules[name] = entry
        doom = self.doomed.get(name)
        if doom is not None and doom[0] == module["settings"]["image"]:
            entry.update(runtime="failed", exit=1, exited_at=now_utc(), description=f"exited with code 1: {doom[1]}")
            return
        if not self.hub.run_modules:
            return
        port = self.ports.setdefault(name, _free_port())
        image = module["settings"]["image"]
        cli = self.hub.docker
        auth = next(({"username": c["username"], "password": c["password"]} for c in creds.values()
                     if image.startswith(str(c.get("address", "")) + "/")), None)
        repo, _, ref = image.partition("@")
        cli.images.pull(repo, tag=ref or "latest", auth_config=auth)
        cmd = list(cli.images.get(image).attrs["Config"].get("Cmd") or [])
        for flag, value in (("--port", str(port)), ("--host", HOST)):
            if flag in cmd:
                cmd[cmd.index(flag) + 1] = value
            else:
                cmd += [flag, value]
        options = _join_options(module.get("settings") or {})
        hc = options.get("HostConfig") or {}
        env = {k: str(v.get("value", "")) for k, v in (module.get("env") or {}).items()}
        env.update(IOTEDGE_DEVICEID=self.device_id, IOTEDGE_MODULEID=name, IOTEDGE_IOTHUBHOSTNAME=self.hub.host)
        kwargs: dict[str, Any] = {}
        if hc.get("Memory"):
            kwargs["mem_limit"] = int(hc["Memory"])
        if hc.get("NanoCpus"):
            kwargs["nano_cpus"] = int(hc["NanoCpus"])
        entry["container"] = cli.containers.run(
            image, command=cmd, detach=True, network_mode="host", environment=env,
            name=f"{self.hub.name}-{self.device_id}-{name}-{digest[:8]}",
            labels={LABEL: self.hub.name, f"{LABEL}.device": self.device_id, f"{LABEL}.module": name,
                    # The image's mlops.* labels would be inherited; a simulated device is not a container
                    # of the local docker target that shares this engine, so it must not look like one.
                    "mlops.project": f"{LABEL}:{self.hub.name}"}, **kwargs)
        entry["port"] = port

    def _remove(self, name: str) -> None:
        entry = self.modules.pop(name, None)
        if entry and entry.get("container") is not None:
            with contextlib.suppress(Exception):
                entry["container"].remove(force=True)

    def _watch(self) -> None:
        """Restart exited modules per restartPolicy with a backoff, as the agent does."""
        for entry in self.modules.values():
            c = entry.get("container")
            if c is None:
                continue
            if entry["runtime"] == "backoff" and time.monotonic() >= entry["next_start"]:
                with contextlib.suppress(Exception):
                    c.start()
                    entry["runtime"], entry["started"] = "running", now_utc()
                continue
            if entry["runtime"] != "running":
                continue
            try:
                c.reload()
            except Exception:
                entry["runtime"], entry["description"] = "failed", "the container is gone"
                continue
            if c.status not in ("exited", "dead"):
                continue
            code = int(c.attrs.get("State", {}).get("ExitCode") or 0)
            tail = c.logs(tail=5).decode(errors="replace").strip().splitlines()
            entry["exit"], entry["exited_at"] = code, now_utc()
            entry["description"] = f"exited with code {code}" + (f": {tail[-1][:200]}" if tail else "")
            policy = entry["module"].get("restartPolicy", "always")
            if policy == "always" or (policy in ("on-failure", "on-unhealthy") and code != 0):
                entry["restarts"] += 1
                entry["runtime"] = "backoff"
                entry["next_start"] = time.monotonic() + min(0.5 * 2 ** entry["restarts"], 10.0)
            else:
                entry["runtime"] = "failed" if code else "stopped"

    def _reported(self) -> dict[str, Any]:
        modules = {}
        for name, entry in self.modules.items():
            settings = dict(entry["module"].get("settings") or {})
            options = _join_options(settings)
            if entry.get("port"):   # the deviation: the port this device+module really listens on
                binding = options.setdefault("HostConfig", {}).setdefault("PortBindings", {})
                for key in list(binding) or ["5001/tcp"]:
                    binding[key] = [{"HostPort": str(entry["port"])}]
            settings = {k: v for k, v in settings.items() if not k.startswith("createOptions")}
            settings.update(_chunk_options(options))
            modules[name] = {
                "runtimeStatus": entry["runtime"], "statusDescription": entry["description"],
                "exitCode": entry["exit"] or 0, "restartCount": entry["restarts"],
                "lastStartTimeUtc": entry.get("started"), "lastExitTimeUtc": entry.get("exited_at"),
                "status": entry["module"].get("status", "running"), "version": entry["module"].get("version"),
                "restartPolicy": entry["module"].get("restartPolicy"), "type": "docker", "settings": settings,
            }
        healthy = self.status.get("code") == 200 and all(m["runtimeStatus"] == "running" for m in modules.values())
        return {"schemaVersion": "1.0", "lastDesiredVersion": self.version,
                "lastDesiredStatus": dict(self.status), "deviceHealth": "healthy" if healthy else "unhealthy",
                "runtime": {"platform": {"os": "linux", "architecture": "x86_64"}},
                "systemModules": {"edgeAgent": {"runtimeStatus": "running"}, "edgeHub": {"runtimeStatus": "running"}},
                "modules": modules}

    def logs(self, module: str, tail: int | None, since: int | None) -> str | None:
        entry = self.modules.get(module)
        if entry is None:
            return None
        c = entry.get("container")
        if c is None:
            return ""
        kwargs: dict[str, Any] = {"timestamps": False}
        if tail is not None:
            kwargs["tail"] = int(tail)
        if since is not None:
            kwargs["since"] = int(since)
        return c.logs(**kwargs).decode(errors="replace")


# -- HTTP -----------------------------------------------------------------------------------------
def check_sas(header: str | None, host: str, key: str) -> bool:
    if not header or not header.startswith("SharedAccessSignature "):
        return False
    fields = dict(urllib.parse.parse_qsl(header[len("SharedAccessSignature "):], keep_blank_values=True))
    try:
        expiry = int(fields["se"])
    except (KeyError, ValueError):
        return False
    if fields.get("skn") != POLICY or expiry < time.time():
        return False
    resource = urllib.parse.quote(host.lower(), safe="")
    if urllib.parse.quote(fields.get("sr", ""), safe="") != resource and fields.get("sr") != resource:
        return False
    want = base64.b64encode(hmac.new(base64.b64decode(key), f"{resource}\n{expiry}".encode(),
                                     hashlib.sha256).digest()).decode()
    return hmac.compare_digest(want, fields.get("sig", ""))


class Handler(MethodDispatch, BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"
    wbufsize = -1               # one write per response (headers and body), flushed per request
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:
        return None

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else None

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        hub = self.hub
        try:
            body = self._body()
        except ValueError:
            return self._send(400, {"Message": "malformed JSON"})
        if not check_sas(self.headers.get("Authorization"), hub.host, hub.key):
            return self._send(401, {"Message": "unauthorized: missing, expired or invalid SAS token",
                                    "ErrorCode": "IotHubUnauthorizedAccess"})
        if query.get("api-version") != "2021-04-12":
            return self._send(400, {"Message": "api-version 2021-04-12 is required"})
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        hub.requests.append((method, url.path))
        fault = hub.take_fault(method)
        if fault is not None:
            return self._send(fault, {"Message": "injected fault", "ErrorCode": "ThrottlingException"},
                              {"Retry-After": "0"})
        if parts[0] == "configurations":
            return self._configurations(method, parts[1:], query, body)
        if parts == ["devices", "query"] and method == "POST":
            try:
                found = hub.query(str((body or {}).get("query") or ""))
            except ConditionError as exc:
                return self._send(400, {"Message": f"invalid query: {exc}"})
            size = int(self.headers.get("x-ms-max-item-count") or 100)
            start = int(self.headers.get("x-ms-continuation") or 0)
            page = found[start:start + size]
            more = {"x-ms-continuation": str(start + size)} if start + size < len(found) else {}
            return self._send(200, page, more)
        if parts[0] == "twins" and len(parts) >= 2:
            return self._twins(method, parts[1:], body)
        return self._send(404, {"Message": f"no route {method} {url.path}"})

    def _configurations(self, method: str, rest: list[str], query: dict[str, str], body: Any) -> None:
        hub = self.hub
        if not rest and method == "GET":
            top = int(query.get("top") or 20)
            with hub.lock:
                items = [hub.shown(c) for c in sorted(hub.configs.values(), key=lambda c: c["createdTimeUtc"])]
            return self._send(200, items[:top])
        if rest == ["testQueries"] and method == "POST":
            try:
                Condition(str((body or {}).get("targetCondition") or ""))
                error = ""
            except ConditionError as exc:
                error = str(exc)
            return self._send(200, {"targetConditionError": error, "customMetricQueryErrors": {}})
        if len(rest) != 1:
            return self._send(404, {"Message": "not found"})
        cid = rest[0]
        if method == "GET":
            with hub.lock:
                found = hub.configs.get(cid)
                return self._send(200, hub.shown(found)) if found else self._send(
                    404, {"Message": f"configuration {cid} not found", "ErrorCode": "ConfigurationNotFound"})
        if method == "PUT":
            status, answer = hub.put_configuration(cid, body or {}, self.headers.get("If-Match"))
            return self._send(status, answer)
        if method == "DELETE":
            status, answer = hub.delete_configuration(cid, self.headers.get("If-Match"))
            return self._send(status, answer)
        return self._send(405, {"Message": "method not allowed"})

    def _twins(self, method: str, rest: list[str], body: Any) -> None:
        hub = self.hub
        device = rest[0]
        if device not in hub.devices:
            return self._send(404, {"Message": f"device {device} not found", "ErrorCode": "DeviceNotFound"})
        if len(rest) == 1:
            if method == "PATCH":
                twin = hub.devices[device]["twin"]
                match = self.headers.get("If-Match")
                if match and match.strip('"') not in ("*", twin["etag"]):
                    return self._send(412, {"Message": "precondition failed: etag mismatch"})
                hub.set_tags(device, dict((body or {}).get("tags") or {}))
            with hub.lock:
                return self._send(200, copy.deepcopy(hub.devices[device]["twin"]))
        if len(rest) == 3 and rest[1] == "modules" and method == "GET":
            twin = hub.module_twin(device, rest[2])
            return self._send(200, twin) if twin else self._send(404, {"Message": "module not found"})
        if len(rest) == 4 and rest[1] == "modules" and rest[3] == "methods" and method == "POST":
            return self._method(device, rest[2], body or {})
        return self._send(404, {"Message": "not found"})

    def _method(self, device: str, module: str, body: dict[str, Any]) -> None:
        if module != "$edgeAgent" or body.get("methodName") != "GetModuleLogs":
            return self._send(404, {"Message": f"{module} has no direct method {body.get('methodName')!r}",
                                    "ErrorCode": "DeviceNotOnline"})
        payload = body.get("payload") or {}
        items = []
        agent = self.hub.agents[device]
        for item in payload.get("items") or []:
            filt = item.get("filter") or {}
            since = filt.get("since")
            text = agent.logs(str(item.get("id")), filt.get("tail"), int(since) if since else None)
            if text is None:
                return self._send(200, {"status": 400, "payload": {"message": f"module {item.get('id')} not found"}})
            items.append({"id": item.get("id"), "payload": text})
        return self._send(200, {"status": 200, "payload": items})

    def _dispatch(self, method: str) -> None:
        self._route(method)


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN), written as cert.pem / key.pem."""
    return self_signed(folder, cert_name="cert.pem", key_name="key.pem", common_name="iothub-double")


BASE_DEPLOYMENT = {
    "id": "factory-base", "schemaVersion": "1.0", "labels": {"owner": "plant-it"}, "targetCondition": "*",
    "priority": 0, "metrics": {"queries": {}},
    "content": {"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
            "modules": {}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
                                            "routes": {"upstream": "FROM /messages/* INTO $upstream"},
                                            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
    }},
}
DEVICES = {"plant3-a": {"site": "plant-3", "host": HOST}, "plant3-b": {"site": "plant-3", "host": HOST},
           "plant4-a": {"site": "plant-4", "host": HOST}}


class Double:
    """The hub on an HTTPS port of 127.0.0.1, with the three devices and the user's base deployment."""

    def __init__(self, folder: Path, *, run_modules: bool = True, limit: int = 100, base: bool = True,
                 devices: dict[str, dict[str, Any]] | None = None):
        docker_client = None
        if run_modules:
            import docker

            docker_client = docker.from_env(timeout=120)
        self.hub = Hub(limit=limit, run_modules=run_modules, docker_client=docker_client)
        self.cert, key = make_cert(folder)
        handler = type("BoundHandler", (Handler,), {"hub": self.hub})
        self.server = ThreadingHTTPServer((HOST, 0), handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.hub.host = f"{HOST}:{self.port}"
        if base:
            self.hub.put_configuration(BASE_DEPLOYMENT["id"], copy.deepcopy(BASE_DEPLOYMENT), None)
        for device, tags in (devices or DEVICES).items():
            self.hub.add_device(device, tags)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def connection_string(self) -> str:
        return f"HostName={self.hub.host};SharedAccessKeyName={POLICY};SharedAccessKey={self.hub.key}"

    def env(self, registry: str | None = None) -> dict[str, str]:
        out = {"IOTHUB_CONNECTION_STRING": self.connection_string, "IOTHUB_CA_BUNDLE": str(self.cert)}
        if registry:
            out["IOTEDGE_REGISTRY"] = registry
        return out

    def start(self) -> Double:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.hub.stop()

    def containers(self, device: str | None = None) -> list[dict[str, str]]:
        """Running module containers as {device, module, id} (one list call: no race with removals)."""
        if self.hub.docker is None:
            return []
        labels = [f"{LABEL}={self.hub.name}"] + ([f"{LABEL}.device={device}"] if device else [])
        found = self.hub.docker.api.containers(filters={"label": labels})
        return [{"device": c["Labels"].get(f"{LABEL}.device"), "module": c["Labels"].get(f"{LABEL}.module"),
                 "id": c["Id"]} for c in found]


@contextlib.contextmanager
def running(folder: Path, **kwargs: Any) -> Iterator[Double]:
    double = Double(folder, **kwargs).start()
    try:
        yield double
    finally:
        double.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    registry = os.environ.get("MLOPS_TEST_REGISTRY")
    if not registry:
        print("iotedge double: MLOPS_TEST_REGISTRY is not set (eval \"$(bash .ci/docker-up.sh)\" first)",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    double = Double(args.state_dir).start()
    try:
        tmp = args.state_dir / "env.tmp"
        tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in double.env(registry).items()))
        tmp.replace(args.state_dir / "env")
        print(f"iotedge double on https://{double.hub.host} (devices: {', '.join(DEVICES)})", file=sys.stderr)
        stop.wait()
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
