"""Connecting to the Docker engine, and the labels by which we recognise what is ours.

Connection problems become one ProviderError line that says where we looked (DOCKER_HOST) and
how to get an engine, raised before anything is built, started or removed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from planner.core.errors import ProviderError, Unreachable

from .. import sdk

LABEL = "mlops"
"""Prefix of every label we set (``mlops.project``, ``mlops.service``, ...)."""

HOW_TO_START = ("start Docker (Docker Desktop, or `sudo systemctl start docker`) and set DOCKER_HOST when it does "
                "not listen on /var/run/docker.sock (e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock)")

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def label(name: str) -> str:
    return f"{LABEL}.{name}"


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client(*, timeout: int = 120) -> Any:
    """A connected ``docker.DockerClient`` for ``DOCKER_HOST``; one per address, shared by threads."""
    host = docker_host()
    with _lock:
        cached = _clients.get(host)
    if cached is not None:
        return cached
    try:
        sdk.load("docker", "docker.errors")
        import docker
        import docker.errors
    except ImportError:
        raise ProviderError("the docker engine needs the `docker` Python package: pip install docker") from None
    where = f"DOCKER_HOST={os.environ['DOCKER_HOST']}" if os.environ.get("DOCKER_HOST") else \
        f"{host} (DOCKER_HOST is not set)"
    try:
        made = docker.DockerClient(base_url=host, timeout=timeout)
        made.ping()
    except (docker.errors.DockerException, OSError) as exc:
        reason = _short(exc)
        raise Unreachable(f"no Docker engine reachable at {where}: {reason}; {HOW_TO_START}") from None
    with _lock:
        _clients.setdefault(host, made)
        return _clients[host]


def reachable() -> bool:
    """True when an engine answers at DOCKER_HOST (for quiet look-ups such as orphan searches).

    Without DOCKER_HOST and without the default socket there is nothing to ask: answer at once,
    so projects that never use docker pay nothing for the look-up.
    """
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        client(timeout=10)
    except ProviderError:
        return False
    return True


def _short(exc: BaseException) -> str:
    """The innermost useful words of a connection error, on one line."""
    text = str(exc)
    for marker in ("Connection refused", "No such file or directory", "Permission denied", "timed out"):
        if marker in text:
            return marker.lower()
    return " ".join(text.split())[:160]
