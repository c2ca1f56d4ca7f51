"""Bake windows on the local target under load: a good, a failing and a slow candidate.

For each candidate: deploy a stable version, then drive the service with two clients all the way
through `mlops apply` — a keep-alive client (one HTTP/1.1 connection, reused) and a new-connection
client (one connection per request) — while apply updates it with `rollout: blue_green` and
analysis (interval 1s, failure_limit 2). Prints, per candidate: apply's exit code and wall time,
the intervals judged, requests answered by the candidate and by stable, 5xx answers, failed
connections (resets, refusals, timeouts), and who serves afterwards. The baseline in the same run
is the same update with `--no-wait` (no bake window: the bad candidate stays). All traffic goes
to 127.0.0.1.

    python benchmarks/rollout_bench.py [--hold 4]

Traffic weights (canary steps) are not set by the local target yet, so every candidate takes all
requests at once during its bake; the table says how much of the traffic it got before rollback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import make_project  # noqa: E402

MANIFEST = """\
version: 1
project: rolloutbench
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  echo-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    deploy: {{port: auto, auth: none}}
    rollout:
      strategy: blue_green
      steps: [{{weight: 100, hold: {hold}s}}]
      analysis: {{interval: 1s, min_requests: 20, max_error_rate: 5%, max_p99_ms: 150, failure_limit: 2}}
      progress_deadline: 60s
"""

SCORE = '''\
import json, time
count = 0

def init():
    pass

def run(raw_data):
    global count
    count += 1
    if {fail} and count % 5 == 0:
        raise RuntimeError("one in five fails")
    if {slow} and count % 20 == 0:
        time.sleep(0.3)
    else:
        time.sleep(0.002)
    return {{"version": "{name}"}}
'''

CANDIDATES = {"good": (False, False), "failing": (True, False), "slow": (False, True)}


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


class Client(threading.Thread):
    """Scores in a loop; ``keep_alive`` reuses one connection, else a new one per request."""

    def __init__(self, url: str, keep_alive: bool):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.keep_alive = keep_alive
        self.by_version: dict[str, int] = {}
        self.errors_5xx = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("POST", self.path, body=b'{"x": 1}', headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                body = reply.read()
                if reply.status >= 500:
                    self.errors_5xx += 1
                elif reply.status == 200:
                    version = json.loads(body)["version"]
                    self.by_version[version] = self.by_version.get(version, 0) + 1
                if not self.keep_alive or reply.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(0.005)


def scenario(base: Path, name: str, hold: float, no_wait: bool) -> dict:
    root = base / f"{name}{'-nowait' if no_wait else ''}"
    make_project(root, MANIFEST.format(hold=hold), score=SCORE.format(fail=False, slow=False, name="stable"))
    try:
        if mlops("apply", "--auto-approve", cwd=root).returncode != 0:
            raise SystemExit(f"{name}: the first apply failed")
        url = json.loads(mlops("status", "--json", cwd=root).stdout)["services"][0]["endpoint"]
        fail, slow = CANDIDATES[name]
        (root / "src" / "score.py").write_text(SCORE.format(fail=fail, slow=slow, name="candidate"))
        subprocess.run(["git", "commit", "-qam", "candidate"], cwd=root, check=True)
        clients = [Client(url, keep_alive=True), Client(url, keep_alive=False)]
        for c in clients:
            c.start()
        started = time.monotonic()
        applied = mlops("apply", "--auto-approve", *(["--no-wait"] if no_wait else []), cwd=root)
        took = time.monotonic() - started
        time.sleep(0.5)
        for c in clients:
            c.stop.set()
            c.join()
        after = Client(url, keep_alive=False)
        after.start()
        time.sleep(0.5)
        after.stop.set()
        after.join()
        judged = sum(1 for line in applied.stdout.splitlines() if re.search(r": analysis \d+: ", line))
        return {
            "candidate": name + (" (--no-wait)" if no_wait else ""),
            "exit": applied.returncode, "seconds": took, "intervals": judged,
            "by_candidate": sum(c.by_version.get("candidate", 0) for c in clients),
            "by_stable": sum(c.by_version.get("stable", 0) for c in clients),
            "5xx": sum(c.errors_5xx for c in clients), "failed_conn": sum(c.failed for c in clients),
            "serves_after": max(after.by_version, key=after.by_version.get) if after.by_version else "-",
            "reason": next((ln.split("ROLLED BACK to the previous version: ", 1)[1]
                            for ln in applied.stderr.splitlines() if "ROLLED BACK to" in ln), ""),
        }
    finally:
        mlops("destroy", "--auto-approve", cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=4.0, help="bake window in seconds (default 4)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        for name in CANDIDATES:
            rows.append(scenario(Path(tmp), name, args.hold, no_wait=False))
        rows.append(scenario(Path(tmp), "failing", args.hold, no_wait=True))
    head = f"{'candidate':<22}{'exit':>5}{'apply s':>9}{'judged':>8}{'cand.':>7}{'stable':>8}{'5xx':>6}" \
           f"{'failed conn':>13}  serves after"
    print(head)
    for r in rows:
        print(f"{r['candidate']:<22}{r['exit']:>5}{r['seconds']:>9.1f}{r['intervals']:>8}{r['by_candidate']:>7}"
              f"{r['by_stable']:>8}{r['5xx']:>6}{r['failed_conn']:>13}  {r['serves_after']}")
    for r in rows:
        if r["reason"]:
            print(f"{r['candidate']}: {r['reason']}")


if __name__ == "__main__":
    main()
