"""A plan probes each local service once, and the probes of hung services overlap (issue 14).

Four services are recorded as running (this test process stands in for them) on ports where a
listener accepts and never answers. Reading the project's live state (the target's own read plus
the orphan search every plan runs) must connect to each port exactly once, and every probe must
have started before the first one gave up: a hung service costs one probe timeout, not one each.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from support import project_data

from planner.project import Project
from providers.local import processes

SERVICES = 4


class Hung:
    """A listener that accepts, says nothing, and notes when each client connected and gave up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.closed: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass
            self.closed.append(time.monotonic())


def test_each_service_is_probed_once_and_hung_probes_overlap(tmp_path: Path) -> None:
    (tmp_path / "ml.yaml").write_text("version: 1\nproject: probes\ntargets:\n  box: {provider: local}\n")
    state = project_data(tmp_path) / "local"
    state.mkdir(parents=True)
    me, started = os.getpid(), processes.start_id(os.getpid())
    hung = [Hung() for _ in range(SERVICES)]
    for i, server in enumerate(hung):
        (state / f"svc{i}.json").write_text(json.dumps({
            "name": f"svc{i}", "target": "box", "instance": f"i{i}", "pid": me, "start_id": started,
            "port": server.port, "started": time.time() - 3600, "fingerprint": "x",
            "spec": {"deploy": {"auth": "none", "startup_timeout_s": 1}}}))
    project = Project.load(tmp_path / "ml.yaml")
    live = project.live_state().resources
    assert sorted(a.name for a in live) == [f"svc{i}" for i in range(SERVICES)]
    assert {r.status for r in live.values()} == {"Unhealthy"}
    deadline = time.monotonic() + 5
    while sum(len(s.closed) for s in hung) < SERVICES and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [len(s.accepted) for s in hung] == [1] * SERVICES, "one probe per service per plan"
    first_give_up = min(t for s in hung for t in s.closed)
    assert max(t for s in hung for t in s.accepted) < first_give_up, "the probes run side by side"
