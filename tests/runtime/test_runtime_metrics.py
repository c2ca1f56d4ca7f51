"""Per-version metrics (issue 20): Prometheus text on the probe port, never the public one, summed
over every worker and kept across a worker's replacement."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

from tests.runtime.conftest import Server

SAMPLE = re.compile(r'^(\w+)\{version="([^"]*)"(?:,(code|le)="([^"]+)")?\} (\S+)$')


def metrics(server: Server, probe: int) -> dict[tuple[str, str | None], float]:
    """The scraped samples as {(name, code-or-le): value}; every sample carries the version label."""
    reply = server.request("GET", "/metrics", port=probe)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in reply.text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP mlops_", "# TYPE mlops_")), line
            continue
        found = SAMPLE.match(line)
        assert found, line
        name, version, _kind, key, value = found.groups()
        assert version == "fp-123"
        samples[(name, key)] = float(value)
    return samples


def start(runtime, script: str, unused_port: int, *args: str, env: dict[str, str] | None = None) -> Server:
    server = runtime(script, "--probe-port", str(unused_port), "--revision", "fp-123", *args, env=env,
                     wait_ready=False)
    server.wait_ready(port=unused_port)
    return server


def _score_pids(server: Server, probe: int, count: int) -> list[int]:
    pids: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        reply = server.request("POST", "/score", '{"sleep": 0.05}', port=probe)
        assert reply.status == 200
        with lock:
            pids.append(reply.json()["pid"])

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return pids


def test_counts_by_status_class_and_latency_histogram(runtime, unused_port):
    server = start(runtime, "slow.py", unused_port, env={"MLOPS_MAX_BODY_BYTES": "100"})
    for body in ('{"sleep": 0}', '{"sleep": 0}', '{"sleep": 0.3}'):
        assert server.request("POST", "/score", body, port=unused_port).status == 200
    assert server.request("POST", "/score", "not json", port=unused_port).status == 500
    assert server.request("POST", "/score", "x" * 200, port=unused_port).status == 413
    assert server.request("GET", "/", port=unused_port).status == 200  # probes are not scoring requests
    got = metrics(server, unused_port)
    assert got[("mlops_requests_total", "2xx")] == 3
    assert got[("mlops_requests_total", "4xx")] == 1
    assert got[("mlops_requests_total", "5xx")] == 1
    assert got[("mlops_request_duration_seconds_count", None)] == 5
    assert got[("mlops_request_duration_seconds_bucket", "+Inf")] == 5
    assert got[("mlops_request_duration_seconds_bucket", "0.25")] == 4  # all but the 0.3 s one
    assert got[("mlops_request_duration_seconds_bucket", "0.5")] == 5
    assert got[("mlops_request_duration_seconds_sum", None)] >= 0.3


def test_metrics_are_never_on_the_public_port(runtime, unused_port):
    server = start(runtime, "echo.py", unused_port)
    server.wait_ready()  # the public port is joined once init() finished
    assert server.request("POST", "/score", "{}").status == 200
    reply = server.request("GET", "/metrics")
    assert reply.status == 404
    assert b"mlops_requests_total" not in reply.body


def test_no_metrics_flag_turns_them_off(runtime, unused_port):
    server = start(runtime, "echo.py", unused_port, "--no-metrics")
    assert server.request("POST", "/score", "{}", port=unused_port).status == 200
    assert server.request("GET", "/metrics", port=unused_port).status == 404


def test_workers_are_summed_and_a_replaced_worker_keeps_its_count(runtime, unused_port):
    server = start(runtime, "slow.py", unused_port, "--workers", "2")
    pids: list[int] = []
    for _ in range(20):  # until both workers have answered some (the kernel picks who accepts)
        pids += _score_pids(server, unused_port, 8)
        if len(set(pids)) == 2:
            break
    assert len(set(pids)) == 2, "only one worker ever answered"
    assert metrics(server, unused_port)[("mlops_requests_total", "2xx")] == len(pids)

    os.kill(pids[0], signal.SIGKILL)
    assert server.log.wait_for(f"worker {pids[0]} died", timeout=10)
    for _ in range(100):  # the replacement is up once both slots answer again
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        if len(children) == 2 and server.request("GET", "/ready", port=unused_port).status == 200:
            break
        time.sleep(0.1)
    more = _score_pids(server, unused_port, 8)
    assert metrics(server, unused_port)[("mlops_requests_total", "2xx")] == len(pids) + len(more)
