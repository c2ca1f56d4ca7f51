"""What a reconciler tells the world: Prometheus text, webhook notifications, commit statuses.

Metrics are the last cycle's view (drift and health per service, last cycle's duration, last
success time) plus counters (heals by result, cycles). The server binds 127.0.0.1 only and
serves ``GET /metrics``. Notifications are POSTed as JSON, one request per event batch, only
for transitions (the reconciler decides which); a webhook that fails is logged, never fatal.
Inside GitHub Actions the same transitions also set the commit status ``mlops/reconcile`` of
the commit the job runs for, with the token ``mlops comment`` uses.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import MlopsError
from .reconcile import IN_SYNC, CycleReport, Notify
from .redact import REDACTOR

HEALTH_STATES = ("Healthy", "Transitioning", "Unhealthy", "Unschedulable", "Failed", "Missing")


class Metrics:
    """Thread-safe store of the numbers ``/metrics`` shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: list[tuple[str, str, int, str]] = []
        self._heals: dict[str, int] = {}
        self._cycles = 0
        self._duration = 0.0
        self._last_success = 0.0
        self._errors = 0

    def record(self, report: CycleReport) -> None:
        with self._lock:
            self._services = [(s.name, s.target or "", int(s.sync != IN_SYNC), s.health) for s in report.services]
            for c in report.changes:
                self._heals[c.result] = self._heals.get(c.result, 0) + 1
            self._cycles += 1
            self._errors += int(bool(report.error))
            self._duration = report.duration
            self._last_success = report.last_success

    def render(self) -> str:
        with self._lock:
            out = [
                "# HELP mlops_resource_drift 1 when the service differs from the manifest (drifted, pending).",
                "# TYPE mlops_resource_drift gauge",
            ]
            out += [f"mlops_resource_drift{{service={_q(n)},target={_q(t)}}} {d}" for n, t, d, _ in self._services]
            out += ["# HELP mlops_resource_health 1 for the service's current health state.",
                    "# TYPE mlops_resource_health gauge"]
            for n, t, _, h in self._services:
                for state in HEALTH_STATES:
                    out.append(f"mlops_resource_health{{service={_q(n)},target={_q(t)},state={_q(state)}}} "
                               f"{int(h == state)}")
            out += ["# HELP mlops_heal_total Changes the reconciler considered, by result.",
                    "# TYPE mlops_heal_total counter"]
            out += [f"mlops_heal_total{{result={_q(r)}}} {n}" for r, n in sorted(self._heals.items())]
            out += ["# HELP mlops_reconcile_cycles_total Reconcile cycles run.",
                    "# TYPE mlops_reconcile_cycles_total counter",
                    f"mlops_reconcile_cycles_total {self._cycles}",
                    "# HELP mlops_reconcile_errors_total Cycles that could not read or plan.",
                    "# TYPE mlops_reconcile_errors_total counter", f"mlops_reconcile_errors_total {self._errors}",
                    "# HELP mlops_reconcile_duration_seconds Duration of the last cycle.",
                    "# TYPE mlops_reconcile_duration_seconds gauge",
                    f"mlops_reconcile_duration_seconds {self._duration:.6f}",
                    "# HELP mlops_last_success_timestamp_seconds End of the last cycle without error or failed change.",
                    "# TYPE mlops_last_success_timestamp_seconds gauge",
                    f"mlops_last_success_timestamp_seconds {self._last_success:.3f}"]
            return "\n".join(out) + "\n"


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:port (port 0 picks a free one: see ``.port``)."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1"):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:   # noqa: N802 (the stdlib's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:   # quiet: the JSON log is ours
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Webhook:
    """POSTs ``{"source": "mlops", "project": ..., "events": [...]}``; failures go to ``on_error``."""

    def __init__(self, url: str, project: str, on_error: Callable[[str], None], timeout: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError("--notify-url must be an http:// or https:// URL")
        self.url, self.project, self.on_error, self.timeout = url, project, on_error, timeout

    def __call__(self, events: list[dict[str, Any]], report: CycleReport | None = None) -> None:
        body = REDACTOR.scrub(json.dumps({"source": "mlops", "project": self.project, "events": events},
                                         sort_keys=True)).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "mlops-reconcile"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:   # noqa: S310 (user's URL)
                reply.read()
        except (urllib.error.URLError, OSError) as exc:
            self.on_error(f"webhook {self.url} failed: {getattr(exc, 'reason', exc)}")


STATUS_CONTEXT = "mlops/reconcile"
BAD_HEALTH = ("Unhealthy", "Unschedulable", "Failed")


def commit_state(report: CycleReport) -> tuple[str, str]:
    """GitHub's state and a one-line description of the whole cycle (names and counts only:
    error messages stay in the log, so no secret can reach the status)."""
    failed = sorted(c.address for c in report.changes if c.result in ("failed", "stopped"))
    unhealthy = sorted(s.name for s in report.services if s.health in BAD_HEALTH)
    out_of_sync = sorted(s.name for s in report.out_of_sync)
    in_sync = f"{len(report.services) - len(out_of_sync)}/{len(report.services)} in sync"
    if report.error:
        return "failure", f"{report.mode}: the cycle could not read or plan (see the job log)"
    if failed or unhealthy:
        parts = [f"heal failed: {', '.join(failed)}"] * bool(failed) + [f"unhealthy: {', '.join(unhealthy)}"] * bool(
            unhealthy)
        return "failure", f"{report.mode}: {in_sync}; " + "; ".join(parts)
    if out_of_sync or report.locked:
        return "pending", f"{report.mode}: {in_sync}" + (f"; out of sync: {', '.join(out_of_sync)}" if out_of_sync
                                                         else "; skipped writing (locked)")
    return "success", f"{report.mode}: {in_sync}"


def _one_line(text: str, limit: int = 140) -> str:
    text = REDACTOR.scrub(" ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


class CommitStatus:
    """Sets ``mlops/reconcile`` on ``sha`` when a cycle has transitions; failures go to ``on_error``."""

    def __init__(self, github: Any, sha: str, on_error: Callable[[str], None]):
        self.github, self.sha, self.on_error = github, sha, on_error

    @classmethod
    def from_env(cls, env: dict[str, str], on_error: Callable[[str], None]) -> CommitStatus | None:
        """Inside GitHub Actions (GITHUB_ACTIONS=true) with a commit to report on; else None."""
        if env.get("GITHUB_ACTIONS") != "true":
            return None
        from .github import ActionsContext, GitHub

        ctx = ActionsContext.from_env(env)   # GitHubError (one line) when the repository or token is missing
        if not ctx.sha or not all(c in "0123456789abcdef" for c in ctx.sha.lower()):
            raise MlopsError("GITHUB_SHA is not set to a commit: cannot post the mlops/reconcile commit status")
        return cls(GitHub.from_context(ctx, attempts=3), ctx.sha, on_error)

    def __call__(self, events: list[dict[str, Any]], report: CycleReport) -> None:
        state, description = commit_state(report)
        try:
            self.github.create_status(self.sha, state, STATUS_CONTEXT, _one_line(description))
        except MlopsError as exc:
            self.on_error(f"commit status {STATUS_CONTEXT} on {self.sha[:12]} failed: {REDACTOR.scrub(str(exc))}")


def fan_out(*notifiers: Notify | None) -> Notify:
    """One notify that calls each configured one in turn."""
    chosen = [n for n in notifiers if n is not None]

    def notify(events: list[dict[str, Any]], report: CycleReport) -> None:
        for n in chosen:
            n(events, report)

    return notify
