"""Rollout routes in the runtime (issue 20): the stable version has the candidate answer a share of
the requests, per request (keep-alive clients too), copies a share to it, and never lets a client
see the candidate fail; the candidate stays off the public port while the route file names it.

Real runtimes on 127.0.0.1 talking real HTTP; the route file is written as the deployer writes it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from providers.runtime.routes import Share, parse
from tests.runtime.conftest import Server, free_port

SAMPLE = re.compile(r'^(\w+)\{version="([^"]*)"(?:,(code|le)="([^"]+)")?\} (\S+)$')


def write_route(path: Path, *, port: int, weight: float = 0.0, mirror: float = 0.0, phase: str = "canary",
                candidate: str = "cand", timeout_ms: int | None = None) -> None:
    data = {"rollout": {"candidate": candidate, "stable": "stable", "phase": phase, "weight": weight,
                        "mirror": mirror},
            "candidate": {"version": candidate, "host": "127.0.0.1", "port": port}}
    if timeout_ms is not None:
        data["candidate"]["scoring_timeout_ms"] = timeout_ms
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))   # NaN and Infinity as Python's json writes them (and reads them)
    os.replace(tmp, path)
    time.sleep(0.6)   # every worker looks at the file every 0.2 s


def samples(server: Server, probe: int) -> dict[tuple[str, str, str | None], float]:
    reply = server.request("GET", "/metrics", port=probe)
    assert reply.status == 200
    out = {}
    for line in reply.text.splitlines():
        found = SAMPLE.match(line)
        if found:
            name, version, _kind, key, value = found.groups()
            out[(name, version, key)] = float(value)
    return out


def start_pair(runtime, tmp_path: Path, *, candidate_env: dict[str, str] | None = None,
               stable_env: dict[str, str] | None = None,
               stable_args: tuple[str, ...] = ()) -> tuple[Server, int, Server, int, Path]:
    """(stable, its probe port, candidate, its probe port, the route file); the file names the
    candidate (weight 0) before the candidate starts, as the deployer does."""
    routes = tmp_path / "api.json"
    cprobe, sprobe = free_port(), free_port()
    write_route(routes, port=cprobe)
    candidate = runtime("whoami.py", "--probe-port", str(cprobe), "--revision", "cand", "--hold-public", "0.5",
                        "--routes", str(routes), env={"TEST_WHO": "cand", **(candidate_env or {})}, wait_ready=False)
    candidate.wait_ready(port=cprobe)
    stable = runtime("whoami.py", "--probe-port", str(sprobe), "--revision", "stable", "--routes", str(routes),
                     *stable_args, env={"TEST_WHO": "stable", **(stable_env or {})}, wait_ready=False)
    stable.wait_ready()
    return stable, sprobe, candidate, cprobe, routes


def keep_alive_answers(port: int, count: int) -> list[tuple[int, str]]:
    """``count`` requests on one reused HTTP/1.1 connection: (status, who answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(count):
            conn.request("POST", "/score", body=b"{}", headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
            out.append((reply.status, json.loads(body).get("who", "") if reply.status == 200 else ""))
    finally:
        conn.close()
    return out


def new_connection_answers(server: Server, count: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(count):
        reply = server.request("POST", "/score", "{}")
        out.append((reply.status, reply.json().get("who", "") if reply.status == 200 else ""))
    return out


def share(answers: list[tuple[int, str]]) -> float:
    return 100.0 * sum(1 for _s, who in answers if who == "cand") / len(answers)


@pytest.mark.parametrize("weight", [10, 50])
def test_keep_alive_and_new_connection_clients_get_the_weight(runtime, tmp_path, weight):
    stable, sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    assert keep_alive_answers(stable.port, 20) == [(200, "stable")] * 20   # weight 0: stable answers all
    write_route(routes, port=cprobe, weight=weight)
    kept = keep_alive_answers(stable.port, 200)
    fresh = new_connection_answers(stable, 200)
    assert {status for status, _ in kept + fresh} == {200}
    assert abs(share(kept) - weight) <= 5, share(kept)
    assert abs(share(fresh) - weight) <= 5, share(fresh)
    # Each version counts what it answered itself: forwarded requests are the candidate's.
    by_candidate = sum(1 for _s, who in kept + fresh if who == "cand")
    assert samples(candidate, cprobe)[("mlops_requests_total", "cand", "2xx")] == by_candidate
    assert samples(stable, sprobe)[("mlops_requests_total", "stable", "2xx")] == 20 + 400 - by_candidate
    assert samples(stable, sprobe)[("mlops_requests_total", "cand", "5xx")] == 0


def test_the_candidate_answers_unchanged_status_and_body(runtime, tmp_path):
    stable, _sprobe, _candidate, cprobe, routes = start_pair(runtime, tmp_path, candidate_env={"TEST_FAIL_EVERY": "1"})
    write_route(routes, port=cprobe, weight=100)
    reply = stable.request("POST", "/score", "{}", headers={"x-request-id": "abc"})
    assert reply.status == 500
    assert reply.json() == {"message": "An unexpected error occurred in scoring script. Check the logs for more info."}
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert reply.header_values("x-request-id") == ["abc"]
    assert len(reply.header_values("date")) == 1


def test_mirror_copies_to_the_candidate_and_clients_see_only_stable(runtime, tmp_path):
    stable, sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path, candidate_env={"TEST_FAIL_EVERY": "1"})
    write_route(routes, port=cprobe, mirror=20, phase="mirror")
    answers = keep_alive_answers(stable.port, 100) + new_connection_answers(stable, 100)
    assert answers == [(200, "stable")] * 200     # the candidate fails every request: nobody sees it
    time.sleep(0.5)                                 # the last copies are on their way
    got = samples(candidate, cprobe)
    assert got[("mlops_requests_total", "cand", "5xx")] == 40    # 20 % of 200, exactly
    assert samples(stable, sprobe)[("mlops_requests_total", "stable", "2xx")] == 200


def test_a_candidate_that_does_not_answer_is_retried_on_stable_and_counted(runtime, tmp_path):
    stable, sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    candidate.stop()
    write_route(routes, port=cprobe, weight=50)
    answers = keep_alive_answers(stable.port, 50) + new_connection_answers(stable, 50)
    assert answers == [(200, "stable")] * 100
    got = samples(stable, sprobe)
    assert got[("mlops_requests_total", "cand", "5xx")] == 50   # what analysis sees: the candidate failed
    assert got[("mlops_requests_total", "stable", "2xx")] == 100


def test_an_aborted_route_sends_nothing(runtime, tmp_path):
    stable, _sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    write_route(routes, port=cprobe, weight=100, mirror=100, phase="aborted")
    assert keep_alive_answers(stable.port, 20) == [(200, "stable")] * 20
    assert samples(candidate, cprobe)[("mlops_requests_total", "cand", "2xx")] == 0


def test_the_candidate_stays_off_the_public_port_while_named(runtime, tmp_path):
    _stable, _sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    time.sleep(2.0)   # four times its --hold-public
    with pytest.raises(ConnectionRefusedError):
        candidate.request("GET", "/ready", timeout=2)
    routes.unlink()   # a clear after an interrupted abort: still a candidate, never promoted
    time.sleep(2.0)   # twice the held candidate's recheck
    with pytest.raises(ConnectionRefusedError):
        candidate.request("GET", "/ready", timeout=2)


def test_an_aborted_candidate_that_still_runs_never_joins_the_public_port(runtime, tmp_path):
    # The abort was interrupted before it stopped the candidate: the file says aborted, no more.
    stable, _sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    write_route(routes, port=cprobe, weight=50, phase="aborted")
    time.sleep(2.5)   # past its --hold-public and two of the held candidate's rechecks
    with pytest.raises(ConnectionRefusedError):
        candidate.request("GET", "/ready", timeout=2)
    assert keep_alive_answers(stable.port, 20) == [(200, "stable")] * 20
    assert samples(candidate, cprobe)[("mlops_requests_total", "cand", "2xx")] == 0


def test_a_runtime_the_file_names_a_stopped_candidate_at_start_joins_by_the_timer(runtime, tmp_path):
    # Only a runtime started as a running candidate waits for GO_LIVE; a version the file marks
    # stopped (a failed start, an abort) that starts again as a plain instance joins as usual.
    routes = tmp_path / "api.json"
    cprobe = free_port()
    data = {"rollout": {"candidate": "cand", "stable": "stable", "phase": "aborted", "weight": 0, "mirror": 0},
            "candidate": {"version": "cand", "host": "127.0.0.1", "port": cprobe, "stopped": True}}
    routes.write_text(json.dumps(data))
    plain = runtime("whoami.py", "--probe-port", str(cprobe), "--revision", "cand", "--hold-public", "0.5",
                    "--routes", str(routes), env={"TEST_WHO": "cand"}, wait_ready=False)
    plain.wait_ready(timeout=10)


@pytest.mark.parametrize("phase", ["canary", "aborted", "removed"])
def test_go_live_joins_the_public_port_even_while_named(runtime, tmp_path, phase):
    import signal

    _stable, _sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    if phase == "removed":
        routes.unlink()
    elif phase != "canary":
        write_route(routes, port=cprobe, phase=phase)
    candidate.process.send_signal(signal.SIGUSR1)
    candidate.wait_ready(timeout=10)
    assert candidate.request("POST", "/score", "{}").json()["who"] == "cand"


def test_a_slow_candidate_answers_within_its_own_scoring_timeout(runtime, tmp_path):
    # The stable version's timeout is 100 ms (+5 s to forward); the candidate's is 30 s and it
    # takes 5.5 s: a valid answer, the candidate's, never a 5xx of the candidate retried on stable.
    stable, sprobe, candidate, cprobe, routes = start_pair(
        runtime, tmp_path, candidate_env={"TEST_SLEEP_S": "5.5", "SCORING_TIMEOUT_MS": "30000"},
        stable_env={"SCORING_TIMEOUT_MS": "100"})
    write_route(routes, port=cprobe, weight=100, timeout_ms=30000)
    reply = stable.request("POST", "/score", "{}", timeout=60)
    assert (reply.status, reply.json()["who"]) == (200, "cand")
    assert samples(stable, sprobe).get(("mlops_requests_total", "cand", "5xx"), 0) == 0


def test_without_the_candidates_timeout_the_stable_ones_applies(runtime, tmp_path):
    stable, sprobe, _candidate, cprobe, routes = start_pair(
        runtime, tmp_path, candidate_env={"TEST_SLEEP_S": "5.5", "SCORING_TIMEOUT_MS": "30000"},
        stable_env={"SCORING_TIMEOUT_MS": "100"})
    write_route(routes, port=cprobe, weight=100)   # a file written before entries carried it
    reply = stable.request("POST", "/score", "{}", timeout=60)
    assert (reply.status, reply.json()["who"]) == (200, "stable")   # retried here after 5.1 s
    assert samples(stable, sprobe)[("mlops_requests_total", "cand", "5xx")] == 1


@pytest.mark.parametrize("shares", [{"weight": float("nan"), "mirror": 10.0}, {"weight": 10.0, "mirror": float("nan")},
                                    {"weight": float("inf")}, {"weight": 10.0, "mirror": float("-inf")}])
def test_a_route_file_with_a_non_finite_share_routes_nothing(runtime, tmp_path, shares):
    # Unusable as a whole, as a file with a share that is no number: the stable version answers all.
    stable, _sprobe, candidate, cprobe, routes = start_pair(runtime, tmp_path)
    write_route(routes, port=cprobe, **shares)
    assert keep_alive_answers(stable.port, 20) == [(200, "stable")] * 20
    write_route(routes, port=cprobe, weight=100)   # a usable file again: it applies
    assert keep_alive_answers(stable.port, 5) == [(200, "cand")] * 5


@pytest.mark.parametrize("candidate", [
    {"port": 70000}, {"port": -1}, {"scoring_timeout_ms": 0}, {"scoring_timeout_ms": float("nan")},
    {"scoring_timeout_ms": "soon"}])
def test_parse_rejects_out_of_range_candidate_entries(candidate):
    data = {"rollout": {"candidate": "cand", "phase": "canary", "weight": 10},
            "candidate": {"version": "cand", "port": 1234, **candidate}}
    assert parse(data) is None
    assert parse(json.loads(json.dumps(data))) is None
    assert parse({**data, "candidate": {"version": "cand", "port": 1234}}) is not None


def test_share_is_exact_per_block_and_not_periodic():
    share_ = Share(50)
    picks = [share_.take() for _ in range(2000)]
    assert sum(picks) == 1000
    assert all(sum(picks[i:i + 20]) == 10 for i in range(0, 2000, 20))
    # Two clients taking turns would see 100 % and 0 % with a strict period; here both near 50 %.
    assert 400 < sum(picks[0::2]) < 600
    tenth = Share(12.5)
    assert sum(tenth.take() for _ in range(800)) == 100   # fractions carried over between blocks


def test_expect_100_continue_is_answered_once_by_stable_and_the_candidate_answers(runtime, tmp_path):
    stable, _sprobe, _candidate, cprobe, routes = start_pair(runtime, tmp_path)
    write_route(routes, port=cprobe, weight=100)
    with socket.create_connection(("127.0.0.1", stable.port), timeout=10) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        answer = b""
        while b'"who"' not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"cand"' in answer and b"100 Continue" not in answer
