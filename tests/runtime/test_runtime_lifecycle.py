"""Process lifecycle: readiness, init failures, SIGTERM, wedged workers, several workers."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from providers.runtime import exitcodes


def test_liveness_answers_during_init_and_readiness_waits_for_it(runtime):
    server = runtime("slow.py", env={"TEST_INIT_SLEEP": "1.5"}, wait_ready=False)
    assert server.request("GET", "/").status == 200
    not_ready = server.request("GET", "/ready")
    assert not_ready.status == 503
    assert "init()" in not_ready.json()["message"]
    # A scoring request sent during init() waits for it instead of failing.
    assert server.request("POST", "/score", '{"sleep": 0}').status == 200
    assert server.request("GET", "/ready").status == 200


@pytest.mark.parametrize(
    ("script", "line"),
    [
        ("failing_init.py", "init() failed: ValueError: model file missing"),
        ("failing_import.py", "failed to load: ImportError: no module named imaginary_dependency"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_script_failure_exits_3_with_a_clear_last_line(runtime, script, line, workers):
    server = runtime(script, "--workers", workers, wait_ready=False)
    assert server.process.wait(30) == exitcodes.SCRIPT_FAILED
    server.log.join()
    lines = [entry for entry in server.log.lines if entry]
    assert line in lines[-1]
    assert "Traceback" in server.log.text


def test_sigterm_lets_the_in_flight_request_finish(runtime):
    server = runtime("slow.py")
    replies = []
    client = threading.Thread(target=lambda: replies.append(server.request("POST", "/score", '{"sleep": 1.0}')))
    client.start()
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    client.join()
    assert server.process.wait(30) == exitcodes.OK
    assert replies[0].status == 200
    assert replies[0].json()["slept"] == 1.0


def test_sigterm_stops_accepting(runtime):
    server = runtime("slow.py")
    assert server.stop() == exitcodes.OK
    with pytest.raises(OSError):
        server.request("GET", "/", timeout=2)


def test_sigint_is_graceful_too(runtime):
    server = runtime("echo.py")
    assert server.stop(signal.SIGINT) == exitcodes.OK


def test_stuck_run_gets_its_worker_replaced(runtime):
    server = runtime("slow.py", env={"SCORING_TIMEOUT_MS": "300"})
    first = server.request("POST", "/score", '{"sleep": 0}').json()["pid"]
    assert server.request("POST", "/score", '{"sleep": 30}').status == 504
    assert server.log.wait_for("replacing this worker", timeout=10)
    server.wait_ready()
    reply = server.request("POST", "/score", '{"sleep": 0}')
    assert reply.status == 200
    assert reply.json()["pid"] != first
    assert server.process.poll() is None


def test_two_workers_serve_and_stop_cleanly(runtime):
    server = runtime("slow.py", "--workers", "2", env={"MLOPS_MAX_QUEUED_REQUESTS": "0"})
    # With no queue, a second concurrent request is only served if another worker takes it.
    replies = []
    threads = [
        threading.Thread(target=lambda: replies.append(server.request("POST", "/score", '{"sleep": 0.5}')))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status for r in replies)
    assert statuses[0] == 200
    assert server.stop() == exitcodes.OK


def test_worker_count_from_environment(runtime):
    server = runtime("slow.py", env={"WORKER_COUNT": "2"})
    pids = {server.request("POST", "/score", '{"sleep": 0}').json()["pid"] for _ in range(40)}
    assert len(pids) >= 1
    assert server.log.text.count("worker ready") == 2


def test_killed_worker_is_restarted(runtime):
    import os

    server = runtime("slow.py")
    pid = server.request("POST", "/score", '{"sleep": 0}').json()["pid"]
    os.kill(pid, signal.SIGKILL)
    assert server.log.wait_for("died \\(killed by SIGKILL\\); starting a new one", timeout=10)
    server.wait_ready()
    assert server.request("POST", "/score", '{"sleep": 0}').json()["pid"] != pid


def test_busy_port_exits_2(runtime):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AssertionError, match="exit 2"):
            runtime("echo.py", "--port", str(port))


def test_probe_port_serves_at_once_and_the_public_port_after_init(runtime, unused_port):
    server = runtime("slow.py", "--probe-port", str(unused_port), env={"TEST_INIT_SLEEP": "1.5"}, wait_ready=False)
    assert server.request("GET", "/", port=unused_port).status == 200
    assert server.request("GET", "/ready", port=unused_port).status == 503
    with pytest.raises(ConnectionRefusedError):  # bound (the port is held) but not accepting yet
        server.request("GET", "/")
    server.wait_ready(port=unused_port)
    assert server.log.wait_for("serving the public port", timeout=5)
    assert server.request("POST", "/score", '{"sleep": 0}').status == 200
    assert server.request("POST", "/score", '{"sleep": 0}', port=unused_port).status == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_hold_public_waits_for_the_go_live_signal(runtime, unused_port, workers):
    """--hold-public: ready on the probe port, yet no public traffic until SIGUSR1 (every worker)."""
    server = runtime("slow.py", "--probe-port", str(unused_port), "--hold-public", "60", "--workers", workers,
                     wait_ready=False)
    server.wait_ready(port=unused_port)
    assert server.request("POST", "/score", '{"sleep": 0}', port=unused_port).status == 200
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        server.request("GET", "/")
    server.process.send_signal(signal.SIGUSR1)
    assert server.log.wait_for("smoke test passed: joining the public port", timeout=5)
    deadline = time.monotonic() + 5
    while server.log.text.count("serving the public port") < int(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log.text.count("serving the public port") == int(workers)
    assert server.request("POST", "/score", '{"sleep": 0}').status == 200


def test_hold_public_gives_up_waiting_after_its_limit(runtime, unused_port):
    """No deployer (a container restarted by its engine): the public port is joined after the limit."""
    server = runtime("slow.py", "--probe-port", str(unused_port), "--hold-public", "1", wait_ready=False)
    server.wait_ready(port=unused_port)
    assert server.log.wait_for("serving the public port", timeout=10)
    assert server.request("POST", "/score", '{"sleep": 0}').status == 200


def test_hold_public_needs_a_probe_port(runtime):
    with pytest.raises(AssertionError, match="exit 2"):
        runtime("echo.py", "--hold-public", "5")


def test_reuse_port_lets_a_new_instance_take_over_without_a_gap(runtime, unused_port):
    old = runtime("slow.py", "--reuse-port")
    old_pid = old.request("POST", "/score", '{"sleep": 0}').json()["pid"]
    new = runtime(
        "slow.py", "--reuse-port", "--port", str(old.port), "--probe-port", str(unused_port), wait_ready=False
    )
    new.wait_ready(port=unused_port)
    new_pid = new.request("POST", "/score", '{"sleep": 0}', port=unused_port).json()["pid"]
    assert old.stop() == exitcodes.OK
    pids = {old.request("POST", "/score", '{"sleep": 0}').json()["pid"] for _ in range(10)}
    assert pids == {new_pid} and old_pid not in pids


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_workers_do_not_outlive_a_killed_supervisor(runtime):
    server = runtime("slow.py", "--workers", "2")
    pids = {server.request("POST", "/score", '{"sleep": 0}').json()["pid"] for _ in range(20)}
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids)
