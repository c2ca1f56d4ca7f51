"""Service containers: how one is started, and how its engine state maps to the seed's states.

A container runs the image's scoring runtime on the host's network (the engine has no bridge
here, and publishing ports would be silently ignored), listening on 127.0.0.1 and a port of its
own. Everything we need to read it back - project, target, service, spec, port - is in its
labels, so the engine itself is the state: a container removed by hand is simply missing.
Keys travel as environment variables only, never as labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY

from ...http import is_ready
from ...images.engine import label

HOST = "127.0.0.1"
PROBE = ("import sys, urllib.request; "
         "sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}/ready', timeout=3).status == 200 else 1)")


def run_service(cli: Any, *, image: str, name: str, command: list[str], env: Mapping[str, str],
                labels: Mapping[str, str], port: int, deploy: Mapping[str, Any],
                volumes: Mapping[str, Mapping[str, str]] | None = None) -> Any:
    """Start a detached container for one instance of a service; returns the SDK's Container."""
    startup = int(deploy.get("startup_timeout_s", 120))
    kwargs: dict[str, Any] = {}
    if deploy.get("cpu"):
        kwargs["nano_cpus"] = int(float(deploy["cpu"]) * 1e9)
    if deploy.get("memory_gb"):
        kwargs["mem_limit"] = int(float(deploy["memory_gb"]) * (1 << 30))
    return cli.containers.run(
        image, command=command, name=name, detach=True, network_mode="host",
        environment=dict(env), labels=dict(labels),
        restart_policy={"Name": "unless-stopped"},
        healthcheck={"test": ["CMD", "python", "-c", PROBE.format(port=port)],
                     "interval": 10 * 10**9, "timeout": 5 * 10**9, "retries": 3,
                     "start_period": startup * 10**9},
        stop_signal="SIGTERM", volumes=dict(volumes or {}), **kwargs,
    )


def started_at(container: Any) -> float:
    """The container's start time (epoch seconds), from the engine's RFC 3339 timestamp."""
    text = container.attrs.get("State", {}).get("StartedAt") or container.attrs.get("Created") or ""
    try:
        from datetime import datetime

        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return time.time()


def last_lines(container: Any, count: int = 3) -> list[str]:
    """The container's last non-empty log lines (what a Failed state is explained with)."""
    try:
        raw = container.logs(tail=max(count * 4, 20)).decode(errors="replace")
    except Exception:  # a container removed meanwhile has no logs; the state says enough
        return []
    return [ln.strip() for ln in raw.splitlines() if ln.strip()][-count:]


def state_of(container: Any) -> tuple[str, str]:
    """(seed state, message) of one service container."""
    state = container.attrs.get("State", {})
    status = state.get("Status", "")
    labels = container.labels
    port = labels.get(label("port"), "")
    exit_code = state.get("ExitCode")
    if status in ("exited", "dead"):
        lines = last_lines(container)
        return FAILED, f"container exited (code {exit_code})" + (f": {' | '.join(lines)}" if lines else "")
    if status == "restarting" or (status == "running" and container.attrs.get("RestartCount", 0) and
                                  not is_ready(f"http://{HOST}:{port}")):
        lines = last_lines(container)
        return FAILED, (f"container keeps restarting (last exit code {exit_code})"
                        + (f": {' | '.join(lines)}" if lines else ""))
    if status == "paused":
        return UNHEALTHY, "container is paused"
    if status in ("created", "removing"):
        return TRANSITIONING, f"container is {status}"
    if is_ready(f"http://{HOST}:{port}"):
        return HEALTHY, ""
    spec = json.loads(labels.get(label("spec"), "{}"))
    if time.time() - started_at(container) < spec.get("deploy", {}).get("startup_timeout_s", 120):
        return TRANSITIONING, "init() running"
    return UNHEALTHY, f"http://{HOST}:{port}/ready does not answer 200"


def log_lines(container: Any, *, follow: bool, tail: int | None) -> Iterator[str]:
    """The container's output as lines (stdout and stderr together, as the runtime writes them)."""
    pending = b""
    for chunk in container.logs(stream=True, follow=follow, tail=tail if tail else "all"):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")
