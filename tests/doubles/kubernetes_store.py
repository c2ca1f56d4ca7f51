"""The object store of the Kubernetes API double: what the API server itself does with objects.

Emulated: create (409 AlreadyExists), get/list (404 NotFound as the real Status body), label
selectors (equality ``a=b``/``a==b``/``a!=b`` and set-based ``a in (x,y)``/``a notin (x)``/``a``/
``!a``), field selectors (equality on dotted paths: ``involvedObject.name``, ``reason``,
``metadata.name``, ``spec.nodeName``…), server-side apply (creates when missing; managedFields per
field manager; fields a manager stops sending are removed unless another owns them; a field owned
by another manager with a different value is a 409 conflict unless ``force``; ``resourceVersion``
in the body is a precondition), merge patches (strategic-merge is treated as JSON merge patch:
lists replaced, not merged by key), replace, ``dryRun=All`` (validated and answered, nothing
stored), uid/resourceVersion/creationTimestamp/generation (bumped when ``spec`` changes), the
status subresource (writes to the main resource ignore ``status``; ``/status`` writes only it),
Secret ``stringData`` -> ``data``, Service ``clusterIP`` allocation, deletion with owner
propagation (Background/Foreground delete dependents at once, Orphan strips the references) and of
everything in a deleted namespace.

Not emulated: watches, deletecollection, JSON patch, admission and schema validation (objects are
stored as sent), finalizers and graceful deletion (objects go at once), list chunking, RBAC.
Lists and other arrays are atomic for field ownership (the real API merges some by key).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False),
    Kind("", "v1", "nodes", "Node", namespaced=False),
    Kind("", "v1", "pods", "Pod"),
    Kind("", "v1", "services", "Service"),
    Kind("", "v1", "secrets", "Secret", status=False),
    Kind("", "v1", "events", "Event", status=False),
    Kind("apps", "v1", "deployments", "Deployment"),
    Kind("apps", "v1", "replicasets", "ReplicaSet"),
    Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", status=False),
    Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
]
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
BY_KIND = {k.kind: k for k in KINDS}
SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "deletionTimestamp")


class ApiError(Exception):
    """An answer other than 2xx, with the real API's Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def body(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "details": self.details, "code": self.code}


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.resource} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors ------------------------------------------------------------------------------------
_SET = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate for a label selector string; a malformed one is a 400 as on the real API."""
    if not selector:
        return lambda labels: True
    tests: list[Callable[[dict[str, str]], bool]] = []
    for raw in _split_selector(selector):
        term = raw.strip()
        m = _SET.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda lb, k=key, v=values: lb.get(k) in v)
            else:
                tests.append(lambda lb, k=key, v=values: lb.get(k) not in v)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda lb, k=absent: k not in lb)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            tests.append(lambda lb, k=term: k in lb)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    if not selector:
        return lambda obj: True
    tests = []
    for term in selector.split(","):
        negate = "!=" in term
        key, value = (s.strip() for s in re.split(r"!=|==|=", term, maxsplit=1))

        def test(obj: dict[str, Any], k: str = key, v: str = value, neg: bool = negate) -> bool:
            cur: Any = obj
            for part in k.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            return (str(cur if cur is not None else "") == v) != neg

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


# -- field ownership ------------------------------------------------------------------------------
Path = tuple[str, ...]


def leaf_paths(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Leaf fields of an applied configuration; maps recurse, everything else (lists too) is a leaf."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            out.update(leaf_paths(v, (*prefix, k)))
    else:
        out[prefix] = obj
    return out


def owned(config: dict[str, Any]) -> dict[Path, Any]:
    """The fields an apply claims: everything sent except identity, server-set metadata and status."""
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items()
            if k not in ("name", "namespace", *SERVER_META)}
    body["metadata"] = meta
    return {p: v for p, v in leaf_paths(body).items() if p and not (p == ("metadata",) and v == {})}


def get_path(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def set_path(obj: dict[str, Any], path: Path, value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(obj.get(part), dict):
            obj[part] = {}
        obj = obj[part]
    obj[path[-1]] = copy.deepcopy(value)


def del_path(obj: dict[str, Any], path: Path) -> None:
    parents = []
    for part in path[:-1]:
        if not isinstance(obj.get(part), dict):
            return
        parents.append((obj, part))
        obj = obj[part]
    obj.pop(path[-1], None)
    for parent, part in reversed(parents):   # drop maps left empty
        if parent[part] == {}:
            del parent[part]
        else:
            break


_MISSING = object()


def fields_v1(paths: Any) -> dict[str, Any]:
    """managedFields' FieldsV1 rendering (``f:name`` maps) of a set of leaf paths."""
    out: dict[str, Any] = {}
    for path in sorted(paths):
        cur = out
        for part in path:
            cur = cur.setdefault(f"f:{part}", {})
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# -- the store ------------------------------------------------------------------------------------
class Store:
    """Objects by (plural, namespace, name), each with its field ownership beside it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.ownership: dict[tuple[str, str, str], dict[str, dict[Path, Any]]] = {}
        self._rv = itertools.count(1000)
        self._ips = itertools.count(10)
        self.on_delete: list[Callable[[Kind, dict[str, Any]], None]] = []

    # -- helpers --------------------------------------------------------------------------------
    def _key(self, kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (kind.plural, (namespace or "") if kind.namespaced else "", name)

    def _check_namespace(self, kind: Kind, namespace: str | None) -> None:
        if kind.namespaced and ("namespaces", "", namespace or "") not in self.objects:
            raise not_found(BY_KIND["Namespace"], namespace or "")

    def _stamp(self, kind: Kind, obj: dict[str, Any], before: dict[str, Any] | None, *, dry_run: bool) -> None:
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if before is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if "spec" in obj:
                meta["generation"] = 1
        else:
            for k in ("uid", "creationTimestamp", "generation"):
                if k in before["metadata"]:
                    meta[k] = before["metadata"][k]
            if "spec" in obj and obj.get("spec") != before.get("spec"):
                meta["generation"] = int(before["metadata"].get("generation") or 0) + 1
        self._default(kind, obj)
        if before is None or _essence(obj) != _essence(before):
            meta["resourceVersion"] = str(next(self._rv)) if not dry_run else meta.get("resourceVersion", "0")
        else:
            meta["resourceVersion"] = before["metadata"]["resourceVersion"]

    def _default(self, kind: Kind, obj: dict[str, Any]) -> None:
        spec = obj.get("spec")
        if kind.kind == "Deployment" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        if kind.kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("clusterIP", f"10.96.0.{next(self._ips) % 250 + 2}")
        if kind.kind == "Secret":
            import base64

            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj.setdefault("type", "Opaque")

    def _manager_entries(self, key: tuple[str, str, str], obj: dict[str, Any]) -> None:
        owners = self.ownership.get(key, {})
        obj["metadata"]["managedFields"] = [
            {"manager": m.split("\0")[0], "operation": m.split("\0")[1], "apiVersion": obj["apiVersion"],
             "time": now(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths)}
            for m, paths in sorted(owners.items()) if paths]

    def _store(self, kind: Kind, key: tuple[str, str, str], obj: dict[str, Any],
               owners: dict[str, dict[Path, Any]]) -> dict[str, Any]:
        self.ownership[key] = owners
        self._manager_entries(key, obj)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    # -- verbs ----------------------------------------------------------------------------------
    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self._key(kind, namespace, name))
            if obj is None:
                raise not_found(kind, name)
            return copy.deepcopy(obj)

    def peek(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself (controllers, under ``lock``)."""
        return self.objects.get(self._key(kind, namespace, name))

    def items(self, kind: Kind, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored objects of a kind (controllers, under ``lock``)."""
        for (plural, ns, _), obj in list(self.objects.items()):
            if plural == kind.plural and (namespace is None or ns == namespace):
                yield obj

    def list(self, kind: Kind, namespace: str | None, labels: str | None = None,
             fields: str | None = None) -> dict[str, Any]:
        match_labels, match_fields = label_matcher(labels), field_matcher(fields)
        with self.lock:
            items = [copy.deepcopy(o) for o in self.items(kind, namespace)
                     if match_labels(o["metadata"].get("labels") or {}) and match_fields(o)]
            rv = str(next(self._rv))
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {"resourceVersion": rv},
                "items": items}

    def create(self, kind: Kind, namespace: str | None, body: dict[str, Any], *, manager: str = "unknown",
               dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                name = meta["generateName"] + uuid.uuid4().hex[:5]
                meta["name"] = name
            if not name:
                raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value")
            if kind.namespaced:
                meta["namespace"] = namespace
            self._check_namespace(kind, namespace)
            key = self._key(kind, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists',
                               {"name": name, "group": kind.group, "kind": kind.plural})
            for k in SERVER_META:
                meta.pop(k, None)
            if kind.status and kind.kind not in ("Node",):
                obj.pop("status", None)   # status is the controllers' (nodes report their own)
            self._stamp(kind, obj, None, dry_run=dry_run)
            if dry_run:
                return obj
            return self._store(kind, key, obj, {f"{manager}\0Update": owned(obj)})

    def apply(self, kind: Kind, namespace: str | None, name: str, config: dict[str, Any], *, manager: str,
              force: bool, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of ``config`` by ``manager``."""
        if not manager:
            raise ApiError(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required "
                                              "value: is required for apply patch")
        if config.get("kind") != kind.kind or config.get("apiVersion") != kind.api_version:
            raise ApiError(400, "BadRequest", f"the apply body must be apiVersion {kind.api_version}, kind "
                                              f"{kind.kind}")
        meta = config.get("metadata") or {}
        if meta.get("managedFields"):
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        if meta.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        with self.lock:
            self._check_namespace(kind, namespace)
            key = self._key(kind, namespace, name)
            before = self.objects.get(key)
            claimed = owned(config)
            me = f"{manager}\0Apply"
            owners = {m: dict(p) for m, p in self.ownership.get(key, {}).items()}
            if before is not None and meta.get("resourceVersion") and \
                    meta["resourceVersion"] != before["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the '
                                                "object has been modified; please apply your changes to the latest "
                                                "version and try again")
            if before is None:
                obj: dict[str, Any] = {"metadata": {"name": name}}
                if kind.namespaced:
                    obj["metadata"]["namespace"] = namespace
            else:
                obj = copy.deepcopy(before)
                conflicts = []
                for other, paths in owners.items():
                    if other == me:
                        continue
                    for path in list(paths):
                        if path in claimed and get_path(obj, path) != claimed[path]:
                            conflicts.append((other.split("\0")[0], path))
                if conflicts and not force:
                    detail = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
                    raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict"
                                                    f"{'s' if len(conflicts) > 1 else ''}: {detail}")
                for other, paths in owners.items():      # forced (or equal values): the fields are shared/moved
                    if other != me:
                        for path in claimed:
                            if path in paths and force:
                                paths.pop(path)
                for path in owners.get(me, {}):          # fields this manager stopped sending
                    if path not in claimed and not any(path in p for m, p in owners.items() if m != me):
                        del_path(obj, path)
            for path, value in claimed.items():
                set_path(obj, path, value)
            owners[me] = claimed
            self._stamp(kind, obj, before, dry_run=dry_run)
            if dry_run:
                self._manager_entries(key, obj)
                return obj
            return self._store(kind, key, obj, {m: p for m, p in owners.items() if p})

    def patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any], *, manager: str,
              subresource: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            key = self._key(kind, namespace, name)
            before = self.objects.get(key)
            if before is None:
                raise not_found(kind, name)
            if subresource == "status":
                obj = copy.deepcopy(before)
                obj["status"] = merge_patch(before.get("status") or {}, patch.get("status") or {})
            else:
                obj = merge_patch(before, {k: v for k, v in patch.items() if k != "status"})
                obj["status"] = copy.deepcopy(before.get("status"))
            self._stamp(kind, obj, before, dry_run=dry_run)
            if dry_run:
                return obj
            owners = self.ownership.get(key, {})
            if subresource != "status":
                mine = owners.setdefault(f"{manager}\0Update", {})
                mine.update(owned({k: v for k, v in patch.items() if k != "status"}))
            return self._store(kind, key, obj, owners)

    def replace(self, kind: Kind, namespace: str | None, name: str, body: dict[str, Any], *, manager: str,
                subresource: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            key = self._key(kind, namespace, name)
            before = self.objects.get(key)
            if before is None:
                raise not_found(kind, name)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != before["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the '
                                                "object has been modified; please apply your changes to the latest "
                                                "version and try again")
            if subresource == "status":
                obj = copy.deepcopy(before)
                obj["status"] = copy.deepcopy(body.get("status"))
            else:
                obj = copy.deepcopy(body)
                obj["status"] = copy.deepcopy(before.get("status"))
                obj.setdefault("metadata", {})["name"] = name
                if kind.namespaced:
                    obj["metadata"]["namespace"] = namespace
            self._stamp(kind, obj, before, dry_run=dry_run)
            if dry_run:
                return obj
            return self._store(kind, key, obj, self.ownership.get(key, {}))

    def delete(self, kind: Kind, namespace: str | None, name: str, *, propagation: str | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            key = self._key(kind, namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                raise not_found(kind, name)
            gone = copy.deepcopy(obj)
            gone["metadata"]["deletionTimestamp"] = now()
            if dry_run:
                return gone
            self._remove(kind, key, propagation or "Background")
            return gone

    def _remove(self, kind: Kind, key: tuple[str, str, str], propagation: str) -> None:
        obj = self.objects.pop(key, None)
        self.ownership.pop(key, None)
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):
            refs = other["metadata"].get("ownerReferences") or []
            namespace_gone = kind.kind == "Namespace" and other_key[1] == obj["metadata"]["name"]
            if namespace_gone or any(r.get("uid") == uid for r in refs):
                if propagation == "Orphan" and not namespace_gone:
                    other["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    continue
                other_kind = next(k for k in KINDS if k.plural == other_key[0])
                self._remove(other_kind, other_key, propagation)
        for hook in self.on_delete:
            hook(kind, obj)

    # -- for controllers ------------------------------------------------------------------------
    def write_status(self, kind: Kind, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """A controller's status write (under ``lock``): bumps resourceVersion only when it changes."""
        if obj.get("status") != status:
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def touch(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))


def _essence(obj: dict[str, Any]) -> str:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return json.dumps({**obj, "metadata": meta}, sort_keys=True, default=str)
