"""A service's route file: where its rollout stands on the local target, and what its runtimes act on.

``<data>/routes/<target>/<service>.json``, replaced atomically (never seen half-written)::

    {"service": "api", "target": "dev",
     "rollout": RolloutState.to_json(),
     "stable": {"version": "<fingerprint>", "instance": "ab12cd34"},
     "candidate": {"version": "<fingerprint>", "instance": "ef56ab78", "host": "127.0.0.1",
                   "port": <its private port>, "scoring_timeout_ms": <its deploy.scoring_timeout_ms>,
                   "pid": ..., "start_id": ... | "container": ..., "stopped": false}}

It is the target's own record of the rollout (no state file): ``read()`` reports it in
``Live.rollout``, and the stable version's runtime reads it to split requests (the reader is
``providers/runtime/routes.py``, which cannot import this module: the runtime is copied into
images alone). The candidate is named here before it starts, so an apply killed at any moment
leaves no instance the file does not account for. The candidate's scoring timeout is there because
the stable version forwards requests to it and must wait as long as the candidate may take.
Written world-readable in a folder mounted read-only into the service's containers (it holds
addresses and versions, never keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from planner.core.resources import RolloutState

MOUNT = "/run/mlops-routes"
"""Where a container finds its target's route files."""


def folder(data_dir: Path, target: str) -> Path:
    return data_dir / "routes" / target


def path_of(data_dir: Path, target: str, service: str) -> Path:
    return folder(data_dir, target) / f"{service}.json"


def read(path: Path) -> dict[str, Any] | None:
    """The file's document; None when there is none (or it is not one: treated as no rollout)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace the file at once (rename): a runtime reads the old document or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o755)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def state_of(data: dict[str, Any] | None) -> RolloutState | None:
    if not data or not isinstance(data.get("rollout"), dict):
        return None
    try:
        return RolloutState.from_json(data["rollout"])
    except ValueError:
        return None


def candidate_of(data: dict[str, Any] | None) -> dict[str, Any] | None:
    found = (data or {}).get("candidate")
    return found if isinstance(found, dict) else None


def candidate_entry(version: str, instance: str, host: str, port: int, scoring_timeout_ms: int) -> dict[str, Any]:
    """A candidate as the file names it before it starts (how to find and stop it is added once it runs)."""
    return {"version": version, "instance": instance, "host": host, "port": port,
            "scoring_timeout_ms": scoring_timeout_ms}


def document(service: str, target: str, state: RolloutState, stable: dict[str, Any],
             candidate: dict[str, Any]) -> dict[str, Any]:
    return {"service": service, "target": target, "rollout": state.to_json(), "stable": stable,
            "candidate": candidate}
