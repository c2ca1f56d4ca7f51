"""What a reconciler remembers between cycles (and between `--once` runs from cron).

Per resource: the desired fingerprint last seen deployed (what makes a change a *heal* rather
than a new desired change), the failed heals of the current desired fingerprint with the time
the next may start (exponential backoff, reset on success), and the last reported sync/health
(so notifications fire on transitions only). It is a cache of observations, not the truth: the
truth is read from the targets every cycle; losing the file only forgets backoff and history.

Read-modify-write happens under an flock of its own, so two reconcilers never lose each
other's updates; the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ResourceMemory:
    deployed: str | None = None
    """Desired fingerprint last seen running as specified (its spec matched the manifest's)."""
    failures: int = 0
    failed_fingerprint: str | None = None
    next_attempt: float = 0.0
    last_error: str = ""
    sync: str = ""
    health: str = ""
    stopped_reported: str = ""
    """The failed fingerprint whose giving-up was already announced (announce once per desired state)."""

    def failed_for(self, fingerprint: str | None) -> int:
        """Failed heals that count against this desired fingerprint (a new desired state starts over)."""
        return self.failures if fingerprint is not None and fingerprint == self.failed_fingerprint else 0


@dataclass(frozen=True)
class Backoff:
    """Per-resource delay after a failed heal: ``base * factor**(n-1)``, at most ``cap`` seconds."""

    base: float = 10.0
    factor: float = 3.0
    cap: float = 600.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * self.factor ** (failures - 1))


@dataclass
class ReconcileMemory:
    resources: dict[str, ResourceMemory] = field(default_factory=dict)

    def of(self, address: str) -> ResourceMemory:
        return self.resources.setdefault(address, ResourceMemory())

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "resources": {k: dict(vars(v)) for k, v in sorted(self.resources.items())}}

    @classmethod
    def from_json(cls, data: Any) -> ReconcileMemory:
        if not isinstance(data, dict) or data.get("version") != 1:
            return cls()
        known = set(ResourceMemory.__dataclass_fields__)
        resources = {str(k): ResourceMemory(**{f: v for f, v in r.items() if f in known})
                     for k, v in (data.get("resources") or {}).items() if isinstance((r := v), dict)}
        return cls(resources)


def memory_path(state_dir: Path) -> Path:
    return state_dir / "reconcile" / "memory.json"


@contextlib.contextmanager
def remembered(state_dir: Path) -> Iterator[ReconcileMemory]:
    """Load, let the caller change, save — all under the memory's own lock."""
    path = memory_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "memory.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = _read_text(path)
        memory = _parse(before)
        yield memory
        text = json.dumps(memory.to_json(), sort_keys=True, separators=(",", ":"))
        if text != before:   # a steady state writes nothing
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)


def read_memory(state_dir: Path) -> ReconcileMemory:
    return _parse(_read_text(memory_path(state_dir)))


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _parse(text: str) -> ReconcileMemory:
    try:
        return ReconcileMemory.from_json(json.loads(text)) if text else ReconcileMemory()
    except (ValueError, TypeError):
        return ReconcileMemory()
