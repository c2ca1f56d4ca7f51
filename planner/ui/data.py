"""What the status page shows, as JSON: one observation (live state + plan), shaped per service.

One snapshot serves every request for a few seconds (``Snapshots``), so a page left open, or
several, cost one live read per refresh interval, not one per request. Everything returned is
passed through the redactor, and plan values come from the plan's own masking: no secret
reaches the page or its JSON.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from providers.base import Reachable

from ..addresses import Address
from ..errors import MlopsError
from ..graph_manifest import graph_of
from ..graph_render import with_plan
from ..reconcile import IN_SYNC, Observation, Options, Reconciler, learn, suspended_services
from ..reconcile_state import read_memory
from ..redact import REDACTOR
from ..render_text import render_change
from ..resources import FAILED, UNHEALTHY, UNSCHEDULABLE
from .svg import to_svg

FAILING = (FAILED, UNHEALTHY, UNSCHEDULABLE)
LOG_LINES = 50


@dataclass
class Snapshot:
    taken: float
    seen: Observation | None
    state: dict[str, Any]
    svg: str


def build_state(seen: Observation) -> dict[str, Any]:
    """The header and one row per service, failing rows first."""
    project = seen.project
    memory = read_memory(project.manifest.state_dir)   # read only: the page never writes
    learn(memory, seen.plan, seen.live)
    reports = Reconciler(project.manifest.path, Options()).service_reports(
        seen, memory, suspended_services(project.manifest))
    rows = []
    for report in reports:
        address = Address("service", report.name)
        live, desired = seen.live.get(address), seen.desired.get(address)
        spec = (live.spec if live is not None else None) or (desired.spec if desired is not None else {})
        details = live.details if live is not None else {}
        git = details.get("git") or {}
        rows.append({
            "name": report.name,
            "target": report.target,
            "kind": (live.provider if live is not None else None) or _kind(project, report.target),
            "health": report.health,
            "counts": report.counts,
            "sync": "not deployed" if live is None and report.sync != IN_SYNC else report.sync,
            "reason": _one_line(report.message),
            "action": report.action,
            "suspended": report.suspended,
            "models": [_model(m) for m in spec.get("models", [])],
            "endpoint": details.get("endpoint"),
            "commit": (git.get("commit") or "")[:12] or None,
            "dirty": bool(git.get("dirty")),
            "age": _age(details.get("started") or details.get("created")),
            "failing": report.health in FAILING,
        })
    rows.sort(key=lambda r: (0 if r["failing"] else 1 if r["sync"] != IN_SYNC else 2, r["name"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["health"]] = counts.get(r["health"], 0) + 1
        counts[r["sync"]] = counts.get(r["sync"], 0) + 1
    git = project.git()
    return {
        "project": project.manifest.project,
        "manifest": project.manifest.display,
        "commit": (git.get("commit") or "")[:12] or None,
        "branch": git.get("branch"),
        "dirty": bool(git.get("dirty")),
        "counts": dict(sorted(counts.items())),
        "services": rows,
        "plan": seen.plan.counts(),
    }


def service_detail(seen: Observation, name: str) -> dict[str, Any]:
    """The plan diff (the terminal renderer's lines), the live object as the target reports it, the log tail."""
    change = next((c for c in seen.plan.changes if c.address.kind == "service" and c.address.name == name), None)
    if change is None:
        raise KeyError(name)
    live = seen.live.get(change.address)
    masked = change.to_json()
    detail: dict[str, Any] = {
        "name": name,
        "action": change.action.value,
        "plan": render_change(change) if change.action.value != "no-op" else [],
        "live": None,
        "logs": [],
        "logs_error": "",
    }
    if live is not None:
        detail["live"] = {"target": live.target, "provider": live.provider, "status": live.status,
                          "health": live.condition.to_json(), "spec": masked["change"]["before"],
                          "details": _plain(live.details)}
        if live.rollout is not None:   # where a rollout the target keeps stands
            from ..rollout.resume import position

            detail["live"]["rollout"] = {"position": position(live.rollout), **live.rollout.to_json()}
        try:
            provider = seen.project.provider_for(live)
            if not isinstance(provider, Reachable):
                raise MlopsError(f"{provider.describe()} offers no way to read its services' logs from here")
            lines = list(provider.logs(live, tail=LOG_LINES))
            detail["logs"] = [line.rstrip("\n") for line in lines[-LOG_LINES:]]
        except (MlopsError, OSError) as exc:
            detail["logs_error"] = str(exc)
    return scrub(detail)


def scrub(value: Any) -> Any:
    """The redactor over a JSON value (every string in it, keys included)."""
    return json.loads(REDACTOR.scrub(json.dumps(value, default=str)))


def _plain(details: Any) -> Any:
    """Live details without anything that is not plain data (and without local file paths of logs)."""
    return {k: v for k, v in json.loads(json.dumps(details, default=str)).items() if k not in ("log",)}


def _model(ref: str) -> dict[str, str]:
    name, _, rest = ref.partition(":")
    version = rest.split("@", 1)[0]
    return {"name": name, "version": version}


def _kind(project: Any, target: str | None) -> str | None:
    config = project.manifest.targets.get(target or "")
    return config.get("provider") if config else None


def _age(started: Any) -> str | None:
    if not isinstance(started, str):
        return None
    try:
        when = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            when = datetime.fromisoformat(started)
        except ValueError:
            return None
    seconds = max(0, int(time.time() - when.timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _one_line(text: str) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= 200 else line[:199] + "…"


class Snapshots:
    """The latest observation, refreshed at most every ``max_age`` seconds (one at a time)."""

    def __init__(self, manifest: Path, max_age: float = 4.0, observe: Callable[[], Observation] | None = None):
        self.manifest = manifest
        self.max_age = max_age
        self._observe = observe or Reconciler(manifest, Options()).observe
        self._lock = threading.Lock()
        self._current: Snapshot | None = None

    def get(self) -> Snapshot:
        with self._lock:
            if self._current is None or time.monotonic() - self._current.taken > self.max_age:
                self._current = self._take()
            return self._current

    def _take(self) -> Snapshot:
        try:
            seen = self._observe()
        except MlopsError as exc:
            state = {"error": REDACTOR.scrub(str(exc)), "services": [], "counts": {}}
            return Snapshot(time.monotonic(), None, state, "")
        state = scrub(build_state(seen))
        state["observed_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        svg = REDACTOR.scrub(to_svg(with_plan(graph_of(seen.project.manifest), seen.plan)))
        return Snapshot(time.monotonic(), seen, state, svg)
