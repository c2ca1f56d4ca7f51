"""The bake window's loop, judged on figures given to it (no target, no clock)."""

from __future__ import annotations

import pytest

from planner.events import Events
from planner.rollout.analysis import VersionStats
from planner.rollout.bake import RolloutFailed, watch
from planner.rollout.spec import Analysis, Rollout, Step

INF = float("inf")


class Figures:
    """A sampler that returns prepared intervals and moves a fake clock one interval per call."""

    metrics_url = "given"

    def __init__(self, intervals: list[tuple[int, int]], clock: list[float], step: float):
        self.intervals = list(intervals)
        self.clock, self.step = clock, step

    def start(self) -> None:
        pass

    def interval(self, events: Events, seconds: float) -> VersionStats:
        ok, errors = self.intervals.pop(0)
        self.clock[0] += self.step
        n = float(ok + errors)
        return VersionStats({"2xx": float(ok), "5xx": float(errors)}, {0.01: n, INF: n})


def policy(hold: float = 3, limit: int = 2, deadline: float = 10) -> Rollout:
    return Rollout("blue_green", (Step(100, hold),), analysis=Analysis(
        interval=1, min_requests=10, max_error_rate=0.05, failure_limit=limit), progress_deadline=deadline)


def run(p: Rollout, intervals: list[tuple[int, int]]) -> tuple[str, list[str]]:
    clock = [0.0]
    steps: list[str] = []
    result = watch(p, Figures(intervals, clock, 1.0), Events(steps.append), clock=lambda: clock[0])
    return result, steps


def test_passes_after_the_window_with_passing_intervals():
    result, steps = run(policy(), [(50, 0), (50, 1), (50, 0)])
    assert result.startswith("analysis 3/3 intervals passed")
    assert all(s.startswith("analysis ") and ": pass: " in s for s in steps)


def test_fails_at_exactly_failure_limit_failed_intervals():
    with pytest.raises(RolloutFailed, match=r"analysis failed 2 of 3 intervals \(failure_limit 2\): error rate 20%"):
        run(policy(hold=100, deadline=1000), [(40, 10), (50, 0), (40, 10), (50, 0)])


def test_no_data_holds_and_then_fails_at_the_deadline():
    with pytest.raises(RolloutFailed, match="no interval had min_requests 10 requests before progress_deadline 5s"):
        run(policy(deadline=5), [(1, 0)] * 10)


def test_too_few_requests_never_count_as_a_pass():
    result, steps = run(policy(hold=2), [(3, 0), (3, 0), (3, 0), (20, 0)])
    assert result.startswith("analysis 1/4 intervals passed")
    assert sum("inconclusive" in s for s in steps) == 3


def test_without_a_metrics_address_the_sample_request_is_sent_and_judged():
    from planner.rollout.bake import Sampler

    answers = iter([(200, 0.003), (503, 0.2), (200, 0.003), (0, 5.0)] * 5)
    sampler = Sampler("v", None, lambda: next(answers), per_interval=20)
    sampler.start()
    figures = sampler.interval(Events(), 0.02)
    assert figures.codes == {"2xx": 10.0, "5xx": 10.0}          # an unreachable answer (0) counts as 5xx
    assert figures.buckets[0.005] == 10 and figures.buckets[0.25] == 15 and figures.buckets[INF] == 20
    with pytest.raises(RolloutFailed, match="error rate 50%"):
        run(policy(limit=1), [(10, 10)])


def test_a_scrape_across_a_restart_counts_from_zero():
    import http.server
    import threading

    bodies = ['mlops_requests_total{version="v",code="2xx"} 100\n'
              'mlops_request_duration_seconds_bucket{version="v",le="+Inf"} 100\n',
              'mlops_requests_total{version="v",code="2xx"} 7\n'
              'mlops_request_duration_seconds_bucket{version="v",le="+Inf"} 7\n']

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):   # noqa: N802
            body = bodies.pop(0).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    from planner.rollout.bake import Sampler

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sampler = Sampler("v", f"http://127.0.0.1:{server.server_address[1]}/metrics", None, per_interval=1)
        sampler.start()
        assert sampler.interval(Events(), 0.0).requests == 7
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_scrape_is_an_inconclusive_interval_not_a_rollback():
    """One metrics scrape that fails (a closed port, a cut answer) made the bake window roll back at once;
    like the rollout driver's, it is inconclusive now and the deadline ends one that stays unreadable."""
    import socket

    from planner.rollout.bake import Sampler, Unreadable

    with socket.socket() as probe:          # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sampler = Sampler("v", f"http://127.0.0.1:{port}/metrics", None, per_interval=1)
    sampler.start()                         # no baseline: the first interval takes it
    with pytest.raises(Unreadable, match="cannot read the new version's metrics"):
        sampler.interval(Events(), 0.0)
    clock = [0.0]
    steps: list[str] = []

    class Ticking(Sampler):
        def interval(self, events, seconds):
            clock[0] += 1.0
            return super().interval(events, 0.0)

    with pytest.raises(RolloutFailed, match="no interval had min_requests 10 requests before progress_deadline 3s"):
        watch(policy(deadline=3), Ticking("v", sampler.metrics_url, None, per_interval=1), Events(steps.append),
              clock=lambda: clock[0])
    assert len(steps) >= 3 and all(": inconclusive: cannot read the new version's metrics" in s for s in steps)
