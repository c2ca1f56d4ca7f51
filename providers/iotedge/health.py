"""A deployment's health, in the seed's states, from IoT Hub's system metrics and the devices' agents.

The hub's system metrics count devices: targeted (the condition matches), applied (the hub wrote
the deployment into the device's ``$edgeAgent`` twin), reported successful / failed (the agent
acknowledged that desired version with 200 / an error). An acknowledged deployment can still crash
at run time, so each targeted device's ``$edgeAgent`` reported properties are read as well: our
module must report ``runtimeStatus: running``. A device that has not applied the deployment yet, or
whose agent has not taken the latest desired version (its reports are still of the previous one: a
ring device switching back after an abort), is waited for; one whose agent refused the version, or
whose module is failed / in backoff / unhealthy / stopped, is named with its ``runtimeStatus`` and
``statusDescription``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, UNSCHEDULABLE, Health

from .manifest import join_create_options

NAMED = 3
"""Failing devices named in a message; the rest are counted."""
CRASH_WINDOW_S = 60.0
"""A running module that exited less than this long ago is crash-looping, not healthy."""
BAD_RUNTIME = frozenset({"failed", "backoff", "unhealthy", "stopped", "dead"})


@dataclass(frozen=True)
class Device:
    """What one targeted device says about our module."""

    device_id: str
    applied: bool
    ok: bool
    failing: str | None           # why, when it fails
    runtime_status: str | None
    host_port: int | None         # the module's published port, as the device reports it
    tags: Mapping[str, Any] = field(default_factory=dict)


def device_state(config_id: str, name: str, twin: Mapping[str, Any], agent: Mapping[str, Any] | None) -> Device:
    """One device's view: has it applied ``config_id``, is our module running, and if not, why."""
    device_id = str(twin.get("deviceId"))
    tags = dict(twin.get("tags") or {})
    status = ((twin.get("configurations") or {}).get(config_id) or {}).get("status")
    applied = status == "Applied"
    if agent is None:
        return Device(device_id, applied, False, "no $edgeAgent twin (not an IoT Edge device?)", None, None, tags)
    desired = (agent.get("properties") or {}).get("desired") or {}
    reported = (agent.get("properties") or {}).get("reported") or {}
    module = (reported.get("modules") or {}).get(name) or {}
    runtime = module.get("runtimeStatus")
    port = _host_port(module.get("settings") or {})
    if not applied:
        return Device(device_id, False, False, None, runtime, port, tags)
    code = int((reported.get("lastDesiredStatus") or {}).get("code") or 0)
    current = reported.get("lastDesiredVersion") == desired.get("$version")
    if not current:   # the agent has not taken the latest desired version yet: its reports are of the last one
        return Device(device_id, True, False, None, runtime, port, tags)
    if code and code != 200:
        why = (reported.get("lastDesiredStatus") or {}).get("description") or f"code {code}"
        return Device(device_id, True, False, f"the agent refused the deployment ({code}: {why})", runtime, port, tags)
    if runtime in BAD_RUNTIME:
        exit_code = module.get("exitCode")
        desc = str(module.get("statusDescription") or "").strip()
        why = f"module {name} {runtime}" + (f" (exit code {exit_code})" if exit_code not in (None, 0) else "")
        return Device(device_id, True, False, why + (f": {desc}" if desc else ""), runtime, port, tags)
    restarts = int(module.get("restartCount") or 0)
    if runtime == "running" and restarts and _seconds_since(module.get("lastExitTimeUtc")) < CRASH_WINDOW_S:
        desc = str(module.get("statusDescription") or "").strip()
        why = f"module {name} crash-looping (restarted {restarts} times)" + (f": {desc}" if desc else "")
        return Device(device_id, True, False, why, runtime, port, tags)
    ok = code == 200 and runtime == "running"
    return Device(device_id, True, ok, None, runtime, port, tags)


def _seconds_since(stamp: Any) -> float:
    """Seconds since an agent's UTC timestamp (``2026-12-01T08:47:22.938Z``); infinite when absent."""
    if not stamp:
        return float("inf")
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (datetime.now(UTC) - when).total_seconds()


def _host_port(settings: Mapping[str, Any]) -> int | None:
    options = join_create_options(settings)
    for bindings in ((options.get("HostConfig") or {}).get("PortBindings") or {}).values():
        for binding in bindings or []:
            try:
                return int(binding.get("HostPort"))
            except (TypeError, ValueError):
                continue
    return None


def counts(config: Mapping[str, Any]) -> dict[str, int]:
    """targeted / applied / succeeded / failed, from the deployment's system metrics."""
    results = ((config.get("systemMetrics") or {}).get("results") or {})
    return {"targeted": int(results.get("targetedCount") or 0), "applied": int(results.get("appliedCount") or 0),
            "succeeded": int(results.get("reportedSuccessfulCount") or 0),
            "failed": int(results.get("reportedFailedCount") or 0)}


def health(config: Mapping[str, Any], devices: list[Device], condition: str, *, scoped: bool = False) -> Health:
    """The seed's state with device counts: ready (running our module) / targeted, failed.

    ``scoped``: ``devices`` are a part of what ``config`` targets (one version's share of a ring
    rollout), so the counts are theirs alone, not the deployment's system metrics."""
    metrics = counts(config)
    if scoped:
        bad = sum(1 for d in devices if d.failing)
        metrics = {"targeted": len(devices), "applied": sum(1 for d in devices if d.applied),
                   "succeeded": sum(1 for d in devices if d.ok), "failed": bad}
    targeted = max(metrics["targeted"], len(devices))
    failing = [d for d in devices if d.failing]
    ready = sum(1 for d in devices if d.ok)
    failed = max(len(failing), metrics["failed"])
    summary = (f"{metrics['targeted']} targeted, {metrics['applied']} applied, {metrics['succeeded']} succeeded, "
               f"{metrics['failed']} failed")
    if targeted == 0:
        return Health(UNSCHEDULABLE, f"no device matches the target condition {condition}", 0, 0, 0, unit="devices")
    if failing:
        named = "; ".join(f"{d.device_id}: {d.failing}" for d in failing[:NAMED])
        more = f"; and {len(failing) - NAMED} more" if len(failing) > NAMED else ""
        state = FAILED if ready == 0 and len(failing) >= targeted else UNHEALTHY
        return Health(state, f"{named}{more} ({summary})", ready, targeted, failed, unit="devices")
    if ready >= targeted:
        return Health(HEALTHY, f"running on {ready} device{'s' if ready != 1 else ''} ({summary})", ready, targeted,
                      0, unit="devices")
    waiting = [d.device_id for d in devices if not d.ok]
    shown = ", ".join(waiting[:NAMED]) + (f" and {len(waiting) - NAMED} more" if len(waiting) > NAMED else "")
    return Health(TRANSITIONING, f"waiting for devices: {ready}/{targeted} ({summary}; not yet: {shown or '?'})",
                  ready, targeted, 0, unit="devices")


def not_ready(device: Device) -> Device:
    """A device whose agent says running but whose endpoint does not answer /ready yet: still waited for."""
    return replace(device, ok=False)


def first(devices: list[Device]) -> Device | None:
    """The device to call by default: the first healthy one by id."""
    good = sorted((d for d in devices if d.ok), key=lambda d: d.device_id)
    return good[0] if good else None
