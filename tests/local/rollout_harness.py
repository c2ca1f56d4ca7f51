"""What the local rollout tests (process and docker engines) share: a project whose service says
which version answered, load from a keep-alive and a new-connection client, and the provider of its
target driven directly through ``SplitsTraffic`` (the driver's calls, one by one).

Versions differ by ``deploy.environment_variables`` only (``TEST_WHO``), so each one has its own
spec fingerprint and the same model and environment (one virtualenv or image stage for all).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import make_project, run_cli

from planner.addresses import Address
from planner.core.events import Events
from planner.core.resources import Live, Resource, RolloutState, spec_fingerprint
from planner.project import Project

SCORE = '''\
import os, time

calls = 0

def init():
    global who, fail_every, sleep_s
    who = os.environ.get("TEST_WHO", "unnamed")
    fail_every = int(os.environ.get("TEST_FAIL_EVERY", "0"))
    sleep_s = float(os.environ.get("TEST_SLEEP_S", "0"))

def run(raw_data):
    global calls
    calls += 1
    if sleep_s:
        time.sleep(sleep_s)
    if fail_every and calls % fail_every == 0:
        raise RuntimeError("planned failure")
    return {"who": who}
'''

SERVICE = "rl-api"


def manifest(project: str, target: str, who: str, env: dict[str, str] | None = None) -> str:
    variables = {"TEST_WHO": who, **(env or {})}
    inline = ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(variables.items()))
    return f"""\
version: 1
project: {project}
targets:
  dev: {target}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  {SERVICE}:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    target: dev
    deploy: {{port: auto, auth: key, environment_variables: {{{inline}}}}}
"""


def deploy_stable(root: Path, project: str, target: str) -> Path:
    """The stable version ``v1``, applied by the real ``mlops apply``; returns the manifest."""
    path = make_project(root, manifest(project, target, "v1"), score=SCORE)
    result = run_cli("apply", "--auto-approve", "-f", str(path), cwd=root)
    assert result.code == 0, result.out + result.err
    return path


@dataclass
class Rollout:
    """The service's provider and the desired candidate, for direct SplitsTraffic calls."""

    project: Project
    desired: Resource
    events: Events = field(default_factory=Events)

    @property
    def provider(self) -> Any:
        return self.project.providers["dev"]

    def live(self) -> Live:
        found = [lv for lv in self.provider.read() if lv.address == Address("service", SERVICE)]
        assert len(found) == 1, found
        return found[0]

    def state(self, live: Live, **changes: Any) -> RolloutState:
        base = {"candidate": spec_fingerprint(self.desired.spec), "stable": spec_fingerprint(live.spec),
                "phase": "canary"}
        return RolloutState(**{**base, **changes})

    def endpoint(self) -> tuple[int, dict[str, str]]:
        found = self.provider.endpoint(self.live())
        return int(found.scoring_url.split(":")[2].split("/")[0]), dict(found.headers)


def candidate(path: Path, who: str, env: dict[str, str] | None = None, target: str = "{provider: local}") -> Rollout:
    """The project with the manifest rewritten to version ``who``, and that version's desired service."""
    text = path.read_text()
    project_name = text.split("project: ", 1)[1].split("\n", 1)[0]
    path.write_text(manifest(project_name, target, who, env))
    project = Project.load(path)
    desired = project.desired()[Address("service", SERVICE)]
    return Rollout(project, desired)


class Load:
    """Two clients scoring the service all along: one keep-alive connection, and a new connection
    per request. Each answer is (client, time, status, who); failures are errors or non-200s."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, {**headers, "Content-Type": "application/json"}
        self.answers: list[tuple[str, float, int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True)
                         for kind in ("keep-alive", "new-connection")]

    def _run(self, kind: str) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", "/score", body=b'{"x": 1}', headers=self.headers)
                reply = conn.getresponse()
                body = reply.read()
                who = json.loads(body).get("who", "") if reply.status == 200 else ""
                self.answers.append((kind, time.monotonic(), reply.status, who))
                if reply.status != 200:
                    self.failures.append(f"{kind}: HTTP {reply.status} {body[:200]!r}")
                if kind == "new-connection" or reply.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def mark(self) -> float:
        return time.monotonic()

    def share(self, kind: str, who: str, since: float, until: float) -> tuple[float, int]:
        """Percent of ``kind``'s answers between the two marks that ``who`` gave, and their count."""
        window = [a for a in self.answers if a[0] == kind and since <= a[1] <= until]
        return (100.0 * sum(1 for a in window if a[3] == who) / len(window) if window else 0.0), len(window)

    def wait_for(self, count: int, since: float, timeout: float = 120) -> float:
        """Until each client answered ``count`` requests after ``since``; returns the time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(sum(1 for a in self.answers if a[0] == k and a[1] >= since) >= count
                   for k in ("keep-alive", "new-connection")):
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"the clients did not answer {count} requests each within {timeout}s")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
