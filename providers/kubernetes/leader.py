"""Leader election among replicas of `mlops reconcile`: one named Lease, held across cycles.

The apply lock (lease.py) is taken per write and released; a leader holds its Lease for as long
as it runs, so the same Lease code is used with a name of the user's choosing. Taking it is
``LeaseLock._try`` (create without force, or take over an expired one with the read
``resourceVersion`` as precondition). Renewal is stricter than the apply lock's: it re-reads the
Lease and writes only with that ``resourceVersion`` and only while it names this holder, so a
leader that paused past the duration finds it lost the Lease instead of overwriting the new
leader. Leaving deletes the Lease (only if still ours), so a follower takes over at its next cycle
rather than after the duration.
"""

from __future__ import annotations

import contextlib
import re
import threading

from planner.errors import ProviderError

from .client import Cluster, Conflict, NotFound
from .lease import DURATION_S, RENEW_S, LeaseLock, _now, _parse

NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class LeaderLease:
    """``try_lead`` each cycle; ``leading`` says whether writes are still allowed; ``release`` on exit."""

    def __init__(self, cluster: Cluster, namespace: str, project: str, name: str, holder: str):
        if len(name) > 253 or not NAME.fullmatch(name):
            raise ProviderError(f"--leader-elect {name!r}: a Lease name is lowercase letters, digits, '-' and '.' "
                                "(at most 253), starting and ending with a letter or digit")
        self._lock = LeaseLock(cluster, namespace, project, holder, name=name)
        self.name, self.namespace, self.identity = name, namespace, self._lock.identity
        self._acquired = _now()
        self._held = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = ""
        """Why this replica last stopped leading (for the log), empty while it never did."""

    @property
    def leading(self) -> bool:
        return self._held.is_set()

    def try_lead(self) -> str | None:
        """None when this replica leads (now or already); else who does."""
        if self.leading and self._renewer is not None and self._renewer.is_alive():
            return None
        self._held.clear()
        self._acquired = _now()
        holder = self._lock._try(self._acquired)
        if holder is not None:
            return holder
        self._held.set()
        if self._renewer is None or not self._renewer.is_alive():
            self._stop.clear()
            self._renewer = threading.Thread(target=self._renew, daemon=True, name="mlops-leader")
            self._renewer.start()
        return None

    def check(self) -> str | None:
        """Right before a write: None if the Lease still names this replica and is fresh; else why not."""
        if not self.leading:
            return "not the leader"
        try:
            spec = self._read().get("spec") or {}
        except NotFound:
            spec = {}
        except ProviderError as exc:
            return f"cannot read the leader Lease {self.namespace}/{self.name}: {exc}"
        renewed = _parse(spec.get("renewTime"))
        fresh = renewed is not None and (_now() - renewed).total_seconds() < int(
            spec.get("leaseDurationSeconds") or DURATION_S)
        if spec.get("holderIdentity") != self.identity or not fresh:
            self._lose(f"lost the leader Lease {self.namespace}/{self.name} (now held by {spec.get('holderIdentity')})")
            return self.lost
        return None

    def _lose(self, why: str) -> None:
        self.lost = why
        self._held.clear()

    def _read(self) -> dict:
        return self._lock.cluster.get("Lease", self.name, self.namespace)

    def _renew(self) -> None:
        while self._held.is_set() and not self._stop.wait(RENEW_S):
            try:
                current = self._read()
                holder = (current.get("spec") or {}).get("holderIdentity")
                if holder != self.identity:
                    self._lose(f"the leader Lease {self.namespace}/{self.name} was taken over by {holder}")
                    return   # another replica took it over: stop writing at once
                body = self._lock._body(self._acquired, current["metadata"]["resourceVersion"])
                self._lock.cluster.apply(body, manager=self._lock.manager)
            except NotFound:
                self._lose(f"the leader Lease {self.namespace}/{self.name} was deleted")
                return
            except Conflict:
                continue   # written between our read and our write: read again next round
            except Exception:   # noqa: BLE001 - a missed renewal is retried; the duration covers several
                continue

    def release(self) -> None:
        """Stop renewing and delete the Lease if it is still ours (a follower takes over next cycle)."""
        self._stop.set()
        was_leading = self.leading
        self._held.clear()
        if self._renewer is not None:
            self._renewer.join(timeout=RENEW_S + 5)
        if was_leading:
            with contextlib.suppress(ProviderError):
                if (self._read().get("spec") or {}).get("holderIdentity") == self.identity:
                    self._lock.cluster.delete("Lease", self.name, self.namespace)
