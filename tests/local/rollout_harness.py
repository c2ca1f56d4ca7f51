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

from support import echo_manifest, make_project, run_cli

from planner.addresses import Address
from planner.core.events import Events
from planner.core.resources import Live, Resource, RolloutState, spec_fingerprint
from planner.project import Project

SCORE = (Path(__file__).resolve().parents[1] / "runtime" / "scripts" / "whoami.py").read_text()
"""The service's score.py: the runtime tests' script that says which version answered (``TEST_WHO``),
failing every ``TEST_FAIL_EVERY``-th call and sleeping ``TEST_SLEEP_S`` a call when asked."""

SERVICE = "rl-api"


def manifest(project: str, target: str, who: str, env: dict[str, str] | None = None, rollout: str = "") -> str:
    """``rollout``: the service's ``rollout:`` block, as YAML indented under the service."""
    variables = {"TEST_WHO": who, **(env or {})}
    inline = ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(variables.items()))
    return echo_manifest(project, service=SERVICE, targets={"dev": target}, target="dev", rollout=rollout,
                         deploy=f"{{port: auto, auth: key, environment_variables: {{{inline}}}}}")


def deploy_stable(root: Path, project: str, target: str, rollout: str = "") -> Path:
    """The stable version ``v1``, applied by the real ``mlops apply``; returns the manifest."""
    path = make_project(root, manifest(project, target, "v1", rollout=rollout), score=SCORE)
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

    def load(self) -> Load:
        """Both clients scoring the service's endpoint, from ``with`` to its end."""
        return Load(*self.endpoint())

    def start(self, **changes: Any) -> Live:
        """The candidate started beside the live stable version: the driver's first call of every rollout."""
        live = self.live()
        return self.provider.start_candidate(self.desired, live, self.state(live, **changes), self.events)


def rewrite(path: Path, who: str, env: dict[str, str] | None = None, target: str = "{provider: local}",
            rollout: str = "") -> None:
    """The manifest at ``path`` asks for version ``who`` now."""
    text = path.read_text()
    project_name = text.split("project: ", 1)[1].split("\n", 1)[0]
    path.write_text(manifest(project_name, target, who, env, rollout))


def candidate(path: Path, who: str, env: dict[str, str] | None = None, target: str = "{provider: local}") -> Rollout:
    """The project with the manifest rewritten to version ``who``, and that version's desired service."""
    rewrite(path, who, env, target)
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


# -- through `mlops apply` and the rollout driver (short holds) ---------------------------------------

CANARY = """\
    rollout:
      strategy: canary
      steps: [{weight: 10, hold: 2s}, {weight: 50, hold: 2s}]
      analysis: {interval: 500ms, min_requests: 5, max_error_rate: 5%, failure_limit: 2}
      progress_deadline: 60s
"""


def route_file(path: Path) -> Path:
    from support import project_data

    return project_data(path) / "routes" / "dev" / f"{SERVICE}.json"


def applied_under_load(path: Path, *, who: str, env: dict[str, str] | None = None,
                       target: str = "{provider: local}") -> tuple[Any, Load, list[tuple[float, float]]]:
    """``mlops apply`` of version ``who`` (with CANARY) under load; (its result, the load, the
    (time, weight) changes the route file showed while it ran)."""
    rewrite(path, who, env, target, CANARY)
    project = Project.load(path)
    live = next(lv for lv in project.providers["dev"].read() if lv.address.name == SERVICE)
    endpoint = project.providers["dev"].endpoint(live)
    port = int(endpoint.scoring_url.split(":")[2].split("/")[0])
    weights: list[tuple[float, float]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                weight = float(json.loads(route_file(path).read_text())["rollout"]["weight"])
            except (OSError, ValueError, KeyError):
                weight = -1.0
            if not weights or weights[-1][1] != weight:
                weights.append((time.monotonic(), weight))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    with Load(port, dict(endpoint.headers)) as load:
        watcher.start()
        result = run_cli("apply", "--auto-approve", "-f", str(path), cwd=path.parent)
        time.sleep(0.5)
        stop.set()
        watcher.join()
    return result, load, weights


def step_shares(load: Load, weights: list[tuple[float, float]], who: str) -> list[tuple[float, float, int]]:
    """(weight, share of answers given by ``who`` while it was in force, answers) per step (after 0.3 s)."""
    out = []
    for i, (since, weight) in enumerate(weights):
        until = weights[i + 1][0] if i + 1 < len(weights) else float("inf")
        if weight > 0:
            window = [a for a in load.answers if since + 0.3 <= a[1] <= until]
            if window:
                out.append((weight, 100.0 * sum(1 for a in window if a[3] == who or a[2] >= 500) / len(window),
                            len(window)))
    return out


def promoted_under_load(path: Path, target: str = "{provider: local}") -> None:
    """``mlops apply`` of a good ``v2`` under load, checked as every engine must pass it: promoted with no
    failed request, each step's share of answers within 5 points of its weight, v2 answering at the end."""
    result, load, weights = applied_under_load(path, who="v2", target=target)
    assert result.code == 0, result.out + result.err
    assert load.failures == []
    shares = step_shares(load, weights, "v2")
    assert [w for w, _s, _n in shares] == [10.0, 50.0], weights
    for weight, share, count in shares:
        assert abs(share - weight) <= 5, (weight, share, count)
    assert load.answers[-1][3] == "v2" and not route_file(path).exists()


def rolled_back_under_load(path: Path, target: str = "{provider: local}") -> tuple[Any, list[tuple[float, float]]]:
    """``mlops apply`` of a ``v2`` failing one call in five under load, checked as every engine must pass it:
    rolled back (exit 5) with no failed connection, having answered about the first step's share, v1
    answering at the end; (the apply's result, the route file's weights)."""
    result, load, weights = applied_under_load(path, who="v2", env={"TEST_FAIL_EVERY": "5"}, target=target)
    assert result.code == 5, result.out + result.err
    assert "ROLLED BACK" in result.err
    assert not [f for f in load.failures if "HTTP 500" not in f]   # no failed connection; 5xx are its answers
    by_candidate = sum(1 for a in load.answers if a[3] == "v2" or a[2] >= 500)
    assert by_candidate <= (10 + 5) / 100 * len(load.answers), (by_candidate, len(load.answers))
    assert load.answers[-1][3] == "v1"
    assert json.loads(route_file(path).read_text())["rollout"]["phase"] == "aborted"
    return result, weights
