"""What a reconciler tells the world: Prometheus text, webhook notifications.

Metrics are the last cycle's view (drift and health per service, last cycle's duration, last
success time) plus counters (heals by result, cycles). The server binds 127.0.0.1 only and
serves ``GET /metrics``. Notifications are POSTed as JSON, one request per event batch, only
for transitions (the reconciler decides which); a webhook that fails is logged, never fatal.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .reconcile import IN_SYNC, CycleReport
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

    def __call__(self, events: list[dict[str, Any]]) -> None:
        body = REDACTOR.scrub(json.dumps({"source": "mlops", "project": self.project, "events": events},
                                         sort_keys=True)).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "mlops-reconcile"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:   # noqa: S310 (user's URL)
                reply.read()
        except (urllib.error.URLError, OSError) as exc:
            self.on_error(f"webhook {self.url} failed: {getattr(exc, 'reason', exc)}")
