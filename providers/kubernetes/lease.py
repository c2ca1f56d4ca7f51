"""Apply's lock on the cluster: a ``coordination.k8s.io/v1`` Lease in the target's namespace.

Two CI runners on two machines share no file, but they share the cluster. The Lease is written
with server-side apply under a field manager unique to this holder and without ``force``, so a
second holder's write of ``holderIdentity`` conflicts (409) while the first holds it. It is renewed
every few seconds by a thread; a holder that dies stops renewing and the Lease expires after
``leaseDurationSeconds``, when another apply may take it over (``force`` with the expired
``resourceVersion`` as precondition, so two takers cannot both win).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from planner.errors import CancelledError, LockedError

from .client import Cluster, Conflict, NotFound
from .manifests import MANAGED_BY, label

DURATION_S = 30
RENEW_S = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseLock:
    def __init__(self, cluster: Cluster, namespace: str, project: str, holder: str, *, timeout_s: float = 120,
                 target: str | None = None, name: str | None = None):
        self.cluster = cluster
        self.namespace = namespace
        # One Lease per target: two targets of one manifest may share a namespace, and apply takes
        # each target's lock in turn (always in manifest order, so two runners cannot deadlock).
        suffix = f"-{re.sub(r'[^a-z0-9-]+', '-', target.lower()).strip('-')}" if target else ""
        self.name = name or f"mlops-lock-{project}{suffix}"[:253].rstrip("-")   # name: another Lease (leader.py)
        self.project = project
        self.identity = f"{holder} on {socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"
        self.manager = f"mlops-lock-{uuid.uuid4().hex[:12]}"
        self.timeout_s = timeout_s
        self._stop = threading.Event()

    def _body(self, acquired: dt.datetime, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {MANAGED_BY: "mlops", label("project"): self.project}}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": DURATION_S,
                         "acquireTime": _stamp(acquired), "renewTime": _stamp(_now())}}

    def _try(self, acquired: dt.datetime) -> str | None:
        """Take the Lease; None when taken, else who holds it."""
        try:
            current = self.cluster.get("Lease", self.name, self.namespace)
        except NotFound:
            current = None
        try:
            if current is None:
                self.cluster.apply(self._body(acquired), force=False, manager=self.manager)
                return None
            spec = current.get("spec") or {}
            renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
            duration = int(spec.get("leaseDurationSeconds") or DURATION_S)
            holder = spec.get("holderIdentity")
            if holder and holder != self.identity and renewed and \
                    (_now() - renewed).total_seconds() < duration:
                return str(holder)
            # Free or expired: take it over, only if nobody wrote it since we read it.
            self.cluster.apply(self._body(acquired, current["metadata"]["resourceVersion"]), manager=self.manager)
            return None
        except Conflict:
            return str((current or {}).get("spec", {}).get("holderIdentity") or "another apply")

    def _renew(self, acquired: dt.datetime) -> None:
        while not self._stop.wait(RENEW_S):
            with contextlib.suppress(Exception):   # a missed renewal is retried; the duration covers several
                self.cluster.apply(self._body(acquired), manager=self.manager)

    @contextlib.contextmanager
    def held(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """Hold the Lease for the block; waiting for another holder stops at once when ``cancel`` is set."""
        cancel = cancel or threading.Event()
        acquired = _now()
        deadline = time.monotonic() + self.timeout_s
        while True:
            holder = self._try(acquired)
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LockedError(f"the cluster lock (Lease {self.namespace}/{self.name}) is held by {holder}; "
                                  f"waited {self.timeout_s:.0f}s (target setting lock_timeout_s). It expires "
                                  f"{DURATION_S}s after its holder stops renewing it")
            if cancel.wait(1):
                raise CancelledError(f"cancelled while waiting for the cluster lock (Lease {self.namespace}/"
                                     f"{self.name}, held by {holder}); nothing was changed")
        renewer = threading.Thread(target=self._renew, args=(acquired,), daemon=True, name="mlops-lease")
        renewer.start()
        try:
            yield
        finally:
            self._stop.set()
            renewer.join(timeout=5)
            with contextlib.suppress(Exception):
                current = self.cluster.get("Lease", self.name, self.namespace)
                if (current.get("spec") or {}).get("holderIdentity") == self.identity:
                    self.cluster.delete("Lease", self.name, self.namespace)
